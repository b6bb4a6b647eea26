"""A YAML file parsed once, with where each key path sits in it.

Shared by our config and the Compose importer: `read_yaml` parses within the caps of
`yaml_bounds` and walks the node tree once, recording each node's line, each scalar's text as
written (so `0755` and `22:22` survive YAML 1.1's number rules) and duplicate keys, which
PyYAML silently drops.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from supervisor.yaml_bounds import load_bounded

__all__ = ["Duplicate", "KeyPath", "YamlDocument", "format_path", "read_yaml"]

# Key paths: mapping keys as str, sequence indexes as int.
KeyPath = tuple[str | int, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"


def format_path(path: KeyPath) -> str:
    """`("services", "x", "env_file", 0)` -> "services.x.env_file[0]"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A key written twice in one mapping; PyYAML keeps the last."""

    path: KeyPath
    first_line: int
    line: int


@dataclass(slots=True)
class YamlDocument:
    """The constructed data and its index: line and raw text per key path."""

    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)
    raw: dict[KeyPath, str] = field(default_factory=dict)
    duplicates: list[Duplicate] = field(default_factory=list)
    _by_text: dict[str, int] | None = None

    def line_of(self, path: KeyPath) -> int | None:
        """Line of the node at `path`, else of its closest ancestor the YAML located."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def line_of_text(self, path: str) -> int | None:
        """Like `line_of` for a path written by `format_path` ("services.x.ports[0]")."""
        if self._by_text is None:
            self._by_text = {format_path(k): v for k, v in self.lines.items()}
        while path:
            if path in self._by_text:
                return self._by_text[path]
            parent = re.sub(r"(\[\d+\]|\.[^.\[]*)$", "", path)
            if parent == path:  # a top-level key the file does not have
                return None
            path = parent
        return None


def read_yaml(text: str) -> YamlDocument | None:
    """Parse `text` within the caps and index it; None if it holds no document.

    Raises `yaml.YAMLError` (including `YamlLimitError`) for what is not YAML or too big.
    """
    document = YamlDocument(None)
    indexer = _Indexer(document)
    root, data = load_bounded(text, lambda node: indexer.node(node, (), frozenset(), False))
    if root is None:
        return None
    document.data = data
    return document


class _Indexer:
    """One walk over the node tree, before construction rewrites merge keys in place."""

    def __init__(self, document: YamlDocument) -> None:
        self.doc = document
        self.checked: set[int] = set()  # mappings whose duplicates were reported

    def node(self, node: yaml.Node, path: KeyPath, active: frozenset[int], fill: bool) -> None:
        """Index `node` at `path`; `fill` (inside a merged mapping) never overwrites."""
        if id(node) in active:  # a recursive alias; construction rejects it
            return
        line = node.start_mark.line + 1
        self.doc.lines.setdefault(path, line)
        if isinstance(node, yaml.ScalarNode):
            if not fill or path not in self.doc.raw:
                self.doc.raw[path] = str(node.value)
            return
        active = active | {id(node)}
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.node(item, (*path, index), active, fill)
                if isinstance(item, yaml.ScalarNode):
                    # List-form names (depends_on: [db]) are keyed by name later: find them too.
                    self.doc.lines.setdefault((*path, str(item.value)), item.start_mark.line + 1)
        elif isinstance(node, yaml.MappingNode):
            self.mapping(node, path, active, fill)

    def mapping(
        self, node: yaml.MappingNode, path: KeyPath, active: frozenset[int], fill: bool
    ) -> None:
        """Index a mapping's keys, then those merged in (`<<`), which explicit keys override."""
        first_line: dict[str, int] = {}
        merged: list[yaml.Node] = []
        report = not fill and id(node) not in self.checked
        self.checked.add(id(node))
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.extend(
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in first_line:
                if report:
                    self.doc.duplicates.append(Duplicate((*path, key), first_line[key], line))
            else:
                first_line[key] = line
            child = (*path, key)
            if fill:
                self.doc.lines.setdefault(child, line)
            else:
                # The last occurrence is the one PyYAML keeps, so it owns the path's line.
                self.doc.lines[child] = line
            self.node(value_node, child, active, fill)
        for source in merged:
            if isinstance(source, yaml.MappingNode) and id(source) not in active:
                self.mapping(source, path, active | {id(source)}, True)
