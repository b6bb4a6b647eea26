"""Durations as the config writes them ("500ms", "1m30s") and the range each key allows."""

from __future__ import annotations

import math
import re

__all__ = ["DEFAULT_BOUNDS", "DURATION_BOUNDS", "DURATION_HINT", "parse_duration", "show_duration"]


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_UNIT_ORDER = ("h", "m", "s", "ms")
DURATION_HINT = "(use e.g. 500ms, 10s, 5m)"
_MINUTE, _HOUR, _DAY = 60.0, 3600.0, 86400.0
# (section, key) -> (shortest, longest) in seconds. Intervals below 100 ms would probe in a busy
# loop; a day or a week is longer than anyone means and keeps timers far from overflow.
DURATION_BOUNDS: dict[tuple[str, ...], tuple[float, float]] = {
    ("health", "interval"): (0.1, _DAY),
    ("health", "timeout"): (0.1, _HOUR),
    ("health", "start_period"): (0.0, _DAY),
    ("health", "start_interval"): (0.1, _HOUR),
    ("backoff", "initial"): (0.01, _HOUR),
    ("backoff", "max"): (0.01, _DAY),
    ("backoff", "first"): (0.0, _HOUR),
    ("limit", "window"): (1.0, 7 * _DAY),
    ("restart", "reset_after"): (1.0, 7 * _DAY),
    ("stop", "timeout"): (0.0, _HOUR),
    ("systemd", "startup_timeout"): (1.0, _DAY),
}
DEFAULT_BOUNDS = (0.0, _DAY)


def show_duration(seconds: float) -> str:
    """A bound as the operator would write it: 100ms, 1s, 168h."""
    if seconds == 0:
        return "0s"
    for unit, size in (("h", _HOUR), ("m", _MINUTE), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds * 1000:g}ms"


def parse_duration(value: object) -> float:
    """Seconds in a duration such as "500ms", "10s", "5m", "1h", "1m30s" or "1.5s".

    Bare numbers are refused: "10" could mean seconds or milliseconds, so the unit is required.
    """
    error = ValueError(f"invalid duration {value!r} {DURATION_HINT}")
    if not isinstance(value, str) or not value:
        raise error
    total = 0.0
    position = 0
    last_unit = -1
    for match in _DURATION_RE.finditer(value):
        unit = _UNIT_ORDER.index(match.group(2))
        # Units must appear once each, largest first ("1m30s", not "30s1m").
        if match.start() != position or unit <= last_unit:
            raise error
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
        last_unit = unit
    if position != len(value) or not math.isfinite(total):
        raise error
    return total
