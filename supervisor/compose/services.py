"""One Compose service -> ours: environment, env files, mounts, ports, dependencies."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from supervisor.compose.base import WHY
from supervisor.compose.health import HealthConverter
from supervisor.compose.interpolation import InterpolationError, read_dotenv
from supervisor.config import parse_env_file
from supervisor.yaml_source import KeyPath

__all__ = ["ServiceConverter"]

_CONDITIONS = {
    "service_started": "started",
    "service_healthy": "healthy",
    "service_completed_successfully": "completed",
}
_PULL = {
    "missing": "missing",
    "if_not_present": "missing",
    "always": "always",
    "never": "never",
}
# Why common keys cannot be honoured, so the report says more than "unsupported".
# Mount mode flags that change nothing on a Linux host.
_NOOP_MOUNT_FLAGS = {"cached", "delegated", "consistent"}


class ServiceConverter(HealthConverter):
    """Converts an entry of `services`."""

    _SERVICE_KEYS = (
        "image", "build", "command", "entrypoint", "environment", "env_file", "volumes", "networks",
        "ports", "expose", "user", "working_dir", "labels", "restart", "depends_on",
        "healthcheck", "stop_signal", "stop_grace_period", "secrets", "pull_policy",
    )  # fmt: skip

    def _service(self, name: str, data: dict[str, Any], is_job: bool) -> dict[str, Any]:
        path: KeyPath = ("services", name)
        self.check_keys(data, path, self._SERVICE_KEYS)
        out: dict[str, Any] = {}
        if "image" in data:
            out["image"] = image = self.text(data["image"], (*path, "image"))
            if "build" in data:
                self.note(
                    "warning",
                    (*path, "build"),
                    f"ignored: the image {image} is run as it is (build it beforehand, "
                    "e.g. with `docker compose build`)",
                )
        elif "build" in data:
            self.error((*path, "build"), f"{WHY['build']} (no image given)")
        else:
            self.error((*path, "image"), "missing (the supervisor runs images)")
        if is_job:
            out["type"] = "job"
            self.note("info", path, "becomes a job: others wait for it to complete")
        readers: dict[str, tuple[str, Callable[[Any, KeyPath], Any]]] = {
            "command": ("command", self.words),
            "entrypoint": ("entrypoint", self.words),
            "environment": ("environment", self._environment),
            "env_file": ("env_file", self._env_files),
            "volumes": ("volumes", self._mounts),
            "networks": ("networks", self._service_networks),
            "ports": ("ports", self._ports),
            "user": ("user", self.text),
            "working_dir": ("working_dir", self.text),
            "labels": ("labels", self._labels),
            "depends_on": ("depends_on", self._depends_on),
            "restart": ("restart", self._restart),
            "secrets": ("secrets", self._service_secrets),
            "pull_policy": ("pull", self._pull),
        }
        for key, (target, read) in readers.items():
            if data.get(key) is not None:
                value = read(data[key], (*path, key))
                if value is not None:
                    out[target] = value
        if out.get("env_file"):
            pinned = self._env_file_differences(
                out["env_file"], (*path, "env_file"), out.get("environment", {})
            )
            if pinned:
                out["environment"] = {**pinned, **out.get("environment", {})}
        if data.get("expose") is not None:
            self._expose(data["expose"], (*path, "expose"))
        if data.get("healthcheck") is not None:
            health = self._health(data["healthcheck"], (*path, "healthcheck"))
            if health is not None and is_job:
                self.note(
                    "info", (*path, "healthcheck"), "dropped: a job's exit code is its result"
                )
            elif health is not None:
                out["health"] = health
        stop: dict[str, Any] = {}
        if data.get("stop_signal") is not None:
            stop["signal"] = self.text(data["stop_signal"], (*path, "stop_signal"))
        if data.get("stop_grace_period") is not None:
            stop["timeout"] = self.duration(data["stop_grace_period"], (*path, "stop_grace_period"))
        if stop:
            out["stop"] = stop
        return out

    def _key_values(self, value: object, path: KeyPath, *, passthrough: bool) -> dict[str, str]:
        """A map or a KEY=VALUE list; a bare KEY (passthrough) takes the variable's value."""
        pairs: list[tuple[str, object, KeyPath]] = []
        if isinstance(value, list):
            for index, item in enumerate(value):
                if not isinstance(item, str):
                    self.error((*path, index), f"expected 'KEY=VALUE', got {item!r}")
                    continue
                key, sep, text = item.partition("=")
                pairs.append((key, text if sep else None, (*path, index)))
        else:
            pairs = [(k, v, (*path, k)) for k, v in self.mapping(value, path).items()]
        out: dict[str, str] = {}
        for key, item, item_path in pairs:
            if item is None and passthrough:
                if key in self.env:
                    out[key] = self.env[key]
                else:
                    self.note("warning", item_path, f"{key} is not set here; left out")
                continue
            value = self.text(item, item_path) if item is not None else ""
            if value is not None:
                out[key] = value
        return out

    def _environment(self, value: object, path: KeyPath) -> dict[str, str]:
        return self._key_values(value, path, passthrough=True)

    def _labels(self, value: object, path: KeyPath) -> dict[str, str]:
        return self._key_values(value, path, passthrough=False)

    def _pull(self, value: object, path: KeyPath) -> str | None:
        policy = self.text(value, path)
        if policy in _PULL:
            return _PULL[policy]
        if policy is not None:
            self.unsupported(path, f"{policy!r}; the supervisor knows missing, always and never")
        return None

    def _expose(self, value: object, path: KeyPath) -> None:
        ports = [self.text(p, (*path, i)) for i, p in enumerate(self.seq(value, path))]
        self.note(
            "info",
            path,
            f"{', '.join(p for p in ports if p)} not carried over: exposed-only ports need "
            "no publishing; services on a shared network reach each other's ports",
        )

    def _env_files(self, value: object, path: KeyPath) -> list[str]:
        items = [value] if isinstance(value, str) else self.seq(value, path)
        out: list[str] = []
        for index, item in enumerate(items):
            item_path = path if isinstance(value, str) else (*path, index)
            required = True
            if isinstance(item, dict):
                self.check_keys(item, item_path, ("path", "required"))
                required = item.get("required", True) is not False
            text = self.text(item.get("path") if isinstance(item, dict) else item, item_path)
            if not text:
                continue
            file = self.host_path(text)
            if not required and not (self.out_dir / file).exists():
                self.note("info", item_path, f"optional env file {text} is absent; left out")
                continue
            out.append(file)
        return out

    def _env_file_differences(
        self, files: list[str], path: KeyPath, explicit: Mapping[str, str]
    ) -> dict[str, str]:
        """Variables Compose reads differently from our verbatim env-file reader, with
        Compose's value: `${VAR:-default}` expanded, inline comments and escapes.

        Written into `environment` (which wins over env files), so the container gets what
        Compose would give it; `$(cat …)` and other text without a variable stay as written.
        """
        compose_values: dict[str, str] = {}
        verbatim: dict[str, str] = {}
        for file in files:
            full = self.out_dir / file
            try:
                text = full.read_text(encoding="utf-8")
                compose_values.update(read_dotenv(full, self.env))
            except (OSError, UnicodeDecodeError):
                continue  # validation reports an unreadable env file with its path
            except InterpolationError as exc:
                self.error(path, str(exc))
                continue
            verbatim.update(parse_env_file(text)[0])
        pinned = {
            key: value
            for key, value in compose_values.items()
            if verbatim.get(key) != value and key not in explicit
        }
        if pinned:
            self.note(
                "info",
                path,
                f"{', '.join(pinned)} set in environment to the value Compose expands from "
                "the env file (which is itself read verbatim, like `docker run --env-file`)",
            )
        return pinned

    def _mounts(self, value: object, path: KeyPath) -> list[Any]:
        out: list[Any] = []
        for index, item in enumerate(self.seq(value, path)):
            mount = self._mount(item, (*path, index))
            if mount is not None:
                out.append(mount)
        return out

    def _mount(self, item: object, path: KeyPath) -> str | dict[str, Any] | None:
        if isinstance(item, dict):
            data = self.mapping(item, path)
            self.check_keys(data, path, ("type", "source", "target", "read_only"))
            kind = self.text(data.get("type", "volume"), (*path, "type"))
            if kind not in ("volume", "bind"):
                self.unsupported((*path, "type"), f"{kind!r} mounts; volume and bind are")
                return None
            if "source" not in data or "target" not in data:
                self.error(path, "needs source and target (anonymous volumes are not supported)")
                return None
            source = self.text(data["source"], (*path, "source")) or ""
            target = self.text(data["target"], (*path, "target")) or ""
            read_only = data.get("read_only") is True
        else:
            text = self.text(item, path)
            if text is None:
                return None
            parts = text.split(":")
            if len(parts) == 1:
                self.unsupported(path, f"anonymous volume {text!r}; name it (NAME:{text})")
                return None
            if len(parts) > 3:
                self.error(path, f"expected SOURCE:TARGET[:MODE], got {text!r}")
                return None
            source, target = parts[0], parts[1]
            flags = set(parts[2].split(",")) if len(parts) == 3 else set()
            read_only = "ro" in flags
            if flags & _NOOP_MOUNT_FLAGS:
                self.note("info", path, "cached/delegated/consistent do nothing on Linux; dropped")
            unknown = flags - _NOOP_MOUNT_FLAGS - {"ro", "rw"}
            if unknown:
                self.unsupported(path, f"mount option(s) {', '.join(sorted(unknown))}")
            kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
        if kind == "bind":
            source = self.host_path(source)
        if ":" in source or ":" in target:
            return {"type": kind, "source": source, "target": target, "read_only": read_only}
        return f"{source}:{target}" + (":ro" if read_only else "")

    def _service_networks(self, value: object, path: KeyPath) -> list[str]:
        if isinstance(value, list):
            return [t for i, n in enumerate(value) if (t := self.text(n, (*path, i)))]
        out: list[str] = []
        for name, body in self.mapping(value, path).items():
            self.check_keys(self.mapping(body, (*path, name)), (*path, name), ())
            out.append(name)
        return out

    def _ports(self, value: object, path: KeyPath) -> list[Any]:
        out: list[Any] = []
        for index, item in enumerate(self.seq(value, path)):
            item_path = (*path, index)
            if isinstance(item, dict):
                data = self.mapping(item, item_path)
                self.check_keys(data, item_path, ("target", "published", "host_ip", "protocol"))
                port: dict[str, Any] = {}
                for key in ("target", "published"):
                    if data.get(key) is not None:
                        text = self.text(data[key], (*item_path, key))
                        port[key] = int(text) if text and text.isdigit() else text
                for key in ("host_ip", "protocol"):
                    if data.get(key) is not None:
                        port[key] = self.text(data[key], (*item_path, key))
                out.append(port)
                continue
            text = self.text(item, item_path)
            if text is None:
                continue
            if re.search(r"\d-\d", text):
                self.unsupported(item_path, f"port range {text!r}; list each port")
                continue
            out.append(text)
        return out

    def _depends_on(self, value: object, path: KeyPath) -> dict[str, Any]:
        if isinstance(value, list):
            return {str(n): "started" for n in value}
        out: dict[str, Any] = {}
        for name, body in self.mapping(value, path).items():
            item_path = (*path, name)
            data = self.mapping(body, item_path)
            self.check_keys(data, item_path, ("condition", "restart", "required"))
            if data.get("required", True) is not True:
                self.unsupported((*item_path, "required"), "every dependency is required")
            condition = data.get("condition", "service_started")
            if condition not in _CONDITIONS:
                self.error(
                    (*item_path, "condition"),
                    f"invalid value {condition!r} (one of: {', '.join(_CONDITIONS)})",
                )
                continue
            if data.get("restart") is True:
                out[name] = {"condition": _CONDITIONS[condition], "restart": True}
            else:
                out[name] = _CONDITIONS[condition]
        return out

    def _restart(self, value: object, path: KeyPath) -> dict[str, Any] | None:
        # YAML 1.1 reads a bare `no` as false.
        text = "no" if value is False else self.text(value, path)
        if text in ("no", "always", "unless-stopped", "on-failure"):
            return {"policy": text}
        if text is not None and (match := re.fullmatch(r"on-failure:(\d+)", text)):
            self.note("info", path, f"at most {match.group(1)} restarts within 10m, then failed")
            return {"policy": "on-failure", "limit": {"count": int(match.group(1))}}
        if text is not None:
            self.error(path, f"invalid value {text!r} (no, always, on-failure[:N], unless-stopped)")
        return None

    def _service_secrets(self, value: object, path: KeyPath) -> list[str]:
        out: list[str] = []
        for index, item in enumerate(self.seq(value, path)):
            item_path = (*path, index)
            if isinstance(item, dict):
                data = self.mapping(item, item_path)
                self.check_keys(data, item_path, ("source", "target"))
                source = self.text(data.get("source"), (*item_path, "source"))
                target = data.get("target")
                if target not in (None, source, f"/run/secrets/{source}"):
                    self.unsupported(
                        (*item_path, "target"), "secrets are mounted at /run/secrets/<name>"
                    )
            else:
                source = self.text(item, item_path)
            if source:
                out.append(source)
        return out
