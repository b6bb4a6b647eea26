"""Backup files: names, retention, and the take/restore flow against a fake exec runtime."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from supervisor.backups import (
    BackupError,
    backup_name,
    backups_of,
    resolve_backup,
    restore_backup,
    take_backup,
    to_prune,
)
from supervisor.config import BackupConfig, ConfigError, RestoreConfig, ServiceConfig, parse_config
from supervisor.docker_api import ExecResult

IMAGE = "sha256:" + "1234567890ab" + "f" * 52
WHEN = datetime(2026, 12, 1, 14, 20, 5, tzinfo=UTC)


class FakeExec:
    """Writes `dump` as the command's stdout; records what a restore was fed."""

    def __init__(self, dump: bytes = b"rows\n", exit_code: int = 0, stderr: bytes = b"") -> None:
        self.dump, self.exit_code, self.stderr = dump, exit_code, stderr
        self.fed: bytes | None = None
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    async def exec_to_file(
        self, container_id: str, argv: tuple[str, ...], target: Path
    ) -> ExecResult:
        self.calls.append((container_id, argv))
        target.write_bytes(self.dump)  # noqa: ASYNC240 - a fake; a few bytes
        return ExecResult(self.exit_code, self.stderr)

    async def exec_from_file(
        self, container_id: str, argv: tuple[str, ...], source: Path
    ) -> ExecResult:
        self.calls.append((container_id, argv))
        self.fed = source.read_bytes()  # noqa: ASYNC240 - a fake; a few bytes
        return ExecResult(self.exit_code, self.stderr)


def db(keep: int = 2) -> ServiceConfig:
    return ServiceConfig(
        name="db",
        image="postgres:15",
        backup=BackupConfig(exec=("pg_dump", "app"), keep=keep),
        restore=RestoreConfig(exec=("psql", "app")),
    )


def test_name_says_service_time_and_images() -> None:
    name = backup_name("db", WHEN, {"db": IMAGE, "migrate": "sha256:" + "c" * 64})
    assert name == "db_20261201T142005Z_db-1234567890ab_migrate-cccccccccccc.backup"


@pytest.mark.parametrize(
    ("existing", "keep", "gone"),
    [(3, 2, 1), (2, 2, 0), (0, 1, 0), (5, 1, 4)],
)
def test_prune_keeps_the_newest(existing: int, keep: int, gone: int) -> None:
    files = [Path(f"db_2026120{i}T000000Z.backup") for i in range(1, existing + 1)]
    assert to_prune(files, keep) == files[:gone]


async def test_take_backup_writes_the_file_and_keeps_only_the_newest(tmp_path: Path) -> None:
    runtime = FakeExec()
    other = tmp_path / "db" / "notes.txt"
    other.parent.mkdir()
    other.write_text("not a backup")  # never pruned
    taken = []
    for second in range(3):
        when = WHEN.replace(second=second)
        taken.append(await take_backup(runtime, db(keep=2), "ctr", tmp_path, {"db": IMAGE}, when))
    assert runtime.calls[0] == ("ctr", ("pg_dump", "app"))
    assert backups_of(tmp_path, "db") == [taken[1].path, taken[2].path]
    assert taken[2].path.read_bytes() == b"rows\n" and taken[2].size == 5
    assert other.exists()


async def test_failed_backup_leaves_no_file_and_says_why(tmp_path: Path) -> None:
    runtime = FakeExec(exit_code=1, stderr=b"pg_dump: connection refused\n")
    with pytest.raises(BackupError, match="db: backup command pg_dump exited 1: pg_dump: conn"):
        await take_backup(runtime, db(), "ctr", tmp_path, {"db": IMAGE}, WHEN)
    assert list((tmp_path / "db").iterdir()) == []


async def test_restore_feeds_the_file(tmp_path: Path) -> None:
    runtime = FakeExec()
    backup = await take_backup(runtime, db(), "ctr", tmp_path, {"db": IMAGE}, WHEN)
    await restore_backup(runtime, db(), "ctr", resolve_backup(tmp_path, "db", backup.path.name))
    assert runtime.fed == b"rows\n"
    assert runtime.calls[-1] == ("ctr", ("psql", "app"))
    with pytest.raises(BackupError, match="no backup file"):
        await restore_backup(runtime, db(), "ctr", tmp_path / "db" / "missing.backup")


def test_resolve_keeps_names_inside_the_service_folder(tmp_path: Path) -> None:
    assert resolve_backup(tmp_path, "db", "../../etc/passwd") == tmp_path / "db" / "passwd"
    assert resolve_backup(tmp_path, "db", "/srv/copy.backup") == Path("/srv/copy.backup")


def test_backups_default_to_the_systemd_state_directory_when_there_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "version: 1\nproject: p\nservices: {a: {image: x}}\n"
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/state:{tmp_path}/other")
    assert parse_config(text, base_dir=tmp_path / "etc").backups_dir == tmp_path / "state/backups"
    monkeypatch.delenv("STATE_DIRECTORY")
    assert parse_config(text, base_dir=tmp_path / "etc").backups_dir == tmp_path / "etc/backups"


def test_config_backup_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    base = f"version: 1\nproject: p\nbackups: {{dir: {tmp_path}/b}}\nservices:\n"
    config = parse_config(
        base + "  db: {image: x, backup: {exec: 'pg_dump -U a'}, restore: {exec: [psql]}}\n"
    )
    assert config.backups_dir == tmp_path / "b"
    assert config.services["db"].backup == BackupConfig(exec=("pg_dump", "-U", "a"), keep=7)
    assert (
        parse_config(
            "version: 1\nproject: p\nservices: {a: {image: x}}\n", base_dir=tmp_path
        ).backups_dir
        == tmp_path / "backups"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(base + "  db: {image: x, backup: {exec: [], keep: 0}, restore: {}}\n")
    assert sorted(f"{p.path}: {p.message}" for p in caught.value.problems) == [
        "services.db.backup.exec: empty command",
        "services.db.backup.keep: must be at least 1, got 0",
        "services.db.restore.exec: missing required key",
    ]
