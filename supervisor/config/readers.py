"""The typed readers every section of the config is read with, and the problems they find.

Each reader takes a value and its key path, reports what is wrong (with the line the YAML
puts it on) and returns something usable, so one pass finds every problem.
"""

from __future__ import annotations

import difflib
import os
import shlex
import signal
from collections.abc import Callable, Iterable
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import yaml

from supervisor.config.durations import (
    DEFAULT_BOUNDS,
    DURATION_BOUNDS,
    parse_duration,
    show_duration,
)
from supervisor.config.keys import KEY_HINTS
from supervisor.config.problems import ConfigProblem, KeyPath, format_path, kind_of
from supervisor.yaml_bounds import describe_yaml_error
from supervisor.yaml_source import YamlDocument, read_yaml

__all__ = ["Readers"]

_T = TypeVar("_T")
_E = TypeVar("_E", bound=StrEnum)


class Readers:
    """One parse: the YAML's line index, the problems found so far, and the typed readers."""

    def __init__(self, source: Path | None, base_dir: Path) -> None:
        self.source = source
        self.file = str(source) if source is not None else None
        self.base_dir = base_dir
        self.problems: list[ConfigProblem] = []
        self.yaml = YamlDocument(None)
        self.raw = self.yaml.raw

    def problem(self, path: KeyPath, message: str, line: int | None = None) -> None:
        """A problem at `path`, on `line` or where the YAML puts `path` (or its parent)."""
        where = line if line is not None else self.yaml.line_of(path)
        self.problems.append(ConfigProblem(format_path(path), message, self.file, where))

    # ---------------------------------------------------------------- YAML

    def document(self, text: str) -> dict[str, Any] | None:
        """The YAML as a mapping, indexed by key path; None (with a problem) if it is not one."""
        try:
            document = read_yaml(text)
        except yaml.YAMLError as exc:
            message, line = describe_yaml_error(exc, text)
            self.problem((), message, line)
            return None
        if document is None:
            self.problem((), "empty config file")
            return None
        return self.use(document)

    def use(self, document: YamlDocument) -> dict[str, Any] | None:
        """Read from an already parsed document: its index, its duplicate keys as problems."""
        self.yaml, self.raw = document, document.raw
        for duplicate in document.duplicates:
            self.problem(
                duplicate.path,
                f"duplicate key (first defined at line {duplicate.first_line})",
                duplicate.line,
            )
        data = document.data
        if not isinstance(data, dict):
            self.problem((), f"the top level must be a mapping, got {kind_of(data)}")
            return None
        return data

    # ---------------------------------------------------------------- typed readers

    def keys(
        self,
        data: dict[str, Any],
        path: KeyPath,
        allowed: Iterable[str],
        required: Iterable[str] = (),
    ) -> None:
        """Report unknown keys (with a close match, if any) and missing required ones."""
        allowed = tuple(allowed)
        for key in data:
            if key in allowed:
                continue
            hint = KEY_HINTS.get(key) if isinstance(key, str) else None
            if hint is None:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = close[0] if close else None
            suffix = f" (did you mean '{hint}'?)" if hint else ""
            self.problem((*path, str(key)), f"unknown key{suffix}")
        for key in required:
            if key not in data:
                self.problem((*path, key), "missing required key")

    def mapping(self, value: object, path: KeyPath) -> dict[str, Any]:
        """A mapping with string keys; null reads as empty."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"expected a mapping, got {kind_of(value)}")
            return {}
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, str):
                out[key] = item
            else:
                self.problem((*path, str(key)), f"keys must be strings, got {kind_of(key)}")
        return out

    def seq(self, value: object, path: KeyPath) -> list[Any]:
        """A list; null reads as empty."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(path, f"expected a list, got {kind_of(value)}")
            return []
        return value

    def string(self, value: object, path: KeyPath, default: str = "") -> str:
        if isinstance(value, str):
            return value
        self.problem(path, f"expected a string, got {kind_of(value)}")
        return default

    def scalar_text(self, value: object, path: KeyPath) -> str | None:
        """A scalar as the text the operator wrote (so 0755 stays "0755"); null -> ""."""
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        if isinstance(value, bool | int | float):
            return self.raw.get(path, str(value))
        self.problem(path, f"expected a string, got {kind_of(value)}")
        return None

    def integer(
        self,
        value: object,
        path: KeyPath,
        default: int,
        low: int | None = None,
        high: int | None = None,
    ) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            self.problem(path, f"expected an integer, got {kind_of(value)}")
            return default
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            self.problem(path, f"must be {bounds}, got {value}")
            return default
        return value

    def boolean(self, value: object, path: KeyPath, default: bool = False) -> bool:
        if isinstance(value, bool):
            return value
        self.problem(path, f"expected true or false, got {kind_of(value)}")
        return default

    def duration(
        self, value: object, path: KeyPath, default: float, positive: bool = True
    ) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.problem(path, str(exc))
            return default
        if positive and seconds <= 0:
            self.problem(path, f"must be longer than 0, got {value!r}")
            return default
        # Too short makes a busy loop, too long overflows timers: each key has its range.
        low, high = DURATION_BOUNDS.get(tuple(str(p) for p in path[-2:]), DEFAULT_BOUNDS)
        if not low <= seconds <= high:
            self.problem(
                path,
                f"must be between {show_duration(low)} and {show_duration(high)}, got {value!r}",
            )
            return default
        return seconds

    def choice(self, value: object, path: KeyPath, enum: type[_E], default: _E) -> _E:
        # YAML 1.1 reads a bare `no` as false; restart `policy: no` still means "no".
        if value is False and "no" in enum._value2member_map_:
            return enum("no")
        if isinstance(value, str) and value in enum._value2member_map_:
            return enum(value)
        accepted = ", ".join(m.value for m in enum)
        self.problem(path, f"invalid value {value!r} (one of: {accepted})")
        return default

    def name(self, value: object, path: KeyPath, what: str) -> str | None:
        if not isinstance(value, str):
            self.problem(path, f"expected a {what} name, got {kind_of(value)}")
            return None
        return value

    def resolve(self, value: str) -> Path:
        """A path from the config, absolute: `~` expanded, relative to the config's folder."""
        # normpath, not resolve(): keep the operator's symlinks as written.
        return Path(os.path.normpath(self.base_dir / Path(value).expanduser()))

    def optional(
        self, data: dict[str, Any], key: str, path: KeyPath, read: Callable[[object, KeyPath], _T]
    ) -> _T | None:
        """`read` the key if present and not null."""
        value = data.get(key)
        return None if value is None else read(value, (*path, key))

    def _dur(
        self, data: dict[str, Any], key: str, path: KeyPath, default: float, positive: bool = True
    ) -> float:
        if data.get(key) is None:
            return default
        return self.duration(data[key], (*path, key), default, positive)

    def _signal(self, value: object, path: KeyPath, default: str) -> str:
        try:
            if isinstance(value, int) and not isinstance(value, bool):
                return signal.Signals(value).name
            if isinstance(value, str):
                upper = value.strip().upper()
                return signal.Signals[upper if upper.startswith("SIG") else f"SIG{upper}"].name
        except (ValueError, KeyError):
            pass
        self.problem(path, f"unknown signal {value!r} (use e.g. SIGTERM, TERM or 15)")
        return default

    def _argv(self, data: dict[str, Any], key: str, path: KeyPath) -> tuple[str, ...] | None:
        value = data.get(key)
        if value is None:
            return None
        return self._command(value, (*path, key))

    def _command(self, value: object, path: KeyPath) -> tuple[str, ...] | None:
        """A string (split like a shell would, without running one) or a list of words."""
        if isinstance(value, str):
            try:
                return tuple(shlex.split(value))
            except ValueError as exc:
                self.problem(path, f"cannot split {value!r}: {exc}")
                return None
        if isinstance(value, list):
            words = [self.scalar_text(v, (*path, i)) for i, v in enumerate(value)]
            return tuple(w for w in words if w is not None)
        self.problem(path, f"expected a string or a list, got {kind_of(value)}")
        return None

    def _names(self, value: object, path: KeyPath, what: str) -> tuple[str, ...]:
        return tuple(name for _, name in self._indexed_names(value, path, what))

    def _indexed_names(self, value: object, path: KeyPath, what: str) -> list[tuple[int, str]]:
        """A list of distinct names, each with its index in the YAML list."""
        out: list[tuple[int, str]] = []
        for index, item in enumerate(self.seq(value, path)):
            name = self.name(item, (*path, index), what)
            if name is None:
                continue
            if any(name == seen for _, seen in out):
                self.problem((*path, index), f"{what} {name!r} listed twice")
                continue
            out.append((index, name))
        return out

    def _key_values(self, value: object, path: KeyPath, what: str) -> dict[str, str]:
        """A {K: V} mapping or a ["K=V"] list, values as written; null value -> ""."""
        out: dict[str, str] = {}
        if isinstance(value, list):
            for index, item in enumerate(value):
                if not isinstance(item, str) or "=" not in item:
                    self.problem((*path, index), f"expected 'KEY=VALUE', got {item!r}")
                    continue
                key, _, text = item.partition("=")
                if self._check_key(key, (*path, index), what):
                    out[key] = text
            return out
        for key, item in self.mapping(value, path).items():
            written = self.scalar_text(item, (*path, key))
            if written is not None and self._check_key(key, (*path, key), what):
                out[key] = written
        return out

    def _check_key(self, key: str, path: KeyPath, what: str) -> bool:
        if not key or any(c.isspace() for c in key) or "=" in key:
            self.problem(path, f"invalid {what} name {key!r}")
            return False
        return True
