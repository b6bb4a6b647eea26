"""Fuzzing the config parser and the Compose importer (issue 11): whatever the file holds,
`check` and `import-compose` exit 0 or 78, never with a traceback, and every problem they print
is located (the file, and a key path or line where there is one)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor import cli, exit_codes
from supervisor.config import keys

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same examples every run: a CI failure reproduces locally
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_counter = itertools.count()

# The keys the parser knows (so fuzzed files get deep), plus some it must refuse.
KEYS = [
    *keys.TOP_KEYS,
    *keys.SERVICE_KEYS,
    *keys.TIMING_KEYS,
    *keys.PROBE_KEYS,
    *("policy", "backoff", "initial", "max", "limit", "count", "window", "signal", "listen"),
    *("token_file", "socket_mode", "allowed_hosts", "condition", "port", "path", "file"),
    *("healthcheck", "test", "build", "x-ext", "<<", "web", "db"),
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["10s", "0.000001ms", "9" * 400 + "s", "-1s", "1h", "80:80", "a:b:c", "/x"]),
    st.text(max_size=30),
)
trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children, max_size=5
        ),
    ),
    max_leaves=40,
)


def valid_config() -> dict[str, Any]:
    return {
        "version": 1,
        "project": "fuzz",
        "services": {
            "db": {"image": "x", "health": {"exec": ["true"]}},
            "web": {
                "image": "x",
                "ports": ["127.0.0.1:8080:80"],
                "depends_on": {"db": "healthy"},
                "health": {"http": {"port": 80}, "interval": "10s"},
            },
        },
    }


def replace_leaf(tree: Any, path: list[int], value: Any) -> Any:
    """`tree` with the node reached by following `path` (indexes, wrapped) set to `value`."""
    if not path or not isinstance(tree, dict | list) or not tree:
        return value
    if isinstance(tree, dict):
        key = list(tree)[path[0] % len(tree)]
        return {**tree, key: replace_leaf(tree[key], path[1:], value)}
    index = path[0] % len(tree)
    return [*tree[:index], replace_leaf(tree[index], path[1:], value), *tree[index + 1 :]]


def run(command: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(command)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def assert_clean_outcome(path: Path, code: int, output: str, heading: str) -> None:
    assert code in (0, exit_codes.EX_CONFIG), output
    assert "Traceback" not in output, output
    if code == exit_codes.EX_CONFIG:
        lines = output.splitlines()
        assert lines[0].startswith(f"{heading} {path}"), output
        problems = [line.strip() for line in lines[1:] if line.startswith("  ")]
        assert problems, output
        for problem in problems:
            # Located: the file (and line) or a key path ("services.x.image: ...").
            assert str(path) in problem or ": " in problem, problem


def fresh(tmp: Path, name: str, content: bytes) -> Path:
    path = tmp / f"{next(_counter)}-{name}"
    path.write_bytes(content)
    return path


@FUZZ
@given(content=st.binary(max_size=400))
@pytest.mark.slow
def test_check_survives_raw_bytes(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    path = fresh(tmp_path_factory.getbasetemp(), "raw.yaml", content)
    code, output = run(["check", "--config", str(path)], capsys)
    assert_clean_outcome(path, code, output, "invalid config")


@FUZZ
@given(tree=trees)
@pytest.mark.slow
def test_check_survives_structured_yaml(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str], tree: Any
) -> None:
    text = yaml.safe_dump({"version": 1, "project": "fuzz", "services": tree}, allow_unicode=True)
    path = fresh(tmp_path_factory.getbasetemp(), "tree.yaml", text.encode())
    code, output = run(["check", "--config", str(path)], capsys)
    assert_clean_outcome(path, code, output, "invalid config")


@FUZZ
@given(where=st.lists(st.integers(min_value=0, max_value=50), max_size=6), value=trees)
@pytest.mark.slow
def test_check_survives_one_bad_value_in_a_valid_config(
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
    where: list[int],
    value: Any,
) -> None:
    config = replace_leaf(valid_config(), where, value)
    text = yaml.safe_dump(config, allow_unicode=True)
    path = fresh(tmp_path_factory.getbasetemp(), "mutated.yaml", text.encode())
    code, output = run(["check", "--config", str(path)], capsys)
    assert_clean_outcome(path, code, output, "invalid config")


@FUZZ
@given(
    content=st.one_of(
        st.binary(max_size=300), trees.map(lambda t: yaml.safe_dump({"services": t}).encode())
    )
)
@pytest.mark.slow
def test_import_compose_survives_anything(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    folder = tmp_path_factory.getbasetemp() / f"compose-{next(_counter)}"
    folder.mkdir()
    path = fresh(folder, "compose.yaml", content)
    code, output = run(["import-compose", str(path), "-o", str(folder / "out.yaml")], capsys)
    assert_clean_outcome(path, code, output, "cannot import")
