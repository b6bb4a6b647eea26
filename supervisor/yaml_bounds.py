"""YAML with bounds: a config file may be hostile, so its size, nesting and alias expansion are
capped before anything walks it.

PyYAML shares an aliased node rather than copying it, so a few hundred bytes of nested aliases
(a "billion laughs") expand to billions of paths for anything that walks the tree path by path
(the line index, hashing, dumping). Here each node is visited once to count what the tree
expands to, and the file is refused beyond the caps with a `YamlLimitError`, a `YAMLError`, so
every reader that already reports YAML errors reports this one too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "YamlLimitError",
    "compose_bounded",
    "describe_yaml_error",
    "load_bounded",
]

MAX_BYTES = 1024 * 1024  # a 50-service config is ~20 KB
MAX_NODES = 100_000  # nodes after alias expansion; a 50-service config has ~3,000
MAX_DEPTH = 64  # nesting after alias expansion; our configs nest ~8 deep


class YamlLimitError(yaml.YAMLError):
    """The YAML is too large, too deep, or expands (through aliases) too far."""


class _BoundedLoader(yaml.SafeLoader):
    """Refuses nesting deeper than MAX_DEPTH while composing (PyYAML composes recursively)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise YamlLimitError(
                    f"nested more than {MAX_DEPTH} levels deep (line {mark.line + 1})"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_expansion(root: yaml.Node) -> None:
    """Count the nodes and depth the tree has with every alias expanded, visiting each node
    once (post-order, iterative); refuse recursive aliases and anything over the caps."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            kids = _children(node)
            size[key] = min(MAX_NODES + 1, 1 + sum(size[id(k)] for k in kids))
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[key] > MAX_NODES:
                raise YamlLimitError(
                    f"expands to more than {MAX_NODES} nodes through aliases "
                    f"(line {node.start_mark.line + 1})"
                )
            if depth[key] > MAX_DEPTH:
                raise YamlLimitError(
                    f"nested more than {MAX_DEPTH} levels deep through aliases "
                    f"(line {node.start_mark.line + 1})"
                )
            continue
        if key in size:
            continue
        if key in on_path:
            raise YamlLimitError(f"recursive alias (line {node.start_mark.line + 1})")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in size)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _loader(text: str) -> _BoundedLoader:
    if len(text) > MAX_BYTES:
        raise YamlLimitError(f"larger than {MAX_BYTES // 1024} KiB ({len(text)} characters)")
    return _BoundedLoader(text)


def compose_bounded(text: str) -> yaml.Node | None:
    """`yaml.compose` within the caps; YamlLimitError (a YAMLError) beyond them."""
    loader = _loader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            _check_expansion(root)
        return root
    finally:
        loader.dispose()


def load_bounded(
    text: str, inspect: Callable[[yaml.Node], None] | None = None
) -> tuple[yaml.Node | None, Any]:
    """The constructed document (`yaml.safe_load`) within the caps, and its root node.

    `inspect` sees the node tree before construction, which rewrites merge keys (`<<`) in place.
    """
    loader = _loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        _check_expansion(root)
        if inspect is not None:
            inspect(root)
        return root, loader.construct_document(root)
    finally:
        loader.dispose()


def describe_yaml_error(exc: yaml.YAMLError, text: str) -> tuple[str, int | None]:
    """A YAML error as one line for the operator, and the line of the file it points at.

    A syntax error names its column and, when that line holds `{{ … }}`, the likely cause: a
    template that was not rendered.
    """
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = ": ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        if mark is None:
            return f"YAML syntax error: {what}", None
        message = f"YAML syntax error at column {mark.column + 1}: {what}"
        lines = text.splitlines()
        if mark.line < len(lines) and "{{" in lines[mark.line]:
            message += " (a template expression {{ … }}: render the template first)"
        return message, mark.line + 1
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow
        char = exc.character
        code = char if isinstance(char, int) else (char[0] if char else 0)
        line = text.count("\n", 0, exc.position) + 1
        return f"YAML error: character #x{code:04x} not allowed ({exc.reason})", line
    return f"YAML error: {' '.join(str(exc).split())}", None
