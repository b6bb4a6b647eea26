"""Backups of a service's data through a command run inside its container, and restores.

`backup: {exec: [pg_dump, ...], keep: N}`: the command's stdout is streamed (through the Engine
API, in a worker thread) into `<backups dir>/<service>/<service>_<UTC time>_<images>.backup`;
the newest N are kept. `restore: {exec: [psql, ...]}` runs with a backup on its stdin.
Naming and retention are pure functions; the rest needs a container runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import structlog

from supervisor.config import ServiceConfig
from supervisor.docker_api import DockerError, ExecResult

log = structlog.get_logger(__name__)

SUFFIX = ".backup"
_TIME_FORMAT = "%Y%m%dT%H%M%SZ"


class BackupError(Exception):
    """A backup or restore failed; the message names the service and the reason."""


class ExecRuntime(Protocol):
    """The part of the Docker facade backups use."""

    async def exec_to_file(
        self, container_id: str, argv: tuple[str, ...], target: Path
    ) -> ExecResult: ...
    async def exec_from_file(
        self, container_id: str, argv: tuple[str, ...], source: Path
    ) -> ExecResult: ...


@dataclass(frozen=True)
class Backup:
    """One backup file taken."""

    service: str
    path: Path
    size: int


def short_id(image: str) -> str:
    """The 12 hex digits Docker shows for an image ID."""
    return image.removeprefix("sha256:")[:12]


def backup_name(service: str, at: datetime, images: Mapping[str, str]) -> str:
    """`<service>_<UTC time>_<svc>-<image12>...backup`: what, when, and under which images."""
    stamp = at.astimezone(UTC).strftime(_TIME_FORMAT)
    parts = [f"{name}-{short_id(image)}" for name, image in images.items() if image]
    return "_".join([service, stamp, *parts]) + SUFFIX


def service_folder(backups_dir: Path, service: str) -> Path:
    return backups_dir / service


def backups_of(backups_dir: Path, service: str) -> list[Path]:
    """The service's backups, oldest first (the UTC time in the name sorts them)."""
    folder = service_folder(backups_dir, service)
    pattern = re.compile(re.escape(service) + r"_\d{8}T\d{6}Z[^/]*" + re.escape(SUFFIX))
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name))


def to_prune(existing: Sequence[Path], keep: int) -> list[Path]:
    """Which of `existing` (oldest first) go so that the newest `keep` remain."""
    return list(existing[: max(0, len(existing) - keep)])


def resolve_backup(backups_dir: Path, service: str, given: str) -> Path:
    """A backup named by the operator: an absolute path, or a file in the service's folder."""
    path = Path(given)
    return path if path.is_absolute() else service_folder(backups_dir, service) / path.name


async def take_backup(
    runtime: ExecRuntime,
    service: ServiceConfig,
    container_id: str,
    backups_dir: Path,
    images: Mapping[str, str],
    now: datetime,
) -> Backup:
    """Run the service's backup command into a new file; prune to `keep`. BackupError if not."""
    if service.backup is None:
        raise BackupError(f"service {service.name}: no `backup` configured")
    folder = service_folder(backups_dir, service.name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"service {service.name}: cannot create {folder}: {exc}") from exc
    final = folder / backup_name(service.name, now, images)
    partial = final.with_name(final.name + ".partial")
    try:
        result = await runtime.exec_to_file(container_id, service.backup.exec, partial)
    except (DockerError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"service {service.name}: backup failed: {exc}") from exc
    if result.exit_code != 0:
        partial.unlink(missing_ok=True)
        detail = result.output.decode(errors="replace").strip()[-500:]
        raise BackupError(
            f"service {service.name}: backup command {service.backup.exec[0]} exited "
            f"{result.exit_code}" + (f": {detail}" if detail else "")
        )
    partial.rename(final)
    size = final.stat().st_size
    log.info("backup taken", service=service.name, file=str(final), bytes=size)
    for old in to_prune(backups_of(backups_dir, service.name), service.backup.keep):
        with contextlib.suppress(OSError):
            old.unlink()
            log.info("old backup removed", service=service.name, file=str(old))
    return Backup(service.name, final, size)


async def restore_backup(
    runtime: ExecRuntime, service: ServiceConfig, container_id: str, source: Path
) -> str:
    """Feed a backup to the service's restore command; its output's tail. BackupError if not."""
    if service.restore is None:
        raise BackupError(f"service {service.name}: no `restore` configured")
    if not await asyncio.to_thread(source.is_file):
        raise BackupError(f"service {service.name}: no backup file {source}")
    try:
        result = await runtime.exec_from_file(container_id, service.restore.exec, source)
    except (DockerError, OSError) as exc:
        raise BackupError(f"service {service.name}: restore failed: {exc}") from exc
    detail = result.output.decode(errors="replace").strip()[-500:]
    if result.exit_code != 0:
        raise BackupError(
            f"service {service.name}: restore command {service.restore.exec[0]} exited "
            f"{result.exit_code}" + (f": {detail}" if detail else "")
        )
    log.info("backup restored", service=service.name, file=str(source))
    return detail
