"""A service's mounts, ports and dependencies, in their short and long forms."""

from __future__ import annotations

from supervisor.config.addresses import valid_ip
from supervisor.config.keys import SECTION_KEYS
from supervisor.config.model import NAME_RE, Condition, Dependency, PortMapping, VolumeMount
from supervisor.config.problems import KeyPath
from supervisor.config.readers import Readers

__all__ = ["MountReaders"]


class MountReaders(Readers):
    """Readers for `volumes`, `ports` and `depends_on` of a service."""

    def _depends_on(self, value: object, path: KeyPath) -> dict[str, Dependency]:
        out: dict[str, Dependency] = {}
        if isinstance(value, list):
            for _, name in self._indexed_names(value, path, "service"):
                # Later checks name the dependency by key path (services.x.depends_on.db): the
                # YAML index holds each list item's line under its name as well.
                out[name] = Dependency(Condition.STARTED)
            return out
        for name, item in self.mapping(value, path).items():
            item_path = (*path, name)
            if item is None:
                out[name] = Dependency(Condition.STARTED)
            elif isinstance(item, str):
                out[name] = Dependency(self.choice(item, item_path, Condition, Condition.STARTED))
            else:
                data = self.mapping(item, item_path)
                self.keys(data, item_path, SECTION_KEYS["dependency"])
                condition = Condition.STARTED
                if data.get("condition") is not None:
                    condition = self.choice(
                        data["condition"], (*item_path, "condition"), Condition, condition
                    )
                restart = False
                if "restart" in data:
                    restart = self.boolean(data["restart"], (*item_path, "restart"))
                out[name] = Dependency(condition, restart)
        return out

    def _mounts(self, value: object, path: KeyPath) -> tuple[VolumeMount, ...]:
        mounts: list[VolumeMount] = []
        targets: dict[str, int] = {}
        for index, item in enumerate(self.seq(value, path)):
            item_path = (*path, index)
            mount = self._mount(item, item_path)
            if mount is None:
                continue
            if mount.target in targets:
                self.problem(
                    item_path,
                    f"target {mount.target!r} already mounted by item {targets[mount.target]}",
                )
                continue
            targets[mount.target] = index
            mounts.append(mount)
        return tuple(mounts)

    def _mount(self, item: object, path: KeyPath) -> VolumeMount | None:
        kind: str | None
        if isinstance(item, str):
            parts = item.split(":")
            if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
                self.problem(path, f"expected SOURCE:TARGET[:ro|rw], got {item!r}")
                return None
            source, target = parts[0], parts[1]
            mode = parts[2] if len(parts) == 3 else "rw"
            if mode not in ("ro", "rw"):
                self.problem(path, f"invalid mode {mode!r} (ro or rw)")
                return None
            read_only = mode == "ro"
            kind = None
            source_path = target_path = path
        else:
            data = self.mapping(item, path)
            self.keys(data, path, SECTION_KEYS["mount"], ("source", "target"))
            if "source" not in data or "target" not in data:
                return None
            source_path, target_path = (*path, "source"), (*path, "target")
            source = self.string(data["source"], source_path)
            target = self.string(data["target"], target_path)
            read_only = False
            if "read_only" in data:
                read_only = self.boolean(data["read_only"], (*path, "read_only"))
            kind = None
            if data.get("type") is not None:
                kind = data["type"]
                if kind not in ("volume", "bind"):
                    self.problem((*path, "type"), f"invalid value {kind!r} (one of: volume, bind)")
                    return None
            if not source or not target:
                return None
        if not target.startswith("/"):
            self.problem(target_path, f"target must be an absolute path, got {target!r}")
            return None
        looks_like_path = source.startswith(("/", ".", "~"))
        if kind is None:
            kind = "bind" if looks_like_path else "volume"
        if kind == "bind":
            return VolumeMount("bind", str(self.resolve(source)), target, read_only)
        if looks_like_path or not NAME_RE.match(source):
            self.problem(source_path, f"invalid volume name {source!r}")
            return None
        return VolumeMount("volume", source, target, read_only)

    def _ports(self, value: object, path: KeyPath) -> tuple[PortMapping, ...]:
        ports: list[PortMapping] = []
        for index, item in enumerate(self.seq(value, path)):
            port = self._port(item, (*path, index))
            if port is not None:
                ports.append(port)
        return tuple(ports)

    def _port(self, item: object, path: KeyPath) -> PortMapping | None:
        if isinstance(item, int) and not isinstance(item, bool):
            # YAML 1.1 reads unquoted 22:22 as the base-60 number 1342: use the text as written.
            item = self.raw.get(path, str(item))
        if isinstance(item, str):
            return self._port_short(item, path)
        data = self.mapping(item, path)
        self.keys(data, path, SECTION_KEYS["port"], ("target",))
        if "target" not in data:
            return None
        container = self.integer(data["target"], (*path, "target"), 0, 1, 65535)
        host: int | None = None
        published = data.get("published")
        if isinstance(published, str) and published.isdigit():
            published = int(published)
        if published is not None:
            host = self.integer(published, (*path, "published"), 0, 1, 65535)
        host_ip = self.optional(data, "host_ip", path, self.string)
        if host_ip is not None and not valid_ip(host_ip):
            self.problem((*path, "host_ip"), f"invalid IP address {host_ip!r}")
        protocol = self.optional(data, "protocol", path, self.string) or "tcp"
        if protocol not in ("tcp", "udp"):
            self.problem((*path, "protocol"), f"invalid protocol {protocol!r} (tcp or udp)")
            return None
        return PortMapping(container, host, host_ip or None, "udp" if protocol == "udp" else "tcp")

    def _port_short(self, text: str, path: KeyPath) -> PortMapping | None:
        spec, _, protocol = text.partition("/")
        if protocol not in ("", "tcp", "udp"):
            self.problem(path, f"invalid protocol {protocol!r} in {text!r} (tcp or udp)")
            return None
        host_ip: str | None = None
        if spec.startswith("["):  # [::1]:8080:80
            ip, bracket, spec = spec[1:].partition("]")
            if not bracket or not spec.startswith(":"):
                self.problem(path, f"invalid port mapping {text!r}")
                return None
            host_ip, spec = ip, spec[1:]
            parts = spec.split(":")
            if len(parts) != 2:
                self.problem(path, f"invalid port mapping {text!r}")
                return None
            parts.insert(0, host_ip)
        else:
            parts = spec.split(":")
        if len(parts) > 3:
            self.problem(
                path, f"invalid port mapping {text!r} (use [[HOST_IP:]HOST:]CONTAINER[/udp])"
            )
            return None
        if len(parts) == 3:
            host_ip = parts.pop(0)
            if not valid_ip(host_ip):
                self.problem(path, f"invalid IP address {host_ip!r} in {text!r}")
                return None
        numbers: list[int | None] = []
        for part in parts:
            if part == "" and len(numbers) == 0 and len(parts) == 2:
                numbers.append(None)  # "127.0.0.1::80": Docker picks the host port
                continue
            if not part.isdigit():
                self.problem(path, f"invalid port {part!r} in {text!r}")
                return None
            number = int(part)
            if not 1 <= number <= 65535:
                self.problem(path, f"port {number} out of range (1-65535) in {text!r}")
                return None
            numbers.append(number)
        container = numbers[-1]
        assert container is not None
        host = numbers[0] if len(numbers) == 2 else None
        return PortMapping(container, host, host_ip or None, "udp" if protocol == "udp" else "tcp")
