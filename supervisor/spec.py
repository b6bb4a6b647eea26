"""What to ask Docker for: container, network and volume specs derived from the config.

Pure functions; the Docker adapter turns these into Engine API calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from supervisor.config import ServiceConfig, StackConfig, container_hash

LABEL_PROJECT = "io.ovpn-supervisor.project"
LABEL_SERVICE = "io.ovpn-supervisor.service"
LABEL_CONFIG_HASH = "io.ovpn-supervisor.config-hash"
# After a rollback: the image ID the service stays on, and the reference it was pinned for.
LABEL_PINNED_IMAGE = "io.ovpn-supervisor.pinned-image"
LABEL_PINNED_REFERENCE = "io.ovpn-supervisor.pinned-reference"
# The image that failed and was rolled back from: later updates skip it unless asked by name.
LABEL_REJECTED_IMAGE = "io.ovpn-supervisor.rejected-image"

SECRETS_DIR = "/run/secrets"


@dataclass(frozen=True)
class Mount:
    """A volume or bind mount as Docker sees it (volume names already prefixed)."""

    source: str
    target: str
    read_only: bool


@dataclass(frozen=True)
class PublishedPort:
    """A container port published on the host."""

    container_port: int
    protocol: str
    host_ip: str
    host_port: int | None


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create one service's container."""

    name: str
    service: str
    image: str
    command: tuple[str, ...] | None
    entrypoint: tuple[str, ...] | None
    environment: Mapping[str, str]
    user: str | None
    working_dir: str | None
    labels: Mapping[str, str]
    stop_signal: str
    stop_timeout: float
    volume_mounts: tuple[Mount, ...]
    bind_mounts: tuple[Mount, ...]
    ports: tuple[PublishedPort, ...]
    networks: tuple[str, ...]
    aliases: tuple[str, ...] = field(default=())

    @property
    def config_hash(self) -> str:
        return self.labels[LABEL_CONFIG_HASH]


@dataclass(frozen=True)
class ImageChoice:
    """Run a service on this exact image ID rather than on what its reference resolves to.

    `pinned`: a rollback put it there, and it stays there (label) until an update succeeds.
    """

    image_id: str
    pinned: bool = False
    rejected: str | None = None  # with a pin: the image ID it was rolled back from


@dataclass(frozen=True)
class NetworkSpec:
    """A project network."""

    name: str
    driver: str
    internal: bool
    labels: Mapping[str, str]


@dataclass(frozen=True)
class VolumeSpec:
    """A project named volume."""

    name: str
    driver: str
    labels: Mapping[str, str]


def resource_name(project: str, name: str) -> str:
    """Docker name of a project object: `<project>-<name>`."""
    return f"{project}-{name}"


def volume_name(stack: StackConfig, key: str) -> str:
    """Docker name of the config's volume `key`."""
    volume = stack.volumes.get(key)
    return (volume.name if volume else None) or resource_name(stack.project, key)


def network_name(stack: StackConfig, key: str) -> str:
    """Docker name of the config's network `key`."""
    network = stack.networks.get(key)
    return (network.name if network else None) or resource_name(stack.project, key)


def project_labels(project: str) -> dict[str, str]:
    return {LABEL_PROJECT: project}


def container_spec(
    stack: StackConfig, service: ServiceConfig, image: ImageChoice | None = None
) -> ContainerSpec:
    """The container a service runs in, labelled with its config hash (and its pin, if any)."""
    project = stack.project
    labels = {
        **service.labels,
        LABEL_PROJECT: project,
        LABEL_SERVICE: service.name,
        # Supervision-only settings (probes, restart policy) stay out of the label, so changing
        # them on reload never recreates a container.
        LABEL_CONFIG_HASH: container_hash(stack, service),
    }
    if image is not None and image.pinned:
        labels[LABEL_PINNED_IMAGE] = image.image_id
        labels[LABEL_PINNED_REFERENCE] = service.image
        if image.rejected:
            labels[LABEL_REJECTED_IMAGE] = image.rejected
    volume_mounts: list[Mount] = []
    bind_mounts: list[Mount] = []
    for mount in service.volumes:
        if mount.kind == "volume":
            volume_mounts.append(
                Mount(volume_name(stack, mount.source), mount.target, mount.read_only)
            )
        else:
            bind_mounts.append(Mount(mount.source, mount.target, mount.read_only))
    for secret in service.secrets:
        # Compose's file-backed secrets: a read-only bind at /run/secrets/<name>.
        bind_mounts.append(
            Mount(str(stack.secrets[secret].file), f"{SECRETS_DIR}/{secret}", read_only=True)
        )
    ports = tuple(
        PublishedPort(p.container_port, p.protocol, p.host_ip or "", p.host_port)
        for p in service.ports
    )
    return ContainerSpec(
        name=resource_name(project, service.name),
        service=service.name,
        image=service.image if image is None else image.image_id,
        command=service.command,
        entrypoint=service.entrypoint,
        environment=dict(service.environment),
        user=service.user,
        working_dir=service.working_dir,
        labels=labels,
        stop_signal=service.stop.signal,
        stop_timeout=service.stop.timeout,
        volume_mounts=tuple(volume_mounts),
        bind_mounts=tuple(bind_mounts),
        ports=ports,
        networks=tuple(network_name(stack, n) for n in service.networks),
        aliases=(service.name,),
    )


def network_specs(stack: StackConfig) -> list[NetworkSpec]:
    return [
        NetworkSpec(
            network_name(stack, name),
            net.driver,
            net.internal,
            project_labels(stack.project),
        )
        for name, net in stack.networks.items()
    ]


def volume_specs(stack: StackConfig) -> list[VolumeSpec]:
    return [
        VolumeSpec(volume_name(stack, name), vol.driver, project_labels(stack.project))
        for name, vol in stack.volumes.items()
    ]


def in_order_of_first_use(
    stack: StackConfig, levels: list[list[str]]
) -> tuple[list[NetworkSpec], list[VolumeSpec]]:
    """The networks and volumes, those the earliest start level uses first (then config order).

    The engine makes networks one at a time, and each container waits only for its own: asked
    for in this order, the first services' networks come first."""
    first_use: dict[str, int] = {}
    for level, names in enumerate(levels):
        for name in names:
            service = stack.services[name]
            used = [network_name(stack, n) for n in service.networks]
            used += [volume_name(stack, m.source) for m in service.volumes if m.kind == "volume"]
            for resource in used:
                first_use.setdefault(resource, level)
    unused = len(levels)
    networks = sorted(network_specs(stack), key=lambda n: first_use.get(n.name, unused))
    volumes = sorted(volume_specs(stack), key=lambda v: first_use.get(v.name, unused))
    return networks, volumes
