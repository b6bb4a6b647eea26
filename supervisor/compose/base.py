"""The converter's shared state and readers: notes located in the Compose file, values as
written and interpolated."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from supervisor.compose.interpolation import InterpolationError, interpolate
from supervisor.compose.report import ImportNote, Level
from supervisor.config import parse_duration
from supervisor.yaml_source import KeyPath, YamlDocument, format_path

__all__ = ["WHY", "ConverterBase"]

WHY = {
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


class ConverterBase:
    """One conversion: the Compose file's line index, variables, and the notes so far."""

    def __init__(
        self,
        source: Path,
        out_dir: Path,
        env: Mapping[str, str],
        lenient: bool,
        document: YamlDocument,
    ) -> None:
        self.source = source
        self.out_dir = out_dir.absolute()
        self.env = env
        self.lenient = lenient
        self.document = document
        self.raw = document.raw
        self.notes: list[ImportNote] = []

    def note(self, level: Level, path: KeyPath, message: str) -> None:
        line = self.document.line_of(path)
        self.notes.append(ImportNote(level, format_path(path), message, line))

    def error(self, path: KeyPath, message: str) -> None:
        self.note("error", path, message)

    def unsupported(self, path: KeyPath, why: str | None = None) -> None:
        """A key we cannot honour: an error, or with --lenient a warning that it was dropped."""
        key = str(path[-1])
        why = why or WHY.get(key)
        reason = f" ({why})" if why else ""
        if self.lenient:
            self.note("warning", path, f"not supported, dropped{reason}")
        else:
            self.error(path, f"not supported{reason}; use --lenient to drop it with a warning")

    def check_keys(self, data: Mapping[str, Any], path: KeyPath, allowed: tuple[str, ...]) -> None:
        for key in data:
            if key not in allowed and not str(key).startswith("x-"):
                self.unsupported((*path, str(key)))

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
