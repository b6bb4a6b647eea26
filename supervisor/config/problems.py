"""What is wrong with a config: each problem with its key path, file and line."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from supervisor.yaml_source import KeyPath, format_path

__all__ = ["ConfigError", "ConfigProblem", "KeyPath", "format_path", "kind_of"]


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with the config, located by key path and (if known) file and line."""

    path: str
    message: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line is not None else f"{self.file}: "
        elif self.line is not None:
            where = f"line {self.line}: "
        subject = f"{self.path}: " if self.path else ""
        return f"{where}{subject}{self.message}"


class ConfigError(Exception):
    """The config is invalid; `problems` lists every problem found."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def kind_of(value: object) -> str:
    """What a YAML value is, for a message: "a string", "a list", "null"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
