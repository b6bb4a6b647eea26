"""The Compose file's top level -> our config: project, our own settings, networks, volumes,
secrets, and which services are jobs."""

from __future__ import annotations

import re
from typing import Any

from supervisor.compose.services import ServiceConverter
from supervisor.config import PROJECT_RE
from supervisor.yaml_source import KeyPath

__all__ = ["OWN_EXTENSION", "Converter"]

# A top-level extension key (Compose ignores x-*) for settings Compose has no words for.
OWN_EXTENSION = "x-ovpn-supervisor"


class Converter(ServiceConverter):
    """One conversion of one Compose file."""

    def convert(self, data: object) -> dict[str, Any]:
        top = self.mapping(data, ())
        self.check_keys(top, (), ("name", "version", "services", "networks", "volumes", "secrets"))
        if "version" in top:
            self.note("info", ("version",), "obsolete in Compose; ignored")
        project = self._project(top)
        out: dict[str, Any] = {"version": 1, "project": project}
        out.update(self._own_settings(top.get(OWN_EXTENSION)))
        services = self.mapping(top.get("services"), ("services",))
        if not services:
            self.error(("services",), "no services defined")
        networks = self._networks(top.get("networks"))
        volumes = self._volumes(top.get("volumes"))
        secrets = self._secrets(top.get("secrets"))
        if networks:
            out["networks"] = networks
        if volumes:
            # Keep Compose's Docker names, so the imported stack finds the existing data.
            for key, body in volumes.items():
                body.setdefault("name", f"{project}_{key}")
            out["volumes"] = volumes
            self.note(
                "info",
                ("volumes",),
                "volumes keep their Compose names ("
                + ", ".join(v["name"] for v in volumes.values())
                + "), so existing data is used as it is",
            )
        if secrets:
            out["secrets"] = secrets
        jobs = self._jobs(services)
        out["services"] = {
            name: self._service(name, self.mapping(body, ("services", name)), name in jobs)
            for name, body in services.items()
        }
        defaulted = [
            n
            for n, body in services.items()
            if isinstance(body, dict) and "restart" not in body and n not in jobs
        ]
        if defaulted:
            self.note(
                "info",
                ("services",),
                "no restart policy on " + ", ".join(defaulted) + ": the supervisor's default "
                "(on-failure, with backoff) applies where Compose's default is 'no'",
            )
        return out

    def _project(self, top: dict[str, Any]) -> str:
        if "name" in top:
            name = self.text(top["name"], ("name",)) or ""
        elif self.env.get("COMPOSE_PROJECT_NAME"):
            name = self.env["COMPOSE_PROJECT_NAME"]
        else:
            # Compose's rule: the folder's name, lowercased, other characters dropped.
            name = re.sub(r"[^a-z0-9_-]", "", self.source.parent.name.lower())
            self.note("info", (), f"no top-level name: project {name!r} from the folder name")
        if not PROJECT_RE.match(name):
            self.error(
                ("name",),
                f"invalid project name {name!r} (lowercase letters, digits, "
                "'_', '.', '-'; starting with a letter or digit)",
            )
        return name

    def _own_settings(self, value: object) -> dict[str, Any]:
        """`x-ovpn-supervisor: {api, defaults}`: our settings, which Compose itself ignores."""
        path: KeyPath = (OWN_EXTENSION,)
        data = self.mapping(value, path)
        for key in data:
            if key not in ("api", "defaults"):
                self.error((*path, key), "unknown key (api or defaults)")
        return {k: v for k, v in data.items() if k in ("api", "defaults")}

    def _networks(self, value: object) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, body in self.mapping(value, ("networks",)).items():
            path: KeyPath = ("networks", name)
            data = self.mapping(body, path)
            self.check_keys(data, path, ("driver", "internal", "name"))
            net: dict[str, Any] = {}
            if "internal" in data:
                net["internal"] = data["internal"]
            for key in ("driver", "name"):
                if key in data:
                    net[key] = self.text(data[key], (*path, key))
            out[name] = net
        return out

    def _volumes(self, value: object) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, body in self.mapping(value, ("volumes",)).items():
            path: KeyPath = ("volumes", name)
            data = self.mapping(body, path)
            self.check_keys(data, path, ("driver", "name"))
            driver = self.text(data["driver"], (*path, "driver")) if "driver" in data else None
            out[name] = {"driver": driver} if driver else {}
            if "name" in data:
                out[name]["name"] = self.text(data["name"], (*path, "name"))
        return out

    def _secrets(self, value: object) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, body in self.mapping(value, ("secrets",)).items():
            path: KeyPath = ("secrets", name)
            data = self.mapping(body, path)
            self.check_keys(data, path, ("file",))
            if "file" not in data:
                if "environment" in data or "external" in data:
                    continue  # already reported as unsupported
                self.error(path, "needs `file:` (only file-backed secrets are supported)")
                continue
            file = self.text(data["file"], (*path, "file"))
            if file:
                out[name] = {"file": self.host_path(file)}
        return out

    def _jobs(self, services: dict[str, Any]) -> set[str]:
        """Services others wait on with service_completed_successfully: they become jobs."""
        jobs: set[str] = set()
        for name, body in services.items():
            deps = body.get("depends_on") if isinstance(body, dict) else None
            if not isinstance(deps, dict):
                continue
            for target, dep in deps.items():
                if (
                    isinstance(dep, dict)
                    and dep.get("condition") == "service_completed_successfully"
                ):
                    target_body = services.get(target)
                    restart = target_body.get("restart") if isinstance(target_body, dict) else None
                    if restart in ("always", "unless-stopped"):
                        self.error(
                            ("services", str(target), "restart"),
                            f"'{restart}' on a service that {name} waits on with "
                            'service_completed_successfully (a one-shot job; use "no" or '
                            "on-failure)",
                        )
                    jobs.add(str(target))
        return jobs
