"""Hostile config input (issue 11): secrets never echoed, YAML bombs and deep nesting refused,
names matched whole, durations bounded, weak socket and token settings refused, any reload
failure reported as a refused reload, and `check` never a traceback."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from test_systemd import make_notifier, reload, start_stack, status

from supervisor import cli, exit_codes
from supervisor.compose import InterpolationError, load_compose, read_dotenv
from supervisor.config import ConfigError, parse_config
from supervisor.docker_api import bind_list
from supervisor.local_token import create_token
from supervisor.service import State
from supervisor.spec import container_spec
from supervisor.yaml_bounds import MAX_BYTES

HEAD = "version: 1\nproject: ovpn\n"
SECRET = "hunter2-do-not-print"


def problems(text: str, base_dir: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, base_dir=base_dir)
    return [str(p) for p in info.value.problems]


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["check", "--config", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# --------------------------------------------------------------------------- 1: secrets


@pytest.mark.parametrize("line", [SECRET, f"PASS WORD={SECRET}", f"{SECRET}: x", f"-x={SECRET}"])
def test_bad_env_file_line_is_reported_without_its_text(tmp_path: Path, line: str) -> None:
    (tmp_path / "app.env").write_text(f"# header\nOK=1\n{line}\n")
    text = HEAD + "services:\n  app: {image: x, env_file: app.env}\n"
    [found] = problems(text, tmp_path)
    assert SECRET not in found
    assert found.startswith(f"{tmp_path / 'app.env'}:3: services.app.env_file: invalid line")


# (A lone `$`, as in `PW=secret$`, is kept literally, as Compose keeps it: not an error.)
@pytest.mark.parametrize("line", [SECRET, "PW=${UNSET_VAR:?" + SECRET + "}", "PW=${" + SECRET])
def test_bad_dotenv_line_is_reported_without_its_text(tmp_path: Path, line: str) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"A=1\n{line}\n")
    with pytest.raises(InterpolationError) as info:
        read_dotenv(dotenv, {})
    assert SECRET not in str(info.value)
    assert str(info.value).startswith(f"{dotenv}:2: ")


# --------------------------------------------------------------------------- 3: YAML bombs


def billion_laughs(levels: int) -> str:
    """Each level a list of ten aliases of the one before: 10**levels nodes when expanded."""
    lines = ["a0: &a0 [lol]"]
    for level in range(1, levels + 1):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return HEAD + "\n".join(lines) + f"\nservices: {{app: {{image: x, command: *a{levels}}}}}\n"


@pytest.mark.parametrize("levels", [6, 9])
def test_alias_bomb_is_refused_with_a_clear_error(tmp_path: Path, levels: int) -> None:
    text = billion_laughs(levels)
    assert len(text) < 700
    [found] = problems(text, tmp_path)
    assert "expands to more than 100000 nodes through aliases" in found


def test_alias_bomb_in_a_compose_file_is_refused(tmp_path: Path) -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text(billion_laughs(9).replace(HEAD, ""))
    with pytest.raises(ConfigError, match="expands to more than"):
        load_compose(compose, environ={})


@pytest.mark.slow
def test_deep_nesting_and_recursive_alias_and_size_are_refused(tmp_path: Path) -> None:
    deep = HEAD + "x-deep: " + "[" * 5000 + "]" * 5000 + "\nservices: {}\n"
    [found] = problems(deep, tmp_path)
    assert "nested more than 64 levels deep" in found
    [found] = problems(HEAD + "x: &r [*r]\nservices: {}\n", tmp_path)
    assert "recursive alias" in found
    big = HEAD + "services: {}\n" + "#" * MAX_BYTES
    [found] = problems(big, tmp_path)
    assert "larger than 1024 KiB" in found


def test_check_exits_78_with_a_reason_on_a_bomb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, text in (
        ("bomb.yaml", billion_laughs(9)),
        ("deep.yaml", HEAD + "services: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n"),
    ):
        path = tmp_path / name
        path.write_text(text)
        code, output = check(path, capsys)
        assert code == exit_codes.EX_CONFIG, output
        assert "Traceback" not in output and f"invalid config {path}" in output


def test_check_never_prints_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_path: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(cli, "load_stack", broken)
    code, output = check(tmp_path / "x.yaml", capsys)
    assert code == exit_codes.EX_CONFIG
    assert "RecursionError: maximum recursion depth exceeded" in output
    assert "Traceback" not in output


def test_anchors_reused_a_few_times_still_work(tmp_path: Path) -> None:
    text = (
        HEAD
        + "services:\n  s0: {image: x, environment: &env {A: '1', B: '2'}}\n"
        + "".join(f"  s{i}: {{image: x, environment: *env}}\n" for i in range(1, 50))
    )
    stack = parse_config(text, base_dir=tmp_path)
    assert stack.services["s49"].environment == {"A": "1", "B": "2"}


# --------------------------------------------------------------------------- 4: reload


async def test_any_reload_failure_is_a_refused_reload_followed_by_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sd, supervisor, sent, _ = make_notifier(tmp_path)
    stack = start_stack(supervisor, status("db", State.HEALTHY), status("web", State.HEALTHY))
    stack.config = supervisor.config  # type: ignore[attr-defined]
    sd.refresh()
    before = supervisor.config

    def broken(_path: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr("supervisor.daemon.load_stack", broken)
    result = await reload(supervisor)
    assert not result.ok
    assert supervisor.last_reload is result
    assert result.errors == ("RecursionError: maximum recursion depth exceeded",)
    assert supervisor.config is before
    assert "RELOADING=1" in sent.sent[-2]
    assert sent.sent[-1].startswith("READY=1\nSTATUS=reload refused (")


async def test_deeply_nested_reload_is_refused_with_the_reason(tmp_path: Path) -> None:
    sd, supervisor, sent, _ = make_notifier(tmp_path)
    start_stack(supervisor, status("db", State.HEALTHY), status("web", State.HEALTHY))
    sd.refresh()
    supervisor.config_path.write_text(HEAD + "x: " + "[" * 5000 + "]" * 5000 + "\n")
    result = await reload(supervisor)
    assert not result.ok
    assert any("nested more than 64 levels deep" in e for e in result.errors)
    assert sent.sent[-1].startswith("READY=1\n")


# --------------------------------------------------------------------------- 5: mounts


def test_one_source_mounted_twice_stays_two_mounts(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("x")
    text = HEAD + textwrap.dedent(
        """
        secrets: {pw: {file: pw}}
        services:
          app:
            image: x
            secrets: [pw]
            volumes: ['./pw:/a:ro', './pw:/b:ro', 'data:/c', 'data:/d']
        volumes: {data: {}}
        """
    )
    stack = parse_config(text, base_dir=tmp_path)
    binds = bind_list(container_spec(stack, stack.services["app"]))
    pw = tmp_path / "pw"
    assert sorted(binds) == sorted(
        [
            "ovpn-data:/c:rw",
            "ovpn-data:/d:rw",
            f"{pw}:/a:ro",
            f"{pw}:/b:ro",
            f"{pw}:/run/secrets/pw:ro",
        ]
    )


# --------------------------------------------------------------------------- 6: names


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (HEAD.replace("ovpn", '"ovpn\\n"') + "services: {}\n", "project"),
        (HEAD + 'services: {"app\\n": {image: x}}\n', "services.app\n"),
        (HEAD + 'services: {}\nnetworks: {"n\\n": {}}\n', "networks.n\n"),
        (HEAD + 'services: {}\nvolumes: {v: {name: "v1\\n"}}\n', "volumes.v.name"),
    ],
)
def test_names_with_a_trailing_newline_are_refused(tmp_path: Path, text: str, where: str) -> None:
    found = problems(text, tmp_path)
    assert any(f": {where}: invalid" in p for p in found), found


# --------------------------------------------------------------------------- 7: durations


@pytest.mark.parametrize(
    ("keys", "value", "message"),
    [
        ("health: {exec: [x], interval: %s}", "9" * 400 + "s", "invalid duration"),
        ("health: {exec: [x], interval: %s}", "0.000001ms", "between 100ms and 24h"),
        ("health: {exec: [x], timeout: %s}", "2h", "between 100ms and 1h"),
        ("health: {exec: [x], start_interval: %s}", "1ms", "between 100ms and 1h"),
        ("health: {exec: [x], start_period: %s}", "25h", "between 0s and 24h"),
        ("restart: {backoff: {initial: %s}}", "0.000001ms", "between 10ms and 1h"),
        ("restart: {backoff: {max: %s}}", "1000000h", "between 10ms and 24h"),
        ("restart: {limit: {window: %s}}", "500ms", "between 1s and 168h"),
        ("restart: {reset_after: %s}", "169h", "between 1s and 168h"),
        ("stop: {timeout: %s}", "2h", "between 0s and 1h"),
    ],
)
def test_durations_out_of_range_are_config_errors(
    tmp_path: Path, keys: str, value: str, message: str
) -> None:
    text = HEAD + "services:\n  app: {image: x, " + keys % value + "}\n"
    [found] = problems(text, tmp_path)
    assert message in found and found.startswith("line 4: services.app.")


def test_startup_timeout_bounds(tmp_path: Path) -> None:
    [found] = problems(HEAD + "systemd: {startup_timeout: 500ms}\nservices: {}\n", tmp_path)
    assert "systemd.startup_timeout: must be between 1s and 24h, got '500ms'" in found


def test_durations_at_their_bounds_are_accepted(tmp_path: Path) -> None:
    text = HEAD + (
        "services:\n  app: {image: x, health: {exec: [x], interval: 100ms, timeout: 1h},"
        " restart: {backoff: {initial: 10ms, max: 24h}, reset_after: 168h},"
        " stop: {timeout: 0s}}\n"
    )
    app = parse_config(text, base_dir=tmp_path).services["app"]
    assert app.health is not None and app.health.interval == 0.1
    assert app.restart.backoff_max == 86400.0 and app.stop.timeout == 0.0


# --------------------------------------------------------------------------- 9: socket, token


def test_world_writable_socket_mode_is_refused(tmp_path: Path) -> None:
    found = problems(
        HEAD + "services: {}\napi: {listen: 'unix:///s', socket_mode: '0666'}\n", tmp_path
    )
    assert found == [
        "line 4: api.socket_mode: mode 0666 lets every local user control the daemon (use 0660)"
    ]


def token_problems(tmp_path: Path, content: str | None, mode: int = 0o600) -> list[str]:
    token = tmp_path / "token"
    if content is not None:
        token.write_text(content)
        token.chmod(mode)
    return problems(HEAD + "services: {}\napi: {token_file: token}\n", tmp_path)


def test_weak_or_missing_token_files_are_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    [missing] = token_problems(tmp_path, None)
    assert f"api.token_file: cannot read token file {str(token)!r}" in missing
    [short] = token_problems(tmp_path, "x\n")
    assert "is 1 characters long; use at least 16" in short
    [shared] = token_problems(tmp_path, "a" * 32, 0o640)
    assert "is open to group or others (mode 0640; chmod 600 it)" in shared
    token.chmod(0o600)
    assert parse_config(HEAD + "services: {}\napi: {token_file: token}\n", base_dir=tmp_path)


def test_check_fails_on_a_missing_token_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(HEAD + "services: {}\napi: {token_file: nope}\n")
    code, output = check(path, capsys)
    assert code == exit_codes.EX_CONFIG and "api.token_file: cannot read token file" in output


def test_generated_token_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "run" / "api-9180.token"
    target.parent.mkdir()
    target.with_suffix(".tmp").symlink_to(victim)
    token = create_token(target)
    assert victim.read_text() == "precious\n"
    assert target.read_text() == token + "\n" and not target.is_symlink()
    assert target.stat().st_mode & 0o777 == 0o600
