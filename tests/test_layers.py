"""The package's import structure: no cycles, and no module imports one of a higher layer.

Every import counts, the ones inside functions too (a lazy import is still a dependency). The
layers, lowest first, are in `LAYERS`; the README's development section draws them.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from collections.abc import Iterator, Mapping, Set
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "supervisor"

# Lowest first. A module may import from its own layer and the ones before it.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    # Value types and leaf helpers that import nothing of the project.
    ("model", frozenset({"__init__", "model", "exit_codes", "logs", "local_token", "clock"})),
    ("config", frozenset({"config", "compose", "yaml_bounds", "yaml_source", "stack_file"})),
    # Pure decisions and translations over the config: no I/O, no engine.
    (
        "core",
        frozenset(
            {
                "graph",
                "service",
                "container_plan",
                "daemon_lifecycle",
                # What the engine reports (ContainerInfo, events), as plain values: no docker-py.
                "docker_types",
                "status",
                "state_board",
                "config_diff",
                "dependency_restarts",
                "update_plan",
                "update_schedule",
                "reload_queue",
                "engine_gate",
                "probe_beat",
                "engine_turns",
                "spec",
                "events",
                "kube_common",
                "kube_network",
                "kube_workloads",
                "kube_export",
            }
        ),
    ),
    # The outside world: the Docker Engine (the only users of docker-py), probes, file watching.
    # `runtime`: the protocols the supervision layer drives; the fakes stand in for them.
    ("engine", frozenset({"docker_api", "probes", "http_probe", "file_watch", "runtime"})),
    (
        "supervision",
        frozenset(
            {"runner", "runner_inputs", "shutdown_stop", "stack", "updates", "backups", "metrics"}
        ),
    ),
    ("daemon", frozenset({"daemon", "systemd"})),
    ("api", frozenset({"api", "openapi", "status_page"})),
    (
        "cli",
        frozenset(
            {
                "cli",
                "__main__",
                "client",
                "daemon_commands",
                "remote_commands",
                "watch_commands",
                "status_table",
                "kube_output",
            }
        ),
    ),
)
# A module family by name prefix (`api_guards`, `docker_events`, a `config/` package…).
PREFIXES = {"api_": "api", "docker_": "engine", "kube_": "core"}
# (importer, imported) pairs, by top-level module, allowed to go upward: each with its reason.
ALLOWED: dict[tuple[str, str], str] = {
    # The config refuses a dependency cycle with the graph's own check; the graph imports nothing.
    ("config", "graph"): "config validation uses DependencyGraph's cycle check",
}


def _allowed(importer: str, imported: str) -> bool:
    return (importer.split(".", maxsplit=1)[0], imported.split(".", maxsplit=1)[0]) in ALLOWED


RANK = {name: rank for rank, (name, _) in enumerate(LAYERS)}


def layer_of(module: str) -> str:
    """The layer of `module` (its first dotted part decides for a subpackage's modules)."""
    top = module.split(".", maxsplit=1)[0]
    for name, members in LAYERS:
        if top in members:
            return name
    for prefix, name in PREFIXES.items():
        if top.startswith(prefix):
            return name
    raise LookupError(f"supervisor.{module} has no layer: add it to LAYERS in {__file__}")


@functools.cache
def modules() -> dict[str, Path]:
    """Every module of the package by dotted name below `supervisor`."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if len(parts) > 1 and parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports_of(module: str, path: Path, known: set[str]) -> Iterator[str]:
    """The project modules `module` imports, wherever in the file the import is."""
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("supervisor."):
                    yield _known(alias.name.removeprefix("supervisor."), known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module == "supervisor" or (node.module or "").startswith("supervisor."):
                target = (node.module or "").removeprefix("supervisor").removeprefix(".")
            else:
                continue
            for alias in node.names:
                # `from supervisor import daemon_commands` imports a module, not a name.
                child = f"{target}.{alias.name}" if target else alias.name
                if child in known:
                    yield child
                elif target:
                    yield _known(target, known)


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _known(name: str, known: set[str]) -> str:
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


@functools.cache
def import_graph() -> dict[str, frozenset[str]]:
    found = modules()
    known = set(found)
    return {
        # Every module imports the package's `__init__` implicitly; it is no edge of interest.
        module: frozenset(imports_of(module, path, known)) - {"", module, "__init__"}
        for module, path in found.items()
    }


def find_cycle(graph: Mapping[str, Set[str]]) -> list[str] | None:
    """One import cycle as a path `[a, b, …, a]`, or None (iterative depth-first search)."""
    colour: dict[str, int] = dict.fromkeys(graph, 0)  # 0 unseen, 1 on the path, 2 done
    for root in sorted(graph):
        if colour[root]:
            continue
        path = [root]
        stack = [iter(sorted(graph[root]))]
        colour[root] = 1
        while stack:
            step = next(stack[-1], None)
            if step is None:
                colour[path.pop()] = 2
                stack.pop()
            elif colour.get(step) == 1 and not _allowed(path[-1], step):
                return [*path[path.index(step) :], step]
            elif colour.get(step) == 0:
                colour[step] = 1
                path.append(step)
                stack.append(iter(sorted(graph[step])))
    return None


# What the CLI module must not load when imported: every command pays for its imports before
# it runs, and `run`, `check` and `status` need none of these (each command imports its own).
NOT_LOADED = (
    "supervisor.compose",  # import-compose, or a Compose file given to run/check
    "supervisor.kube_export",  # export kubernetes
    "supervisor.config.schema",  # schema (pydantic)
    "supervisor.daemon",  # run and down
    "aiohttp",  # the API server and the probes
)


def test_importing_the_cli_loads_no_command_s_own_modules() -> None:
    code = "import sys, supervisor.cli; print(*sorted(sys.modules), sep='\\n')"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    unwanted = [m for m in loaded if any(m == n or m.startswith(f"{n}.") for n in NOT_LOADED)]
    assert unwanted == []


# What the daemon must not have loaded when it starts its first containers: the API server and
# the HTTP probes' client come in a worker thread meanwhile (see api_component).
NOT_LOADED_BEFORE_FIRST_START = ("aiohttp", "supervisor.api", "supervisor.http_probe")


def test_the_daemon_starts_containers_before_importing_the_api_server() -> None:
    code = "import sys, supervisor.daemon_commands; print(*sorted(sys.modules), sep='\\n')"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    unwanted = [
        m
        for m in loaded
        if any(m == n or m.startswith(f"{n}.") for n in NOT_LOADED_BEFORE_FIRST_START)
    ]
    assert unwanted == []
    assert "supervisor.docker_api" in loaded  # what the first start does need


def test_every_module_has_a_layer() -> None:
    for module in modules():
        layer_of(module)


@pytest.mark.slow
def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def test_no_module_imports_from_a_higher_layer() -> None:
    upward = [
        f"{importer} ({layer_of(importer)}) imports {imported} ({layer_of(imported)})"
        for importer, targets in sorted(import_graph().items())
        for imported in sorted(targets)
        if RANK[layer_of(imported)] > RANK[layer_of(importer)] and not _allowed(importer, imported)
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_only_the_engine_family_imports_docker() -> None:
    users = set()
    for module, path in modules().items():
        for node in ast.walk(_tree(path)):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            if any(n == "docker" or n.startswith("docker.") for n in names):
                users.add(module)
    assert users and all(m.split(".")[0].startswith("docker_") for m in users), users


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": {"b"}, "b": set()}, None),
        ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": {"b"}}, ["b", "c", "b"]),
        ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, None),  # a diamond is no cycle
    ],
)
def test_find_cycle(graph: dict[str, set[str]], cycle: list[str] | None) -> None:
    assert find_cycle(graph) == cycle


def test_imports_are_resolved_from_every_form() -> None:
    graph = import_graph()
    assert "daemon_commands" in graph["cli"]  # `from supervisor import daemon_commands`
    assert "model" in graph["status"]  # `from supervisor.model import …`
