"""The shared YAML source: one parse, each key path's line and raw text, duplicate keys."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from supervisor.yaml_bounds import YamlLimitError
from supervisor.yaml_source import Duplicate, KeyPath, format_path, read_yaml

DOC = textwrap.dedent(
    """\
    base: &base
      image: a
      mode: 0755
    services:
      web:
        <<: *base
        image: b
        ports:
          - 22:22
        depends_on: [db, cache]
      db:
        <<: *base
    """
)


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ((), 1),
        (("base",), 1),
        (("services", "web"), 5),
        (("services", "web", "image"), 7),  # the explicit key, not the merged one
        (("services", "web", "mode"), 3),  # merged from the anchor
        (("services", "db", "image"), 2),
        (("services", "web", "ports", 0), 9),
        (("services", "web", "depends_on", 1), 10),
        (("services", "web", "depends_on", "cache"), 10),  # list items by name too
        (("services", "web", "ports", 0, "nothing", "here"), 9),  # nearest ancestor
        (("nowhere",), 1),
    ],
)
def test_line_of(path: KeyPath, line: int) -> None:
    document = read_yaml(DOC)
    assert document is not None
    assert document.line_of(path) == line


@pytest.mark.parametrize(
    ("path", "raw", "value"),
    [
        (("base", "mode"), "0755", 493),  # YAML 1.1 octal
        (("services", "web", "ports", 0), "22:22", 1342),  # YAML 1.1 base 60
        (("services", "web", "image"), "b", "b"),
        (("services", "db", "mode"), "0755", 493),
    ],
)
def test_raw_text_is_kept_as_written(path: KeyPath, raw: str, value: object) -> None:
    document = read_yaml(DOC)
    assert document is not None
    assert document.raw[path] == raw
    data = document.data
    for part in path:
        data = data[part]
    assert data == value


@pytest.mark.parametrize(
    ("text", "duplicates"),
    [
        ("a: 1\nb: 2\n", []),
        ("a: 1\na: 2\n", [Duplicate(("a",), 1, 2)]),
        ("x:\n  a: 1\n  b: 2\n  a: 3\n", [Duplicate(("x", "a"), 2, 4)]),
        # One mapping used twice through an alias is reported once.
        ("x: &m\n  a: 1\n  a: 2\ny: *m\n", [Duplicate(("x", "a"), 2, 3)]),
        # A merged key overridden by an explicit one is not a duplicate.
        ("b: &b {a: 1}\nc:\n  <<: *b\n  a: 2\n", []),
    ],
)
def test_duplicates(text: str, duplicates: list[Duplicate]) -> None:
    document = read_yaml(text)
    assert document is not None
    assert document.duplicates == duplicates


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (format_path(("services", "web", "ports", 0)), 9),
        ("services.web.ports[3]", 8),
        ("services.web.image.deeper", 7),
        ("services.web.depends_on.cache", 10),
        # Unlike line_of, no fallback to the top: an importer's problem outside the file
        # (a path the converter made up) has no line.
        ("nowhere", None),
        ("", None),
    ],
)
def test_line_of_text(path: str, line: int | None) -> None:
    document = read_yaml(DOC)
    assert document is not None
    assert document.line_of_text(path) == line


def test_empty_and_broken() -> None:
    assert read_yaml("") is None
    assert read_yaml("# only a comment\n") is None
    with pytest.raises(yaml.YAMLError):
        read_yaml("a: [\n")
    with pytest.raises(YamlLimitError):
        read_yaml("a: &a [*a]\n")  # a recursive alias, refused by yaml_bounds


def test_the_config_and_the_importer_share_the_index() -> None:
    """Both read through `read_yaml`: no module of either builds its own line index."""
    root = Path(__file__).resolve().parent.parent / "supervisor"
    for folder in ("config", "compose"):
        for module in (root / folder).glob("*.py"):
            text = module.read_text(encoding="utf-8")
            assert "start_mark" not in text, f"{module} indexes YAML nodes itself"
            assert "load_bounded" not in text, f"{module} parses YAML itself"
