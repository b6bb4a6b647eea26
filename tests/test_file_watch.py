"""The config file watcher: edits in place, editor-style renames, symlinks (link or target),
files in several folders, a missing folder, and a burst of writes reported once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from supervisor.file_watch import FileWatcher

DEADLINE = 10.0


class Changes:
    """Counts the watcher's calls; `next` waits for the next one, within a deadline."""

    def __init__(self) -> None:
        self.count = 0
        self._event = asyncio.Event()

    def __call__(self) -> None:
        self.count += 1
        self._event.set()

    async def next(self) -> int:
        async with asyncio.timeout(DEADLINE):
            await self._event.wait()
        self._event.clear()
        return self.count


@pytest.fixture
async def watched() -> AsyncIterator[tuple[FileWatcher, Changes]]:
    changes = Changes()
    watcher = FileWatcher(changes, debounce=0.05)
    try:
        yield watcher, changes
    finally:
        watcher.close()


@pytest.mark.slow
async def test_an_edit_in_place_is_noticed(
    tmp_path: Path, watched: tuple[FileWatcher, Changes]
) -> None:
    watcher, changes = watched
    config = tmp_path / "supervisor.yaml"
    config.write_text("a: 1\n")
    watcher.watch([config])
    config.write_text("a: 2\n")
    assert await changes.next() == 1


@pytest.mark.slow
async def test_an_editor_style_rename_over_the_file_is_noticed(
    tmp_path: Path, watched: tuple[FileWatcher, Changes]
) -> None:
    watcher, changes = watched
    config = tmp_path / "supervisor.yaml"
    config.write_text("a: 1\n")
    watcher.watch([config])
    temp = tmp_path / ".supervisor.yaml.swp"
    temp.write_text("a: 2\n")
    temp.replace(config)
    assert await changes.next() == 1


@pytest.mark.slow
async def test_a_burst_of_writes_is_reported_once(
    tmp_path: Path, watched: tuple[FileWatcher, Changes]
) -> None:
    watcher, changes = watched
    config = tmp_path / "supervisor.yaml"
    config.write_text("a: 0\n")
    watcher.watch([config])
    for n in range(5):
        config.write_text(f"a: {n}\n")
    assert await changes.next() == 1
    # The next edit, after the burst was reported, is the second report: the burst was one.
    config.write_text("a: 9\n")
    assert await changes.next() == 2


@pytest.mark.slow
async def test_env_and_secret_files_in_other_folders_are_watched(
    tmp_path: Path, watched: tuple[FileWatcher, Changes]
) -> None:
    watcher, changes = watched
    files = [tmp_path / "supervisor.yaml", tmp_path / "env" / "web.env", tmp_path / "s" / "pw"]
    for f in files:
        f.parent.mkdir(exist_ok=True)
        f.write_text("x\n")
    watcher.watch(files)
    for n, f in enumerate(files, start=1):
        f.write_text("y\n")
        assert await changes.next() == n, f


@pytest.mark.slow
async def test_a_symlinked_file_is_watched_through_its_link_and_its_target(
    tmp_path: Path, watched: tuple[FileWatcher, Changes]
) -> None:
    watcher, changes = watched
    (tmp_path / "real").mkdir()
    (tmp_path / "conf").mkdir()
    target = tmp_path / "real" / "web.env"
    target.write_text("A=1\n")
    link = tmp_path / "conf" / "web.env"
    link.symlink_to(target)
    watcher.watch([link])
    target.write_text("A=2\n")  # the target, in a folder the config never names
    assert await changes.next() == 1
    other = tmp_path / "real" / "web2.env"
    other.write_text("A=3\n")
    swapped = tmp_path / "conf" / "web.env.new"
    swapped.symlink_to(other)
    swapped.replace(link)  # the link itself now points elsewhere
    assert await changes.next() == 2


@pytest.mark.slow
async def test_a_missing_folder_does_not_stop_the_others_being_watched(
    tmp_path: Path, watched: tuple[FileWatcher, Changes]
) -> None:
    watcher, changes = watched
    config = tmp_path / "supervisor.yaml"
    config.write_text("a: 1\n")
    watcher.watch([tmp_path / "gone" / "web.env", config])
    config.write_text("a: 2\n")
    assert await changes.next() == 1


@pytest.mark.slow
async def test_watch_again_follows_the_new_set_of_files(
    tmp_path: Path, watched: tuple[FileWatcher, Changes]
) -> None:
    watcher, changes = watched
    first, second = tmp_path / "a" / "one.env", tmp_path / "b" / "two.env"
    for f in (first, second):
        f.parent.mkdir()
        f.write_text("x\n")
    watcher.watch([first])
    watcher.watch([second])  # a reload that references another file
    second.write_text("y\n")
    assert await changes.next() == 1
