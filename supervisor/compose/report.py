"""What an import produced: the converted config and the notes on what the conversion did."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = ["ComposeImport", "ImportNote", "Level"]

Level = Literal["info", "warning", "error"]


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
