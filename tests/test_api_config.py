"""The `api` config section: listen forms, loopback-or-token, the unix socket mode and group."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.config import ConfigError, load_api_config, parse_config

HEAD = "version: 1\nproject: p\nservices: {web: {image: x}}\n"


def problems(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, base_dir=tmp_path)
    return [str(p) for p in exc.value.problems]


def test_unix_socket_mode_and_group(tmp_path: Path) -> None:
    api = parse_config(
        HEAD + "api: {listen: 'unix:///run/x/api.sock', socket_mode: '0640', socket_group: adm}\n",
        base_dir=tmp_path,
    ).api
    assert api.unix_path == Path("/run/x/api.sock")
    assert api.socket_mode == 0o640 and api.socket_group == "adm"
    unquoted = parse_config(
        HEAD + "api: {listen: 'unix:///s', socket_mode: 0660, socket_group: 123}\n",
        base_dir=tmp_path,
    ).api
    assert unquoted.socket_mode == 0o660 and unquoted.socket_group == "123"
    default = parse_config(HEAD + "api: {listen: 'unix:///s'}\n", base_dir=tmp_path).api
    assert default.socket_mode == 0o660 and default.socket_group is None


def test_bad_socket_mode_and_tcp_only_keys(tmp_path: Path) -> None:
    found = problems(HEAD + "api: {listen: 'unix:///s', socket_mode: '999'}\n", tmp_path)
    assert found == ["line 4: api.socket_mode: invalid mode '999' (use an octal mode such as 0660)"]
    found = problems(HEAD + "api: {listen: '127.0.0.1:9', socket_group: adm}\n", tmp_path)
    assert found == ["line 4: api.socket_group: applies only to a unix:///path listen address"]


@pytest.mark.parametrize("listen", ["0.0.0.0:9180", "192.168.1.5:9180", "vpn.example:9180"])
def test_non_loopback_listen_needs_a_token_file(tmp_path: Path, listen: str) -> None:
    found = problems(HEAD + f"api: {{listen: '{listen}'}}\n", tmp_path)
    assert found == [
        f"line 4: api.listen: '{listen}' is not a loopback address: set api.token_file as well"
    ]
    (tmp_path / "tok").write_text("a-token-of-16-chars-or-more\n")
    (tmp_path / "tok").chmod(0o600)
    api = parse_config(
        HEAD + f"api: {{listen: '{listen}', token_file: tok}}\n", base_dir=tmp_path
    ).api
    assert api.token_file == tmp_path / "tok" and not api.loopback


@pytest.mark.parametrize("listen", ["127.0.0.1:9180", "localhost:1", "[::1]:9180", "127.0.0.2:80"])
def test_loopback_listen_needs_no_token(tmp_path: Path, listen: str) -> None:
    api = parse_config(HEAD + f"api: {{listen: '{listen}'}}\n", base_dir=tmp_path).api
    assert api.loopback and api.token_file is None


def test_cli_reads_only_the_api_section(tmp_path: Path) -> None:
    # The operator running `status` may not be able to read the stack's secret files.
    path = tmp_path / "supervisor.yaml"
    path.write_text(
        HEAD
        + "secrets: {db: {file: /nonexistent/secret}}\n"
        + "api: {listen: 'unix:///run/o/api.sock', token_file: t}\n"
    )
    api = load_api_config(path)
    assert api.listen == "unix:///run/o/api.sock" and api.token_file == tmp_path / "t"
    path.write_text(HEAD + "api: {listen: nope}\n")
    with pytest.raises(ConfigError, match="invalid address 'nope'"):
        load_api_config(path)


def test_event_history_length(tmp_path: Path) -> None:
    assert parse_config(HEAD, base_dir=tmp_path).api.events_keep == 1000
    kept = parse_config(HEAD + "api: {events: {keep: 50}}\n", base_dir=tmp_path).api
    assert kept.events_keep == 50


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ("{keep: 0}", "api.events.keep: must be between 1 and 100000, got 0"),
        ("{keep: many}", "api.events.keep: expected an integer, got a string"),
        ("{size: 5}", "api.events.size: unknown key"),
    ],
)
def test_bad_event_history_length(tmp_path: Path, events: str, message: str) -> None:
    found = problems(HEAD + f"api: {{events: {events}}}\n", tmp_path)
    assert len(found) == 1 and message in found[0], found
