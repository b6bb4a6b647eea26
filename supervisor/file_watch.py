"""Notice edits of the config and the files it references, with inotify (no polling), debounced."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import struct
from collections.abc import Callable, Iterable
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

_IN_MODIFY = 0x002
_IN_ATTRIB = 0x004
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")
# Editors save by writing in place, or by writing a temp file and renaming it over the original:
# watch the folders, not the files, and look at the names.
_MASK = _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE | _IN_ATTRIB | _IN_MODIFY


class FileWatcher:
    """Calls `on_change` once changes to the watched files have been quiet for `debounce` s."""

    def __init__(self, on_change: Callable[[], None], debounce: float = 0.3) -> None:
        self._on_change = on_change
        self._debounce = debounce
        self._files: set[Path] = set()
        self._watches: dict[int, Path] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fd = self._libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._fd: int = fd
        asyncio.get_running_loop().add_reader(self._fd, self._read)

    def watch(self, files: Iterable[Path]) -> None:
        """Watch exactly these files from now on (folders are watched as needed)."""
        # A symlinked file changes when its link or its target does: watch both.
        self._files = {p for f in files for p in (Path(f).absolute(), Path(f).resolve())}
        for wd in list(self._watches):
            self._libc.inotify_rm_watch(self._fd, wd)
        self._watches.clear()
        for folder in {f.parent for f in self._files}:
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(folder), _MASK)
            if wd < 0:
                log.warning("cannot watch folder", folder=str(folder), errno=ctypes.get_errno())
                continue
            self._watches[wd] = folder

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        asyncio.get_running_loop().remove_reader(self._fd)
        os.close(self._fd)

    def _read(self) -> None:
        try:
            data = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return
        offset, relevant = 0, False
        while offset + _EVENT.size <= len(data):
            wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
            raw = data[offset + _EVENT.size : offset + _EVENT.size + length]
            offset += _EVENT.size + length
            folder = self._watches.get(wd)
            name = raw.rstrip(b"\0").decode(errors="replace")
            if folder is not None and folder / name in self._files:
                relevant = True
        if relevant:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_later(self._debounce, self._fire)

    def _fire(self) -> None:
        self._timer = None
        log.info("config files changed on disk")
        self._on_change()
