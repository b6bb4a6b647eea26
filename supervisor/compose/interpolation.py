"""Compose's `${VAR}` interpolation and its `.env` files."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = ["InterpolationError", "interpolate", "read_dotenv"]

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
