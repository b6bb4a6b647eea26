"""One service: its keys, environment (with env files), labels, jobs' backup and restore."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from supervisor.config.files import parse_env_file
from supervisor.config.files import reason as os_reason
from supervisor.config.keys import SECTION_KEYS, SERVICE_KEYS
from supervisor.config.model import (
    RESERVED_LABEL_PREFIX,
    BackupConfig,
    Defaults,
    PullPolicy,
    RestartPolicy,
    RestoreConfig,
    ServiceConfig,
    ServiceType,
)
from supervisor.config.mounts import MountReaders
from supervisor.config.probes import ProbeReaders
from supervisor.config.problems import ConfigProblem, KeyPath, format_path, kind_of

__all__ = ["ServiceReaders"]


class ServiceReaders(ProbeReaders, MountReaders):
    """Readers for a service under `services`."""

    def _service(
        self, name: str, data: dict[str, Any], path: KeyPath, defaults: Defaults
    ) -> ServiceConfig:
        self.keys(data, path, SERVICE_KEYS, required=("image",))
        image = self.optional(data, "image", path, self.string) or ""
        if isinstance(data.get("image"), str) and not image.strip():
            self.problem((*path, "image"), "must not be empty")
        kind = ServiceType.SERVICE
        if data.get("type") is not None:
            kind = self.choice(data["type"], (*path, "type"), ServiceType, kind)
        is_job = kind is ServiceType.JOB

        env_files = self._env_file_list(data.get("env_file"), (*path, "env_file"))
        environment: dict[str, str] = {}
        for file, file_path in env_files:
            environment.update(self._read_env_file(file, file_path))
        environment.update(self._environment(data.get("environment"), (*path, "environment")))

        networks: tuple[str, ...] = ("default",)
        if data.get("networks") is not None:
            listed = self._names(data["networks"], (*path, "networks"), "network")
            if not listed and isinstance(data["networks"], list):
                self.problem((*path, "networks"), "empty list (omit the key to use 'default')")
            networks = listed or networks

        health = None
        if data.get("health") is not None:
            health = self._health(data["health"], (*path, "health"), defaults.health)
            if is_job:
                self.problem(
                    (*path, "health"),
                    "a job cannot have a health probe (its exit code is its result)",
                )

        restart = self._restart(data.get("restart"), (*path, "restart"), defaults.restart, is_job)
        if is_job and restart.policy in (RestartPolicy.ALWAYS, RestartPolicy.UNLESS_STOPPED):
            self.problem(
                (*path, "restart", "policy"),
                f"a job cannot use restart policy '{restart.policy}' (use 'no' or 'on-failure')",
            )
        pull = defaults.pull
        if data.get("pull") is not None:
            pull = self.choice(data["pull"], (*path, "pull"), PullPolicy, pull)
        working_dir = self.optional(data, "working_dir", path, self.string)
        if working_dir is not None and not working_dir.startswith("/"):
            self.problem((*path, "working_dir"), f"must be an absolute path, got {working_dir!r}")

        return ServiceConfig(
            name=name,
            image=image,
            type=kind,
            command=self._argv(data, "command", path),
            entrypoint=self._argv(data, "entrypoint", path),
            environment=environment,
            env_files=tuple(file for file, _ in env_files),
            volumes=self._mounts(data.get("volumes"), (*path, "volumes")),
            networks=networks,
            ports=self._ports(data.get("ports"), (*path, "ports")),
            user=self._user(data.get("user"), (*path, "user")),
            working_dir=working_dir,
            depends_on=self._depends_on(data.get("depends_on"), (*path, "depends_on")),
            health=health,
            restart=restart,
            stop=self._stop(
                self.mapping(data.get("stop"), (*path, "stop")), (*path, "stop"), defaults.stop
            ),
            pull=pull,
            secrets=self._names(data.get("secrets"), (*path, "secrets"), "secret"),
            labels=self._labels(data.get("labels"), (*path, "labels")),
            backup=self._backup(data.get("backup"), (*path, "backup")),
            restore=self._restore(data.get("restore"), (*path, "restore")),
        )

    def _exec_argv(self, data: dict[str, Any], path: KeyPath) -> tuple[str, ...]:
        argv = self._argv(data, "exec", path) if "exec" in data else None
        if argv is not None and not argv:
            self.problem((*path, "exec"), "empty command")
        return argv or ()

    def _backup(self, value: object, path: KeyPath) -> BackupConfig | None:
        if value is None:
            return None
        data = self.mapping(value, path)
        self.keys(data, path, SECTION_KEYS["backup"], required=("exec",))
        keep = 7 if "keep" not in data else self.integer(data["keep"], (*path, "keep"), 7, 1)
        return BackupConfig(exec=self._exec_argv(data, path), keep=keep)

    def _restore(self, value: object, path: KeyPath) -> RestoreConfig | None:
        if value is None:
            return None
        data = self.mapping(value, path)
        self.keys(data, path, SECTION_KEYS["restore"], required=("exec",))
        return RestoreConfig(exec=self._exec_argv(data, path))

    def _user(self, value: object, path: KeyPath) -> str | None:
        if value is None:
            return None
        # `user: 1000` is a uid: keep it as the operator wrote it.
        if isinstance(value, int) and not isinstance(value, bool):
            return self.raw.get(path, str(value))
        return self.string(value, path) or None

    def _environment(self, value: object, path: KeyPath) -> dict[str, str]:
        return self._key_values(value, path, "variable") if value is not None else {}

    def _labels(self, value: object, path: KeyPath) -> dict[str, str]:
        labels = self._key_values(value, path, "label") if value is not None else {}
        for key in labels:
            if key.startswith(RESERVED_LABEL_PREFIX):
                self.problem(
                    (*path, key), f"labels starting with '{RESERVED_LABEL_PREFIX}' are reserved"
                )
        return labels

    def _env_file_list(self, value: object, path: KeyPath) -> list[tuple[Path, KeyPath]]:
        if value is None:
            return []
        if isinstance(value, str):
            return [(self.resolve(value), path)]
        out: list[tuple[Path, KeyPath]] = []
        for index, item in enumerate(self.seq(value, path)):
            if isinstance(item, str):
                out.append((self.resolve(item), (*path, index)))
            else:
                self.problem((*path, index), f"expected a file name, got {kind_of(item)}")
        return out

    def _read_env_file(self, file: Path, path: KeyPath) -> dict[str, str]:
        """An env file's variables (see `parse_env_file`); its bad lines are problems."""
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = os_reason(exc) if isinstance(exc, OSError) else "not UTF-8 text"
            self.problem(path, f"cannot read env file {str(file)!r}: {reason}")
            return {}
        out, bad = parse_env_file(text)
        for number, _line in bad:
            # Never echo the line: it may hold a password (this reaches logs and the API).
            self.problems.append(
                ConfigProblem(
                    format_path(path),
                    "invalid line in env file (expected KEY=VALUE; not shown, it may be secret)",
                    str(file),
                    number,
                )
            )
        return out
