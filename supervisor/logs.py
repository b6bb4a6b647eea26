"""structlog setup: JSON lines for journald and files, console rendering on a terminal."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Hashable
from typing import TextIO

import structlog

REPEAT_INTERVAL = 10.0  # a repeated line is written at most once per this many seconds


class Throttle:
    """Lets a repeated message through at most once per `interval`; the next one that passes
    carries how many were dropped meanwhile. A flood (a thousand failed accept() calls) then
    costs a line every few seconds, not megabytes of identical tracebacks."""

    def __init__(
        self, interval: float = REPEAT_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._last: dict[Hashable, float] = {}
        self._dropped: dict[Hashable, int] = {}

    def allow(self, key: Hashable) -> int | None:
        """None: drop this one. Otherwise write it, noting the returned count of dropped ones."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return None
        if len(self._last) > 1000:  # bounded: forget keys long quiet
            self._last = {k: t for k, t in self._last.items() if now - t < self._interval}
        self._last[key] = now
        return self._dropped.pop(key, 0)


def _is_bad_request(error: BaseException | None) -> bool:
    """A client's malformed request, as aiohttp's server reports it."""
    # Looked up, not imported: aiohttp costs the daemon's start ~0.1 s, and no such error can
    # exist before something imported it.
    exceptions = sys.modules.get("aiohttp.http_exceptions")
    return exceptions is not None and isinstance(error, exceptions.HttpProcessingError)


class _StdlibToStructlog(logging.Handler):
    """Records from other libraries (asyncio, aiohttp) as our JSON lines, throttled per message."""

    def __init__(self, throttle: Throttle) -> None:
        super().__init__(logging.WARNING)
        self._throttle = throttle

    def emit(self, record: logging.LogRecord) -> None:
        try:
            error = record.exc_info[1] if record.exc_info else None
            if _is_bad_request(error):
                # A client's malformed request (answered 400): its mistake, not ours.
                detail = " ".join(str(error).split())[:200]
                structlog.get_logger(record.name).debug("bad request from a client", error=detail)
                return
            message = record.getMessage()
            dropped = self._throttle.allow((record.name, message.partition("\n")[0]))
            if dropped is None:
                return
            fields: dict[str, object] = {"logger": record.name}
            if dropped:
                fields["repeats_dropped"] = dropped
            if record.exc_info:
                fields["exc_info"] = record.exc_info
            structlog.get_logger(record.name).log(record.levelno, message, **fields)
        except Exception:  # never let logging take the daemon down
            self.handleError(record)


def configure_logging(
    level: str = "info", *, stream: TextIO | None = None, json: bool | None = None
) -> None:
    """Configure structlog once for the process."""
    out = stream or sys.stderr
    as_json = json if json is not None else not out.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    if not any(isinstance(h, _StdlibToStructlog) for h in root.handlers):
        root.addHandler(_StdlibToStructlog(Throttle()))
