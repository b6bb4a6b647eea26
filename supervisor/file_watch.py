"""Notice edits of the config and the files it references, debounced: `watchfiles` (the Rust
`notify` crate: inotify on Linux, no polling) watches their folders in a thread of its own.

Folders, not files: editors save by writing in place or by renaming a temp file over the
original, and a symlinked file changes when its link or its target does, so both folders are
watched and the changed paths are matched against the files.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import structlog
from watchfiles._rust_notify import RustNotify

log = structlog.get_logger(__name__)

# How often the watching thread looks at its stop flag while nothing changes.
_STEP_MS = 200


class FileWatcher:
    """Calls `on_change` once changes to the watched files have been quiet for `debounce` s."""

    def __init__(self, on_change: Callable[[], None], debounce: float = 0.3) -> None:
        self._on_change = on_change
        self._debounce = debounce
        self._loop = asyncio.get_running_loop()
        self._stop = threading.Event()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, files: Iterable[Path]) -> None:
        """Watch exactly these files from now on (their folders are watched before this returns)."""
        self._stop.set()  # the previous watching thread ends at its next step
        self._stop = threading.Event()
        # A symlinked file changes when its link or its target does: watch both.
        wanted = frozenset(p for f in files for p in (Path(f).absolute(), Path(f).resolve()))
        folders = []
        for folder in sorted({f.parent for f in wanted}):
            if folder.is_dir():
                folders.append(str(folder))
            else:
                log.warning("cannot watch folder", folder=str(folder), error="not a folder")
        if not folders:
            return
        try:
            notify = RustNotify(folders, False, False, 0, False, True)
        except (OSError, RuntimeError) as exc:  # e.g. the system's inotify watch limit
            log.warning("cannot watch folders", folders=folders, error=str(exc))
            return
        thread = threading.Thread(
            target=self._pump, args=(notify, wanted, self._stop), name="file-watch", daemon=True
        )
        thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.cancel()

    def _pump(self, notify: RustNotify, wanted: frozenset[Path], stop: threading.Event) -> None:
        with notify:
            while not stop.is_set():
                try:
                    changes = notify.watch(_STEP_MS, _STEP_MS, 0, stop)
                except Exception as exc:  # the watch is gone; SIGHUP and the API still reload
                    log.error("file watching failed", error=str(exc))
                    return
                if isinstance(changes, str):  # "stop", or a "timeout"/"signal": nothing changed
                    continue
                if any(Path(path) in wanted for _change, path in changes):
                    self._loop.call_soon_threadsafe(self._changed, stop)

    def _changed(self, stop: threading.Event) -> None:
        if stop.is_set():
            return  # from a watch that was replaced or closed meanwhile
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(self._debounce, self._fire)

    def _fire(self) -> None:
        self._timer = None
        log.info("config files changed on disk")
        self._on_change()
