"""The file the daemon runs from: our config, or a Compose file imported on the fly.

The file is read and parsed once; our config is validated from that parse, and only a file
that looks like Compose goes to the importer (which reads it again with its `.env`).
"""

from __future__ import annotations

import os
from pathlib import Path

from supervisor.config import StackConfig
from supervisor.config.load import read_config_text, read_document, stack_from_document

__all__ = ["load_stack", "looks_like_compose"]


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
    document = read_document(read_config_text(source), source)
    if looks_like_compose(document.data):
        # Imported here: the importer costs the daemon's start ~40 ms when the file is ours.
        from supervisor.compose import load_compose  # noqa: PLC0415 - see above

        return load_compose(source)[0]
    return stack_from_document(document, source=source, base_dir=source.parent)
