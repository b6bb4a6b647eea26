"""Checks across services: references to declared names, dependencies, published ports."""

from __future__ import annotations

from supervisor.config.model import (
    Condition,
    NetworkConfig,
    SecretConfig,
    ServiceConfig,
    ServiceType,
    VolumeConfig,
)
from supervisor.config.problems import KeyPath
from supervisor.config.readers import Readers
from supervisor.graph import DependencyGraph

__all__ = ["CrossChecks"]


class CrossChecks(Readers):
    """Checks run once every service is read."""

    def _check_references(
        self,
        services: dict[str, ServiceConfig],
        networks: dict[str, NetworkConfig],
        volumes: dict[str, VolumeConfig],
        secrets: dict[str, SecretConfig],
    ) -> None:
        for name, service in services.items():
            base: KeyPath = ("services", name)
            for index, network in enumerate(service.networks):
                if network != "default" and network not in networks:
                    self.problem((*base, "networks", index), f"unknown network {network!r}")
            for index, mount in enumerate(service.volumes):
                if mount.kind == "volume" and mount.source not in volumes:
                    self.problem(
                        (*base, "volumes", index),
                        f"unknown volume {mount.source!r} (declare it under top-level volumes)",
                    )
            for index, secret in enumerate(service.secrets):
                if secret not in secrets:
                    self.problem((*base, "secrets", index), f"unknown secret {secret!r}")

    def _check_dependencies(self, services: dict[str, ServiceConfig]) -> None:
        edges: dict[str, list[str]] = {}
        for name, service in services.items():
            edges[name] = []
            for target, dep in service.depends_on.items():
                path: KeyPath = ("services", name, "depends_on", target)
                other = services.get(target)
                if target == name:
                    self.problem(path, "a service cannot depend on itself")
                    continue
                if other is None:
                    self.problem(path, f"unknown service {target!r}")
                    continue
                edges[name].append(target)
                if dep.condition is Condition.HEALTHY:
                    if other.type is ServiceType.JOB:
                        self.problem(
                            path,
                            f"condition 'healthy' but service {target!r} is a job "
                            "(use 'completed')",
                        )
                    elif other.health is None:
                        self.problem(
                            path,
                            f"condition 'healthy' but service {target!r} has no health probe",
                        )
                if dep.condition is Condition.COMPLETED and other.type is not ServiceType.JOB:
                    self.problem(path, f"condition 'completed' but service {target!r} is not a job")
        cycle = DependencyGraph(edges).find_cycle()
        if cycle is not None:
            self.problem(
                ("services", cycle[0], "depends_on", cycle[1]),
                "dependency cycle " + " -> ".join(cycle),
            )

    def _check_ports(self, services: dict[str, ServiceConfig]) -> None:
        """Two services cannot publish the same host port (Docker fails at start, not here)."""
        taken: dict[tuple[int, str], list[tuple[str | None, str]]] = {}
        wildcard = {None, "0.0.0.0", "::"}
        for name, service in services.items():
            for index, port in enumerate(service.ports):
                if port.host_port is None:
                    continue
                key = (port.host_port, port.protocol)
                for ip, owner in taken.get(key, []):
                    if ip == port.host_ip or ip in wildcard or port.host_ip in wildcard:
                        self.problem(
                            ("services", name, "ports", index),
                            f"host port {port.host_port}/{port.protocol} is already published "
                            f"by service {owner!r}",
                        )
                        break
                taken.setdefault(key, []).append((port.host_ip, name))
