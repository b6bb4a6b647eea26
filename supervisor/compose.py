"""Docker Compose file -> ovpn-supervisor config, with a report of what the conversion did.

Handles the subset of the Compose specification that the VPN Manager's files use and that
operators commonly add. Every other key is reported by name: an error, or with `lenient` a
warning saying it was dropped; nothing is dropped without a note. A top-level
`x-ovpn-supervisor: {api, defaults}` carries our own settings (Compose ignores `x-` keys).
`${VAR}` interpolation reads the process environment first, then `.env` beside the Compose file
(or the given env file).

The output is our config as a plain dict (and YAML text), which `config.parse_config` then
validates; problems it finds are mapped back to the Compose file's lines where the key paths
agree.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from supervisor.config import (
    PROJECT_RE,
    ConfigError,
    ConfigProblem,
    StackConfig,
    format_path,
    load_config,
    parse_config,
    parse_duration,
    parse_env_file,
)
from supervisor.yaml_bounds import compose_bounded, describe_yaml_error, load_bounded

__all__ = [
    "ComposeImport",
    "ImportNote",
    "InterpolationError",
    "convert_compose",
    "interpolate",
    "load_compose",
    "load_stack",
    "looks_like_compose",
    "read_dotenv",
]

KeyPath = tuple[str | int, ...]
Level = Literal["info", "warning", "error"]

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0")
_CONDITIONS = {
    "service_started": "started",
    "service_healthy": "healthy",
    "service_completed_successfully": "completed",
}
_PULL = {
    "missing": "missing",
    "if_not_present": "missing",
    "always": "always",
    "never": "never",
}
# Why common keys cannot be honoured, so the report says more than "unsupported".
_WHY = {
    "build": "the supervisor runs images: build and push (or `docker build -t`) it, then "
    "set `image:`",
    "container_name": "containers are always named <project>-<service>",
    "profiles": "every service in the config runs",
    "deploy": "single host, one container per service",
    "scale": "one container per service",
    "extends": "inline the extended service",
    "links": "services reach each other by name on shared networks",
    "network_mode": "services join the project's networks",
    "configs": "use a read-only bind mount or a secret",
    "include": "merge the included files first (`docker compose config`)",
}
# A top-level extension key (Compose ignores x-*) for settings Compose has no words for.
OWN_EXTENSION = "x-ovpn-supervisor"
# Mount mode flags that change nothing on a Linux host.
_NOOP_MOUNT_FLAGS = {"cached", "delegated", "consistent"}


# --------------------------------------------------------------------------- interpolation


class InterpolationError(ValueError):
    """A `${VAR:?message}` whose variable is unset, or a malformed `${...}` expression."""


def interpolate(
    text: str, env: Mapping[str, str], on_unset: Callable[[str], None] | None = None
) -> str:
    """Expand `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`,
    `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}` and `$$` like Compose does.

    `on_unset(name)` is told of each plain reference to an unset variable (which reads as "").
    """
    out, end = _expand(text, 0, env, on_unset, live=True, nested=False)
    assert end == len(text)
    return out


def _expand(
    text: str,
    pos: int,
    env: Mapping[str, str],
    on_unset: Callable[[str], None] | None,
    *,
    live: bool,
    nested: bool,
) -> tuple[str, int]:
    """Expand from `pos` to the end, or (nested) to the unmatched `}`; return text and end.

    As in Compose, a `$` not followed by a name, `{` or `$` is kept as written (`^REGEX$`,
    `$5`), and inside `${...}` literal braces pair up, so `${X:-{"a":1}}` ends at the last `}`.
    """
    out: list[str] = []
    depth = 0  # literal `{` awaiting their `}` inside a nested word
    while pos < len(text):
        char = text[pos]
        if nested and char == "}":
            if depth == 0:
                return "".join(out), pos
            depth -= 1
        elif nested and char == "{":
            depth += 1
        if char != "$":
            out.append(char)
            pos += 1
            continue
        following = text[pos + 1 : pos + 2]
        if following == "$":
            out.append("$")
            pos += 2
        elif following == "{":
            value, pos = _braced(text, pos + 2, env, on_unset, live=live)
            out.append(value)
        elif (match := _NAME_RE.match(text, pos + 1)) is not None:
            name = match.group()
            if live and name not in env and on_unset is not None:
                on_unset(name)
            out.append(env.get(name, ""))
            pos = match.end()
        else:
            out.append("$")
            pos += 1
    if nested:
        raise InterpolationError(f"unclosed '${{' in {text!r}")
    return "".join(out), pos


def _braced(
    text: str,
    pos: int,
    env: Mapping[str, str],
    on_unset: Callable[[str], None] | None,
    *,
    live: bool,
) -> tuple[str, int]:
    """`${...}` whose name starts at `pos`; returns the value and the index after `}`."""
    match = _NAME_RE.match(text, pos)
    if match is None:
        if "}" not in text[pos:]:
            raise InterpolationError(f"unclosed '${{' in {text!r}")
        raise InterpolationError(f"invalid variable name after '${{' in {text!r}")
    name, pos = match.group(), match.end()
    if text.startswith("}", pos):
        if live and name not in env and on_unset is not None:
            on_unset(name)
        return env.get(name, ""), pos + 1
    op = next((o for o in (":-", ":?", ":+", "-", "?", "+") if text.startswith(o, pos)), None)
    if op is None:
        what = "unclosed '${'" if pos == len(text) else f"invalid expression after '${{{name}'"
        raise InterpolationError(f"{what} in {text!r}")
    value = env.get(name)
    colon = op.startswith(":")
    is_set = value is not None and (value != "" or not colon)
    # Only the branch that is taken is evaluated, so an unused `${X:?...}` raises nothing.
    use_word = {"-": not is_set, "?": not is_set, "+": is_set}[op[-1]]
    word, end = _expand(text, pos + len(op), env, on_unset, live=live and use_word, nested=True)
    if not live:
        return "", end + 1
    if op[-1] == "?" and use_word:
        raise InterpolationError(
            f"required variable {name} is {'empty' if value == '' else 'not set'}"
            + (f": {word}" if word else "")
        )
    if op[-1] == "+":
        return (word if use_word else ""), end + 1
    return (word if use_word else (value or "")), end + 1


def read_dotenv(path: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """A Compose `.env` file: KEY=VALUE lines, `#` comments, `export `, quotes.

    Single-quoted values are literal; double-quoted and bare ones are interpolated from
    `environ` and the lines above. A bare value ends at " #" (an inline comment).
    """
    out: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        stripped = stripped.removeprefix("export ").lstrip()
        key, sep, value = stripped.partition("=")
        key = key.strip()
        if not sep or not _NAME_RE.fullmatch(key):
            # Never echo the line: it may hold a password (this reaches logs and the API).
            raise InterpolationError(f"{path}:{number}: expected KEY=VALUE (line not shown)")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            out[key] = value[1:-1]
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace("\\n", "\n").replace('\\"', '"')
        else:
            value = value.split(" #", 1)[0].rstrip()
        try:
            out[key] = interpolate(value, {**out, **environ})
        except InterpolationError as exc:
            # The message quotes the value, which may be a password: name the key only.
            raise InterpolationError(
                f"{path}:{number}: {key}: invalid '$' expression or required variable unset "
                "(value not shown; write '$$' for a literal '$')"
            ) from exc
    return out


# --------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True)
class ImportNote:
    """One thing the conversion did, dropped or refused, located in the Compose file."""

    level: Level
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line is not None else ""
        subject = f"{self.path}{where}: " if self.path else ""
        return f"{self.level}: {subject}{self.message}"


@dataclass(frozen=True)
class ComposeImport:
    """The converted config (a plain dict in our vocabulary) and the conversion report."""

    source: Path
    config: dict[str, Any]
    notes: tuple[ImportNote, ...]

    def yaml_text(self) -> str:
        """The config as YAML, headed by the report as comments for the operator."""
        head = [f"# Converted from {self.source} by `ovpn-supervisor import-compose`."]
        if self.notes:
            head.append("# Conversion notes:")
            head.extend(f"#   {note}" for note in self.notes)
        body = yaml.safe_dump(self.config, sort_keys=False, default_flow_style=False, width=100)
        return "\n".join(head) + "\n" + body


# --------------------------------------------------------------------------- detection


def looks_like_compose(data: object) -> bool:
    """A Compose file has `services` and lacks our `project` and `version: 1`."""
    return (
        isinstance(data, dict)
        and "services" in data
        and "project" not in data
        and data.get("version") != 1
    )


def load_stack(path: str | os.PathLike[str]) -> StackConfig:
    """Load our config, or a Compose file (detected) converted strictly with its `.env`."""
    source = Path(path).absolute()
    try:
        _, data = load_bounded(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        data = None  # load_config reports these with its own messages
    if looks_like_compose(data):
        return load_compose(source)[0]
    return load_config(source)


def load_compose(
    path: str | os.PathLike[str],
    *,
    env_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    lenient: bool = False,
    out_dir: Path | None = None,
) -> tuple[StackConfig, ComposeImport]:
    """Convert a Compose file and validate the result; every error names a Compose line."""
    result = convert_compose(
        path, env_file=env_file, environ=environ, lenient=lenient, out_dir=out_dir
    )
    base = out_dir or result.source.parent
    try:
        stack = parse_config(result.yaml_text(), base_dir=base)
    except ConfigError as exc:
        lines = _line_index(result.source)
        raise ConfigError(
            ConfigProblem(p.path, p.message, str(result.source), _nearest_line(lines, p.path))
            for p in exc.problems
        ) from exc
    return stack, result


def _nearest_line(lines: Mapping[str, int], path: str) -> int | None:
    """The line of `path` in the Compose file, else of its nearest ancestor found there."""
    while path:
        if path in lines:
            return lines[path]
        path = re.sub(r"(\[\d+\]|\.[^.\[]*)$", "", path)
    return None


def _line_index(source: Path) -> dict[str, int]:
    try:
        root = compose_bounded(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    lines: dict[KeyPath, int] = {}
    if root is not None:
        _index(root, (), lines, {}, set())
    return {format_path(k): v for k, v in lines.items()}


def _index(
    node: yaml.Node,
    path: KeyPath,
    lines: dict[KeyPath, int],
    raw: dict[KeyPath, str],
    active: set[int],
) -> None:
    """Each node's line and each scalar's text as written (so `22:22` is not base 60)."""
    if id(node) in active:
        return
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.ScalarNode):
        raw.setdefault(path, str(node.value))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index(item, (*path, index), lines, raw, active | {id(node)})
            if isinstance(item, yaml.ScalarNode):
                # Our config keys list-form names (depends_on: [db]) by name: find them too.
                lines.setdefault((*path, str(item.value)), item.start_mark.line + 1)
    elif isinstance(node, yaml.MappingNode):
        merged: list[yaml.Node] = []
        for key, value in node.value:
            if key.tag == "tag:yaml.org,2002:merge":
                merged.extend(value.value if isinstance(value, yaml.SequenceNode) else [value])
            elif isinstance(key, yaml.ScalarNode):
                lines[(*path, str(key.value))] = key.start_mark.line + 1
                _index(value, (*path, str(key.value)), lines, raw, active | {id(node)})
        # `<<: *anchor` keys sit at this path; explicit keys (indexed above) win.
        for source in merged:
            if isinstance(source, yaml.MappingNode):
                for key, value in source.value:
                    if isinstance(key, yaml.ScalarNode):
                        child = (*path, str(key.value))
                        _index(value, child, lines, raw, active | {id(node)})


# --------------------------------------------------------------------------- conversion


def convert_compose(
    path: str | os.PathLike[str],
    *,
    env_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    lenient: bool = False,
    out_dir: Path | None = None,
) -> ComposeImport:
    """Convert a Compose file; raise ConfigError listing every error (with its line).

    `environ` defaults to the process environment; `.env` beside the file is read unless
    `env_file` names another. Relative paths in the output are written relative to `out_dir`
    (default: the Compose file's folder), where the converted config is meant to live.
    """
    source = Path(path).absolute()
    environ = dict(os.environ if environ is None else environ)
    problems: list[ConfigProblem] = []
    lines: dict[KeyPath, int] = {}
    raw: dict[KeyPath, str] = {}
    try:
        text = source.read_text(encoding="utf-8")
        _, data = load_bounded(text, lambda node: _index(node, (), lines, raw, set()))
    except (OSError, UnicodeDecodeError) as exc:
        problem = ConfigProblem("", f"cannot read Compose file: {exc}", str(source))
        raise ConfigError([problem]) from exc
    except yaml.YAMLError as exc:
        message, line = describe_yaml_error(exc, text)
        raise ConfigError([ConfigProblem("", message, str(source), line)]) from exc
    dotenv = env_file if env_file is not None else source.parent / ".env"
    variables: dict[str, str] = {}
    if env_file is not None or dotenv.is_file():
        try:
            variables = read_dotenv(dotenv, environ)
        except OSError as exc:
            problems.append(ConfigProblem("", f"cannot read env file: {exc}", str(dotenv)))
        except (InterpolationError, UnicodeDecodeError) as exc:
            problems.append(ConfigProblem("", str(exc), str(dotenv)))
    variables.update(environ)  # the shell's environment wins over .env, as in Compose
    converter = _Converter(source, out_dir or source.parent, variables, lenient)
    converter.lines.update(lines)
    converter.raw.update(raw)
    config = converter.convert(data)
    problems.extend(
        ConfigProblem(n.path, n.message, str(source), n.line)
        for n in converter.notes
        if n.level == "error"
    )
    if problems:
        raise ConfigError(problems)
    return ComposeImport(source, config, tuple(converter.notes))


class _Converter:
    """One conversion: the Compose file's line index, variables, and the notes so far."""

    def __init__(self, source: Path, out_dir: Path, env: Mapping[str, str], lenient: bool) -> None:
        self.source = source
        self.out_dir = out_dir.absolute()
        self.env = env
        self.lenient = lenient
        self.lines: dict[KeyPath, int] = {}
        self.raw: dict[KeyPath, str] = {}
        self.notes: list[ImportNote] = []

    # ---------------------------------------------------------------- reporting

    def note(self, level: Level, path: KeyPath, message: str) -> None:
        line = None
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                break
        self.notes.append(ImportNote(level, format_path(path), message, line))

    def error(self, path: KeyPath, message: str) -> None:
        self.note("error", path, message)

    def unsupported(self, path: KeyPath, why: str | None = None) -> None:
        """A key we cannot honour: an error, or with --lenient a warning that it was dropped."""
        key = str(path[-1])
        why = why or _WHY.get(key)
        reason = f" ({why})" if why else ""
        if self.lenient:
            self.note("warning", path, f"not supported, dropped{reason}")
        else:
            self.error(path, f"not supported{reason}; use --lenient to drop it with a warning")

    def check_keys(self, data: Mapping[str, Any], path: KeyPath, allowed: tuple[str, ...]) -> None:
        for key in data:
            if key not in allowed and not str(key).startswith("x-"):
                self.unsupported((*path, str(key)))

    # ---------------------------------------------------------------- values

    def text(self, value: object, path: KeyPath) -> str | None:
        """A scalar as written, interpolated; None (with an error) for anything else."""
        if isinstance(value, bool | int | float):
            return self.raw.get(path, str(value).lower() if isinstance(value, bool) else str(value))
        if not isinstance(value, str):
            self.error(path, f"expected a string, got {type(value).__name__}")
            return None
        try:
            return interpolate(value, self.env, lambda name: self._unset(name, path))
        except InterpolationError as exc:
            self.error(path, str(exc))
            return None

    def _unset(self, name: str, path: KeyPath) -> None:
        self.note("warning", path, f"variable {name} is not set; it reads as an empty string")

    def mapping(self, value: object, path: KeyPath) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping, got {type(value).__name__}")
            return {}
        return {str(k): v for k, v in value.items()}

    def seq(self, value: object, path: KeyPath) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(path, f"expected a list, got {type(value).__name__}")
            return []
        return value

    def words(self, value: object, path: KeyPath) -> str | list[str] | None:
        """command/entrypoint: a string (split later like Compose does) or a list of words."""
        if isinstance(value, list):
            out = [self.text(v, (*path, i)) for i, v in enumerate(value)]
            return [w for w in out if w is not None]
        return self.text(value, path)

    def duration(self, value: object, path: KeyPath) -> str | None:
        text = self.text(value, path)
        if text is None:
            return None
        try:
            parse_duration(text)
        except ValueError as exc:
            self.error(path, str(exc))
            return None
        return text

    def host_path(self, text: str) -> str:
        """A host path from the Compose file, as the output config (in out_dir) must spell it."""
        absolute = Path(os.path.normpath(self.source.parent / Path(text).expanduser()))
        try:
            relative = absolute.relative_to(self.out_dir)
        except ValueError:
            return str(absolute)
        return "./" + relative.as_posix() if str(relative) != "." else "."

    # ---------------------------------------------------------------- top level

    def convert(self, data: object) -> dict[str, Any]:
        top = self.mapping(data, ())
        self.check_keys(top, (), ("name", "version", "services", "networks", "volumes", "secrets"))
        if "version" in top:
            self.note("info", ("version",), "obsolete in Compose; ignored")
        project = self._project(top)
        out: dict[str, Any] = {"version": 1, "project": project}
        out.update(self._own_settings(top.get(OWN_EXTENSION)))
        services = self.mapping(top.get("services"), ("services",))
        if not services:
            self.error(("services",), "no services defined")
        networks = self._networks(top.get("networks"))
        volumes = self._volumes(top.get("volumes"))
        secrets = self._secrets(top.get("secrets"))
        if networks:
            out["networks"] = networks
        if volumes:
            # Keep Compose's Docker names, so the imported stack finds the existing data.
            for key, body in volumes.items():
                body.setdefault("name", f"{project}_{key}")
            out["volumes"] = volumes
            self.note(
                "info",
                ("volumes",),
                "volumes keep their Compose names ("
                + ", ".join(v["name"] for v in volumes.values())
                + "), so existing data is used as it is",
            )
        if secrets:
            out["secrets"] = secrets
        jobs = self._jobs(services)
        out["services"] = {
            name: self._service(name, self.mapping(body, ("services", name)), name in jobs)
            for name, body in services.items()
        }
        defaulted = [
            n
            for n, body in services.items()
            if isinstance(body, dict) and "restart" not in body and n not in jobs
        ]
        if defaulted:
            self.note(
                "info",
                ("services",),
                "no restart policy on " + ", ".join(defaulted) + ": the supervisor's default "
                "(on-failure, with backoff) applies where Compose's default is 'no'",
            )
        return out

    def _project(self, top: dict[str, Any]) -> str:
        if "name" in top:
            name = self.text(top["name"], ("name",)) or ""
        elif self.env.get("COMPOSE_PROJECT_NAME"):
            name = self.env["COMPOSE_PROJECT_NAME"]
        else:
            # Compose's rule: the folder's name, lowercased, other characters dropped.
            name = re.sub(r"[^a-z0-9_-]", "", self.source.parent.name.lower())
            self.note("info", (), f"no top-level name: project {name!r} from the folder name")
        if not PROJECT_RE.match(name):
            self.error(
                ("name",),
                f"invalid project name {name!r} (lowercase letters, digits, "
                "'_', '.', '-'; starting with a letter or digit)",
            )
        return name

    def _own_settings(self, value: object) -> dict[str, Any]:
        """`x-ovpn-supervisor: {api, defaults}`: our settings, which Compose itself ignores."""
        path: KeyPath = (OWN_EXTENSION,)
        data = self.mapping(value, path)
        for key in data:
            if key not in ("api", "defaults"):
                self.error((*path, key), "unknown key (api or defaults)")
        return {k: v for k, v in data.items() if k in ("api", "defaults")}

    def _networks(self, value: object) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, body in self.mapping(value, ("networks",)).items():
            path: KeyPath = ("networks", name)
            data = self.mapping(body, path)
            self.check_keys(data, path, ("driver", "internal", "name"))
            net: dict[str, Any] = {}
            if "internal" in data:
                net["internal"] = data["internal"]
            for key in ("driver", "name"):
                if key in data:
                    net[key] = self.text(data[key], (*path, key))
            out[name] = net
        return out

    def _volumes(self, value: object) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, body in self.mapping(value, ("volumes",)).items():
            path: KeyPath = ("volumes", name)
            data = self.mapping(body, path)
            self.check_keys(data, path, ("driver", "name"))
            driver = self.text(data["driver"], (*path, "driver")) if "driver" in data else None
            out[name] = {"driver": driver} if driver else {}
            if "name" in data:
                out[name]["name"] = self.text(data["name"], (*path, "name"))
        return out

    def _secrets(self, value: object) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, body in self.mapping(value, ("secrets",)).items():
            path: KeyPath = ("secrets", name)
            data = self.mapping(body, path)
            self.check_keys(data, path, ("file",))
            if "file" not in data:
                if "environment" in data or "external" in data:
                    continue  # already reported as unsupported
                self.error(path, "needs `file:` (only file-backed secrets are supported)")
                continue
            file = self.text(data["file"], (*path, "file"))
            if file:
                out[name] = {"file": self.host_path(file)}
        return out

    def _jobs(self, services: dict[str, Any]) -> set[str]:
        """Services others wait on with service_completed_successfully: they become jobs."""
        jobs: set[str] = set()
        for name, body in services.items():
            deps = body.get("depends_on") if isinstance(body, dict) else None
            if not isinstance(deps, dict):
                continue
            for target, dep in deps.items():
                if (
                    isinstance(dep, dict)
                    and dep.get("condition") == "service_completed_successfully"
                ):
                    target_body = services.get(target)
                    restart = target_body.get("restart") if isinstance(target_body, dict) else None
                    if restart in ("always", "unless-stopped"):
                        self.error(
                            ("services", str(target), "restart"),
                            f"'{restart}' on a service that {name} waits on with "
                            'service_completed_successfully (a one-shot job; use "no" or '
                            "on-failure)",
                        )
                    jobs.add(str(target))
        return jobs

    # ---------------------------------------------------------------- services

    _SERVICE_KEYS = (
        "image", "build", "command", "entrypoint", "environment", "env_file", "volumes", "networks",
        "ports", "expose", "user", "working_dir", "labels", "restart", "depends_on",
        "healthcheck", "stop_signal", "stop_grace_period", "secrets", "pull_policy",
    )  # fmt: skip

    def _service(self, name: str, data: dict[str, Any], is_job: bool) -> dict[str, Any]:
        path: KeyPath = ("services", name)
        self.check_keys(data, path, self._SERVICE_KEYS)
        out: dict[str, Any] = {}
        if "image" in data:
            out["image"] = image = self.text(data["image"], (*path, "image"))
            if "build" in data:
                self.note(
                    "warning",
                    (*path, "build"),
                    f"ignored: the image {image} is run as it is (build it beforehand, "
                    "e.g. with `docker compose build`)",
                )
        elif "build" in data:
            self.error((*path, "build"), f"{_WHY['build']} (no image given)")
        else:
            self.error((*path, "image"), "missing (the supervisor runs images)")
        if is_job:
            out["type"] = "job"
            self.note("info", path, "becomes a job: others wait for it to complete")
        readers: dict[str, tuple[str, Callable[[Any, KeyPath], Any]]] = {
            "command": ("command", self.words),
            "entrypoint": ("entrypoint", self.words),
            "environment": ("environment", self._environment),
            "env_file": ("env_file", self._env_files),
            "volumes": ("volumes", self._mounts),
            "networks": ("networks", self._service_networks),
            "ports": ("ports", self._ports),
            "user": ("user", self.text),
            "working_dir": ("working_dir", self.text),
            "labels": ("labels", self._labels),
            "depends_on": ("depends_on", self._depends_on),
            "restart": ("restart", self._restart),
            "secrets": ("secrets", self._service_secrets),
            "pull_policy": ("pull", self._pull),
        }
        for key, (target, read) in readers.items():
            if data.get(key) is not None:
                value = read(data[key], (*path, key))
                if value is not None:
                    out[target] = value
        if out.get("env_file"):
            pinned = self._env_file_differences(
                out["env_file"], (*path, "env_file"), out.get("environment", {})
            )
            if pinned:
                out["environment"] = {**pinned, **out.get("environment", {})}
        if data.get("expose") is not None:
            self._expose(data["expose"], (*path, "expose"))
        if data.get("healthcheck") is not None:
            health = self._health(data["healthcheck"], (*path, "healthcheck"))
            if health is not None and is_job:
                self.note(
                    "info", (*path, "healthcheck"), "dropped: a job's exit code is its result"
                )
            elif health is not None:
                out["health"] = health
        stop: dict[str, Any] = {}
        if data.get("stop_signal") is not None:
            stop["signal"] = self.text(data["stop_signal"], (*path, "stop_signal"))
        if data.get("stop_grace_period") is not None:
            stop["timeout"] = self.duration(data["stop_grace_period"], (*path, "stop_grace_period"))
        if stop:
            out["stop"] = stop
        return out

    def _key_values(self, value: object, path: KeyPath, *, passthrough: bool) -> dict[str, str]:
        """A map or a KEY=VALUE list; a bare KEY (passthrough) takes the variable's value."""
        pairs: list[tuple[str, object, KeyPath]] = []
        if isinstance(value, list):
            for index, item in enumerate(value):
                if not isinstance(item, str):
                    self.error((*path, index), f"expected 'KEY=VALUE', got {item!r}")
                    continue
                key, sep, text = item.partition("=")
                pairs.append((key, text if sep else None, (*path, index)))
        else:
            pairs = [(k, v, (*path, k)) for k, v in self.mapping(value, path).items()]
        out: dict[str, str] = {}
        for key, item, item_path in pairs:
            if item is None and passthrough:
                if key in self.env:
                    out[key] = self.env[key]
                else:
                    self.note("warning", item_path, f"{key} is not set here; left out")
                continue
            value = self.text(item, item_path) if item is not None else ""
            if value is not None:
                out[key] = value
        return out

    def _environment(self, value: object, path: KeyPath) -> dict[str, str]:
        return self._key_values(value, path, passthrough=True)

    def _labels(self, value: object, path: KeyPath) -> dict[str, str]:
        return self._key_values(value, path, passthrough=False)

    def _pull(self, value: object, path: KeyPath) -> str | None:
        policy = self.text(value, path)
        if policy in _PULL:
            return _PULL[policy]
        if policy is not None:
            self.unsupported(path, f"{policy!r}; the supervisor knows missing, always and never")
        return None

    def _expose(self, value: object, path: KeyPath) -> None:
        ports = [self.text(p, (*path, i)) for i, p in enumerate(self.seq(value, path))]
        self.note(
            "info",
            path,
            f"{', '.join(p for p in ports if p)} not carried over: exposed-only ports need "
            "no publishing; services on a shared network reach each other's ports",
        )

    def _env_files(self, value: object, path: KeyPath) -> list[str]:
        items = [value] if isinstance(value, str) else self.seq(value, path)
        out: list[str] = []
        for index, item in enumerate(items):
            item_path = path if isinstance(value, str) else (*path, index)
            required = True
            if isinstance(item, dict):
                self.check_keys(item, item_path, ("path", "required"))
                required = item.get("required", True) is not False
            text = self.text(item.get("path") if isinstance(item, dict) else item, item_path)
            if not text:
                continue
            file = self.host_path(text)
            if not required and not (self.out_dir / file).exists():
                self.note("info", item_path, f"optional env file {text} is absent; left out")
                continue
            out.append(file)
        return out

    def _env_file_differences(
        self, files: list[str], path: KeyPath, explicit: Mapping[str, str]
    ) -> dict[str, str]:
        """Variables Compose reads differently from our verbatim env-file reader, with
        Compose's value: `${VAR:-default}` expanded, inline comments and escapes.

        Written into `environment` (which wins over env files), so the container gets what
        Compose would give it; `$(cat …)` and other text without a variable stay as written.
        """
        compose_values: dict[str, str] = {}
        verbatim: dict[str, str] = {}
        for file in files:
            full = self.out_dir / file
            try:
                text = full.read_text(encoding="utf-8")
                compose_values.update(read_dotenv(full, self.env))
            except (OSError, UnicodeDecodeError):
                continue  # validation reports an unreadable env file with its path
            except InterpolationError as exc:
                self.error(path, str(exc))
                continue
            verbatim.update(parse_env_file(text)[0])
        pinned = {
            key: value
            for key, value in compose_values.items()
            if verbatim.get(key) != value and key not in explicit
        }
        if pinned:
            self.note(
                "info",
                path,
                f"{', '.join(pinned)} set in environment to the value Compose expands from "
                "the env file (which is itself read verbatim, like `docker run --env-file`)",
            )
        return pinned

    def _mounts(self, value: object, path: KeyPath) -> list[Any]:
        out: list[Any] = []
        for index, item in enumerate(self.seq(value, path)):
            mount = self._mount(item, (*path, index))
            if mount is not None:
                out.append(mount)
        return out

    def _mount(self, item: object, path: KeyPath) -> str | dict[str, Any] | None:
        if isinstance(item, dict):
            data = self.mapping(item, path)
            self.check_keys(data, path, ("type", "source", "target", "read_only"))
            kind = self.text(data.get("type", "volume"), (*path, "type"))
            if kind not in ("volume", "bind"):
                self.unsupported((*path, "type"), f"{kind!r} mounts; volume and bind are")
                return None
            if "source" not in data or "target" not in data:
                self.error(path, "needs source and target (anonymous volumes are not supported)")
                return None
            source = self.text(data["source"], (*path, "source")) or ""
            target = self.text(data["target"], (*path, "target")) or ""
            read_only = data.get("read_only") is True
        else:
            text = self.text(item, path)
            if text is None:
                return None
            parts = text.split(":")
            if len(parts) == 1:
                self.unsupported(path, f"anonymous volume {text!r}; name it (NAME:{text})")
                return None
            if len(parts) > 3:
                self.error(path, f"expected SOURCE:TARGET[:MODE], got {text!r}")
                return None
            source, target = parts[0], parts[1]
            flags = set(parts[2].split(",")) if len(parts) == 3 else set()
            read_only = "ro" in flags
            if flags & _NOOP_MOUNT_FLAGS:
                self.note("info", path, "cached/delegated/consistent do nothing on Linux; dropped")
            unknown = flags - _NOOP_MOUNT_FLAGS - {"ro", "rw"}
            if unknown:
                self.unsupported(path, f"mount option(s) {', '.join(sorted(unknown))}")
            kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
        if kind == "bind":
            source = self.host_path(source)
        if ":" in source or ":" in target:
            return {"type": kind, "source": source, "target": target, "read_only": read_only}
        return f"{source}:{target}" + (":ro" if read_only else "")

    def _service_networks(self, value: object, path: KeyPath) -> list[str]:
        if isinstance(value, list):
            return [t for i, n in enumerate(value) if (t := self.text(n, (*path, i)))]
        out: list[str] = []
        for name, body in self.mapping(value, path).items():
            self.check_keys(self.mapping(body, (*path, name)), (*path, name), ())
            out.append(name)
        return out

    def _ports(self, value: object, path: KeyPath) -> list[Any]:
        out: list[Any] = []
        for index, item in enumerate(self.seq(value, path)):
            item_path = (*path, index)
            if isinstance(item, dict):
                data = self.mapping(item, item_path)
                self.check_keys(data, item_path, ("target", "published", "host_ip", "protocol"))
                port: dict[str, Any] = {}
                for key in ("target", "published"):
                    if data.get(key) is not None:
                        text = self.text(data[key], (*item_path, key))
                        port[key] = int(text) if text and text.isdigit() else text
                for key in ("host_ip", "protocol"):
                    if data.get(key) is not None:
                        port[key] = self.text(data[key], (*item_path, key))
                out.append(port)
                continue
            text = self.text(item, item_path)
            if text is None:
                continue
            if re.search(r"\d-\d", text):
                self.unsupported(item_path, f"port range {text!r}; list each port")
                continue
            out.append(text)
        return out

    def _depends_on(self, value: object, path: KeyPath) -> dict[str, Any]:
        if isinstance(value, list):
            return {str(n): "started" for n in value}
        out: dict[str, Any] = {}
        for name, body in self.mapping(value, path).items():
            item_path = (*path, name)
            data = self.mapping(body, item_path)
            self.check_keys(data, item_path, ("condition", "restart", "required"))
            if data.get("required", True) is not True:
                self.unsupported((*item_path, "required"), "every dependency is required")
            condition = data.get("condition", "service_started")
            if condition not in _CONDITIONS:
                self.error(
                    (*item_path, "condition"),
                    f"invalid value {condition!r} (one of: {', '.join(_CONDITIONS)})",
                )
                continue
            if data.get("restart") is True:
                out[name] = {"condition": _CONDITIONS[condition], "restart": True}
            else:
                out[name] = _CONDITIONS[condition]
        return out

    def _restart(self, value: object, path: KeyPath) -> dict[str, Any] | None:
        # YAML 1.1 reads a bare `no` as false.
        text = "no" if value is False else self.text(value, path)
        if text in ("no", "always", "unless-stopped", "on-failure"):
            return {"policy": text}
        if text is not None and (match := re.fullmatch(r"on-failure:(\d+)", text)):
            self.note("info", path, f"at most {match.group(1)} restarts within 10m, then failed")
            return {"policy": "on-failure", "limit": {"count": int(match.group(1))}}
        if text is not None:
            self.error(path, f"invalid value {text!r} (no, always, on-failure[:N], unless-stopped)")
        return None

    def _service_secrets(self, value: object, path: KeyPath) -> list[str]:
        out: list[str] = []
        for index, item in enumerate(self.seq(value, path)):
            item_path = (*path, index)
            if isinstance(item, dict):
                data = self.mapping(item, item_path)
                self.check_keys(data, item_path, ("source", "target"))
                source = self.text(data.get("source"), (*item_path, "source"))
                target = data.get("target")
                if target not in (None, source, f"/run/secrets/{source}"):
                    self.unsupported(
                        (*item_path, "target"), "secrets are mounted at /run/secrets/<name>"
                    )
            else:
                source = self.text(item, item_path)
            if source:
                out.append(source)
        return out

    # ---------------------------------------------------------------- health

    def _health(self, value: object, path: KeyPath) -> dict[str, Any] | None:
        data = self.mapping(value, path)
        self.check_keys(
            data,
            path,
            ("test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"),
        )
        if data.get("disable") is True:
            self.note("info", path, "disabled: no health probe")
            return None
        test = data.get("test")
        if test is None:
            self.unsupported(
                (*path, "test"), "a healthcheck without test inherits the image's; write it out"
            )
            return None
        probe = self._probe(test, (*path, "test"))
        if probe is None:
            return None
        out: dict[str, Any] = dict(probe)
        for key in ("interval", "timeout", "start_period", "start_interval"):
            if data.get(key) is not None:
                out[key] = self.duration(data[key], (*path, key))
        if data.get("retries") is not None:
            out["retries"] = data["retries"]
        return out

    def _probe(self, test: object, path: KeyPath) -> dict[str, Any] | None:
        if isinstance(test, str):
            shell: str | None = self.text(test, path)
            argv: list[str] | None = None
        else:
            words = [self.text(w, (*path, i)) for i, w in enumerate(self.seq(test, path))]
            if not words or any(w is None for w in words):
                if not words:
                    self.error(path, "empty test")
                return None
            kind, rest = words[0], [w for w in words[1:] if w is not None]
            if kind == "NONE":
                self.note("info", path, "NONE: no health probe")
                return None
            if kind == "CMD-SHELL" and len(rest) == 1:
                shell, argv = rest[0], None
            elif kind == "CMD" and rest:
                shell, argv = None, rest
            else:
                self.error(path, "expected [CMD, ...], [CMD-SHELL, command], [NONE] or a string")
                return None
        if shell is not None:
            argv = _plain_words(shell)
        http = _http_fetch(argv)
        python, remark = _python_fetch(argv if shell is None else _python_words(shell))
        if python is not None:
            http = python
            if remark is not None:
                self.note("info", path, remark)
        elif remark is not None:
            self.note(
                "warning",
                path,
                f"a Python HTTP fetch kept as an exec probe ({remark}); the image must have "
                "Python, or write a native probe: http: {port: PORT, scheme: https, "
                "tls_verify: false}",
            )
        if http is not None:
            tls = ", certificate not verified" if http.get("tls_verify") is False else ""
            self.note(
                "info",
                path,
                f"HTTP fetch of the container's own port: native {http.get('scheme', 'http')} "
                f"probe (port {http['port']}, path {http['path']}{tls})",
            )
            return {"http": http}
        if shell is not None:
            return {"exec": ["/bin/sh", "-c", shell]}
        return {"exec": argv}


def _plain_words(shell: str) -> list[str] | None:
    """Words of a shell command with no shell syntax, ignoring a trailing `|| exit 1`."""
    shell = re.sub(r"\s*\|\|\s*exit\s+1\s*$", "", shell.strip())
    if re.search(r"[|&;<>()`$]", shell):
        return None
    try:
        return shlex.split(shell)
    except ValueError:
        return None


# Options that change nothing about what a fetch proves (quietness, output, retries, timeouts).
_CURL_FLAGS = {"-f", "--fail", "-s", "--silent", "-S", "--show-error", "-L", "--location", "-q"}
_CURL_WITH_VALUE = {"-o", "--output", "-m", "--max-time", "--connect-timeout", "--retry"}
_WGET_FLAGS = {"-q", "--quiet", "--spider", "-O-", "-qO-", "--no-verbose", "-nv"}
_WGET_WITH_VALUE = {"-O", "--output-document", "-T", "--timeout", "-t", "--tries"}
# Options that accept any certificate: the probe gets `tls_verify: false`.
_CURL_INSECURE = {"-k", "--insecure"}
_WGET_INSECURE = {"--no-check-certificate"}


def _http_fetch(argv: list[str] | None) -> dict[str, Any] | None:
    """`curl -f http(s)://localhost:PORT/path` or `wget -q -O- …` -> an http probe; else None."""
    if not argv or Path(argv[0]).name not in ("curl", "wget"):
        return None
    curl = Path(argv[0]).name == "curl"
    flags, with_value = (_CURL_FLAGS, _CURL_WITH_VALUE) if curl else (_WGET_FLAGS, _WGET_WITH_VALUE)
    urls: list[str] = []
    failing = not curl  # wget fails on HTTP errors by itself; curl only with -f
    insecure = False
    words = iter(argv[1:])
    for word in words:
        name = word.split("=", 1)[0]
        if word.startswith("-") and re.fullmatch(r"-[a-zA-Z]{2,}", word) and curl:
            letters = set(word[1:])  # combined short flags such as -fsSk
            if not letters <= {"f", "s", "S", "L", "q", "k"}:
                return None
            failing = failing or "f" in letters
            insecure = insecure or "k" in letters
        elif word in flags:
            failing = failing or word in ("-f", "--fail")
        elif word in (_CURL_INSECURE if curl else _WGET_INSECURE):
            insecure = True
        elif name in with_value:
            if "=" not in word and next(words, None) is None:
                return None
        elif not word.startswith("-"):
            urls.append(word)
        else:
            return None
    if len(urls) != 1 or not failing:
        return None
    return _local_url_probe(urls[0], insecure)


def _local_url_probe(url: str, insecure: bool) -> dict[str, Any] | None:
    """An http probe for a URL on the container itself (localhost), else None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.hostname not in _LOCAL_HOSTS:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    probe: dict[str, Any] = {"port": port, "path": path}
    if parts.scheme == "https":
        probe["scheme"] = "https"
        if insecure:
            probe["tls_verify"] = False
    return probe


# `python3 -c "…requests.get('https://localhost:8800/health', verify=False)…"` and the like.
_PYTHON_FETCH = re.compile(r"\b(?:requests|httpx)\.get\(|\burlopen\(")
_PYTHON_URL = re.compile(
    r"""(?P<f>f?)(?P<q>['"])(?P<url>[^'"\s]*://(?:localhost|127\.0\.0\.1|0\.0\.0\.0|\[::1\])"""
    r"""(?::\d+)?(?:/[^'"\s]*)?)(?P=q)"""
)
_PYTHON_INSECURE = re.compile(r"verify\s*=\s*False|_create_unverified_context|CERT_NONE")


def _python_words(shell: str) -> list[str] | None:
    """`python3 -c "CODE"` as a shell line -> its three words; None for anything else."""
    if "$" in shell or "`" in shell:
        return None  # the shell would expand these inside double quotes
    try:
        words = shlex.split(shell)
    except ValueError:
        return None
    return words if len(words) == 3 else None


def _python_fetch(argv: list[str] | None) -> tuple[dict[str, Any] | None, str | None]:
    """`python3 -c CODE` fetching one local URL -> (an http probe, a remark or None); a fetch
    that cannot be one -> (None, why not); anything else -> (None, None)."""
    if not argv or len(argv) != 3 or not re.fullmatch(r"python[0-9.]*", Path(argv[0]).name):
        return None, None
    code = argv[2]
    if argv[1] != "-c" or not _PYTHON_FETCH.search(code):
        return None, None
    urls = list(_PYTHON_URL.finditer(code))
    if len(urls) != 1:
        return None, "it fetches no single local URL"
    url = urls[0].group("url")
    if urls[0].group("f") and "{" in url:
        return None, f"its URL {url!r} is computed"
    probe = _local_url_probe(url, bool(_PYTHON_INSECURE.search(code)))
    if probe is None:
        return None, f"its URL {url!r} is not local"
    if "urlopen(" in code or "raise_for_status" in code:
        return probe, None
    # requests/httpx return any answer without raising: the fetch passed on a 503 too.
    return probe, "the native probe passes on 2xx only, where this fetch passed on any answer"
