"""The stack-wide sections: networks, volumes, secrets, api, systemd, defaults, update."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from supervisor.config.addresses import valid_listen
from supervisor.config.files import reason as os_reason
from supervisor.config.keys import SECTION_KEYS, TIMING_KEYS
from supervisor.config.model import (
    DEFAULT_EVENTS_KEEP,
    DEFAULT_LISTEN,
    DEFAULT_SOCKET_MODE,
    MIN_TOKEN_LENGTH,
    NAME_RE,
    VOLUME_NAME_RE,
    ApiConfig,
    Defaults,
    HealthTiming,
    NetworkConfig,
    PullPolicy,
    RestartConfig,
    RestartPolicy,
    SecretConfig,
    StopConfig,
    SystemdConfig,
    UpdateSchedule,
    VolumeConfig,
)
from supervisor.config.problems import KeyPath
from supervisor.config.readers import Readers

__all__ = ["SectionReaders"]

_T = TypeVar("_T")


class SectionReaders(Readers):
    """Readers for the sections outside `services` and those services share with `defaults`."""

    def _named(
        self, data: dict[str, Any], section: str, read: Callable[[dict[str, Any], KeyPath], _T]
    ) -> dict[str, _T]:
        out: dict[str, _T] = {}
        for name, body in self.mapping(data.get(section), (section,)).items():
            path: KeyPath = (section, name)
            if not NAME_RE.match(name):
                self.problem(path, f"invalid name {name!r}")
            out[name] = read(self.mapping(body, path), path)
        return out

    def _network(self, data: dict[str, Any], path: KeyPath) -> NetworkConfig:
        self.keys(data, path, SECTION_KEYS["network"])
        internal = self.optional(data, "internal", path, self.boolean)
        driver = self.optional(data, "driver", path, self.string)
        name = self.optional(data, "name", path, self.string)
        if name is not None and not NAME_RE.match(name):
            self.problem((*path, "name"), f"invalid Docker network name {name!r}")
        return NetworkConfig(internal=bool(internal), driver=driver or "bridge", name=name or None)

    def _volume(self, data: dict[str, Any], path: KeyPath) -> VolumeConfig:
        self.keys(data, path, SECTION_KEYS["volume"])
        driver = self.optional(data, "driver", path, self.string)
        name = self.optional(data, "name", path, self.string)
        if name is not None and not VOLUME_NAME_RE.match(name):
            self.problem((*path, "name"), f"invalid Docker volume name {name!r}")
        return VolumeConfig(driver=driver or "local", name=name or None)

    def _secret(self, data: dict[str, Any], path: KeyPath) -> SecretConfig:
        self.keys(data, path, SECTION_KEYS["secret"], required=("file",))
        file_value = self.optional(data, "file", path, self.string)
        if not file_value:
            return SecretConfig(file=self.base_dir)
        file = self.resolve(file_value)
        try:
            digest = hashlib.sha256(file.read_bytes()).hexdigest()
        except OSError as exc:
            self.problem(
                (*path, "file"), f"cannot read secret file {str(file)!r}: {os_reason(exc)}"
            )
            digest = None
        return SecretConfig(file=file, digest=digest)

    def _api(self, data: dict[str, Any]) -> ApiConfig:
        path: KeyPath = ("api",)
        self.keys(data, path, SECTION_KEYS["api"])
        listen = self.optional(data, "listen", path, self.string)
        if listen is not None and not valid_listen(listen):
            self.problem(
                (*path, "listen"),
                f"invalid address {listen!r} (use HOST:PORT or unix:///absolute/path)",
            )
            listen = None
        token = self.optional(data, "token_file", path, self.string)
        hosts = tuple(
            host.lower()
            for index, host in enumerate(
                self.seq(data.get("allowed_hosts"), (*path, "allowed_hosts"))
            )
            if self._host_name(host, (*path, "allowed_hosts", index))
        )
        api = ApiConfig(
            listen=listen or DEFAULT_LISTEN,
            token_file=self.resolve(token) if token else None,
            events_keep=self._events_keep(data.get("events"), (*path, "events")),
            allowed_hosts=hosts,
        )
        if not api.loopback and api.token_file is None:
            # Anyone on the network could restart the VPN stack: never without a token.
            self.problem(
                (*path, "listen"),
                f"{api.listen!r} is not a loopback address: set api.token_file as well",
            )
        mode, group = data.get("socket_mode"), data.get("socket_group")
        if api.unix_path is None:
            for key in ("socket_mode", "socket_group"):
                if data.get(key) is not None:
                    self.problem((*path, key), "applies only to a unix:///path listen address")
            return api
        return replace(
            api,
            socket_mode=self._socket_mode(mode, (*path, "socket_mode")),
            socket_group=None
            if group is None
            else self.scalar_text(group, (*path, "socket_group")),
        )

    def _events_keep(self, value: object, path: KeyPath) -> int:
        """`api.events: {keep: N}`: how many events the history holds."""
        if value is None:
            return DEFAULT_EVENTS_KEEP
        data = self.mapping(value, path)
        self.keys(data, path, SECTION_KEYS["events"])
        keep = data.get("keep")
        if keep is None:
            return DEFAULT_EVENTS_KEEP
        return self.integer(keep, (*path, "keep"), DEFAULT_EVENTS_KEEP, 1, 100_000)

    def _socket_mode(self, value: object, path: KeyPath) -> int:
        """An octal permission such as "0660" (quoted or not); default 0660."""
        if value is None:
            return DEFAULT_SOCKET_MODE
        text = self.scalar_text(value, path) or ""
        if not re.fullmatch(r"0?[0-7]{3}", text):
            self.problem(path, f"invalid mode {text!r} (use an octal mode such as 0660)")
            return DEFAULT_SOCKET_MODE
        mode = int(text, 8)
        if mode & 0o002:
            # The socket needs no token: whoever may write to it may restart the VPN stack.
            self.problem(path, f"mode {text} lets every local user control the daemon (use 0660)")
            return DEFAULT_SOCKET_MODE
        return mode

    def _host_name(self, value: object, path: KeyPath) -> bool:
        if isinstance(value, str) and re.fullmatch(
            r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", value
        ):
            return True
        self.problem(path, f"expected a host name such as vpn.example.org, got {value!r}")
        return False

    def _check_token_file(self, file: Path) -> str | None:
        """The token file exists, is private to its owner and holds a token worth the name.

        Checked by the daemon's full parse (`check`, start, reload), not by the CLI's reading
        of the `api` section: an operator's CLI may not be allowed to read the file.
        """
        path: KeyPath = ("api", "token_file")
        try:
            mode = file.stat().st_mode
            token = file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = os_reason(exc) if isinstance(exc, OSError) else "not UTF-8 text"
            self.problem(path, f"cannot read token file {str(file)!r}: {reason}")
            return None
        if mode & 0o077:
            self.problem(
                path,
                f"token file {str(file)!r} is open to group or others "
                f"(mode {mode & 0o777:04o}; chmod 600 it)",
            )
        if len(token) < MIN_TOKEN_LENGTH:
            self.problem(
                path,
                f"the token in {str(file)!r} is {len(token)} characters long; use at least "
                f"{MIN_TOKEN_LENGTH} (e.g. `openssl rand -hex 32`)",
            )
        return hashlib.sha256(token.encode()).hexdigest()

    def _systemd(self, data: dict[str, Any]) -> SystemdConfig:
        path: KeyPath = ("systemd",)
        self.keys(data, path, SECTION_KEYS["systemd"])
        base = SystemdConfig()
        return SystemdConfig(
            startup_timeout=self._dur(data, "startup_timeout", path, base.startup_timeout)
        )

    def _defaults(self, data: dict[str, Any]) -> Defaults:
        path: KeyPath = ("defaults",)
        self.keys(data, path, SECTION_KEYS["defaults"])
        health_data = self.mapping(data.get("health"), (*path, "health"))
        self.keys(health_data, (*path, "health"), TIMING_KEYS)
        health = self._timing(health_data, (*path, "health"), HealthTiming())
        restart = self._restart(data.get("restart"), (*path, "restart"), RestartConfig(), False)
        stop = self._stop(
            self.mapping(data.get("stop"), (*path, "stop")), (*path, "stop"), StopConfig()
        )
        pull = PullPolicy.MISSING
        if data.get("pull") is not None:
            pull = self.choice(data["pull"], (*path, "pull"), PullPolicy, pull)
        return Defaults(health=health, restart=restart, stop=stop, pull=pull)

    def _timing(self, data: dict[str, Any], path: KeyPath, base: HealthTiming) -> HealthTiming:
        """The timing keys of `data`, each defaulting to `base`'s."""
        return HealthTiming(
            interval=self._dur(data, "interval", path, base.interval),
            timeout=self._dur(data, "timeout", path, base.timeout),
            retries=self.integer(data["retries"], (*path, "retries"), base.retries, low=1)
            if data.get("retries") is not None
            else base.retries,
            start_period=self._dur(data, "start_period", path, base.start_period, positive=False),
            start_interval=self._dur(data, "start_interval", path, base.start_interval),
        )

    def _restart(
        self, value: object, path: KeyPath, base: RestartConfig, is_job: bool
    ) -> RestartConfig:
        # Compose's `restart: always` string form is shorthand for {policy: always}.
        if isinstance(value, str | bool):
            value = {"policy": value}
        data = self.mapping(value, path)
        self.keys(data, path, SECTION_KEYS["restart"])
        policy = RestartPolicy.NO if is_job else base.policy
        if data.get("policy") is not None:
            policy = self.choice(data["policy"], (*path, "policy"), RestartPolicy, policy)
        backoff = self.mapping(data.get("backoff"), (*path, "backoff"))
        self.keys(backoff, (*path, "backoff"), SECTION_KEYS["backoff"])
        limit = self.mapping(data.get("limit"), (*path, "limit"))
        self.keys(limit, (*path, "limit"), SECTION_KEYS["limit"])
        initial = self._dur(backoff, "initial", (*path, "backoff"), base.backoff_initial)
        maximum = self._dur(backoff, "max", (*path, "backoff"), base.backoff_max)
        first = self._dur(backoff, "first", (*path, "backoff"), base.backoff_first, positive=False)
        if maximum < initial:
            self.problem(
                (*path, "backoff", "max" if "max" in backoff else "initial"),
                f"backoff max ({maximum:g}s) is shorter than initial ({initial:g}s)",
            )
        count = base.limit_count
        if limit.get("count") is not None:
            count = self.integer(limit["count"], (*path, "limit", "count"), count, low=1)
        return RestartConfig(
            policy=policy,
            backoff_initial=initial,
            backoff_max=maximum,
            backoff_first=first,
            limit_count=count,
            limit_window=self._dur(limit, "window", (*path, "limit"), base.limit_window),
            reset_after=self._dur(data, "reset_after", path, base.reset_after),
        )

    def _stop(self, data: dict[str, Any], path: KeyPath, base: StopConfig) -> StopConfig:
        self.keys(data, path, SECTION_KEYS["stop"])
        sig = base.signal
        if data.get("signal") is not None:
            sig = self._signal(data["signal"], (*path, "signal"), sig)
        timeout = self._dur(data, "timeout", path, base.timeout, positive=False)
        return StopConfig(signal=sig, timeout=timeout)

    def _update(self, value: object, path: KeyPath) -> UpdateSchedule | None:
        """`update: {every: 24h, at: "04:00", pull: true}`; absent means no automatic updates."""
        if value is None:
            return None
        data = self.mapping(value, path)
        self.keys(data, path, SECTION_KEYS["update"], required=("every",))
        every = self.duration(data["every"], (*path, "every"), 86400.0) if "every" in data else 0
        at = None
        if data.get("at") is not None:
            text = self.scalar_text(data["at"], (*path, "at")) or ""
            match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text)
            if match is None:
                self.problem(
                    (*path, "at"), f'invalid time of day {text!r} (use HH:MM, e.g. "04:00")'
                )
            else:
                at = (int(match[1]), int(match[2]))
        pull = self.optional(data, "pull", path, self.boolean)
        return UpdateSchedule(every=every, at=at, pull=True if pull is None else pull)
