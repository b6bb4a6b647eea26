"""Ports, Services and NetworkPolicies of the Kubernetes export.

Which ports others use is not declared in the config (it has no `expose`), so the export takes
the union of what it does say:

1. every container port under `ports` (published on the host, so something uses it);
2. the health probe's port (`http.port`, `tcp.port`, or the port an `http.url` reaches);
3. ports named in another service's environment or secret files: `NAME:PORT` (a URL's
   authority or a plain host:port, e.g. `SIGNING_SERVICE_URL=http://signing:8500`, or a
   database URL kept as a secret), and the `X_HOST=NAME` + `X_PORT=PORT` pair
   (`DATABASE_HOST=postgres-ct`, `DATABASE_PORT=5432`). Only port numbers are taken from a
   secret file, never any of its text.

A service with any known port gets a ClusterIP Service named like it, so its DNS name is the
one the stack used on its Docker networks. Ports published on a non-loopback host address get a
second Service, `<name>-public`, of type LoadBalancer or NodePort; loopback ones stay ClusterIP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from supervisor.config import (
    HttpProbe,
    PortMapping,
    ServiceConfig,
    TcpProbe,
    is_loopback_host,
)
from supervisor.kube_common import (
    WAITS_LABEL,
    ExportContext,
    Manifest,
    dns_label,
    internal_only,
    internal_only_selector,
    network_label,
    suffixed,
)

Port = tuple[int, str]  # (number, "tcp" | "udp")
_NODE_PORTS = range(30000, 32768)
_API_SERVER_PORTS = (443, 6443)


@dataclass(frozen=True, slots=True)
class HttpTarget:
    """Where an HTTP probe goes, seen from inside the pod; `issues` say what had to change."""

    scheme: str
    port: int
    path: str
    issues: tuple[str, ...] = ()


def http_target(service: ServiceConfig, probe: HttpProbe) -> HttpTarget:
    """The pod port, path and scheme of an HTTP probe.

    A `url` probe runs on the host, so its port is a published host port: it is mapped back to
    the container port it publishes. `scheme` is read with getattr: the key is newer than this
    exporter's first version, and absent means plain HTTP.
    """
    if probe.url is None:
        scheme = str(getattr(probe, "scheme", None) or "http")
        return HttpTarget(scheme.upper(), probe.port or 80, probe.path)
    parts = urlsplit(probe.url)
    scheme = parts.scheme or "http"
    port = parts.port or (443 if scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    published = [p for p in service.ports if p.host_port == port and p.protocol == "tcp"]
    host = parts.hostname or ""
    issues: list[str] = []
    if published:
        port = published[0].container_port
    elif is_loopback_host(host):
        issues.append(
            f"port {port} is not published by this service: the pod's port {port} is probed"
        )
    if host and not is_loopback_host(host) and host != service.name:
        issues.append(f"probes host {host!r}; Kubernetes probes the pod itself (port {port})")
    return HttpTarget(scheme.upper(), port, path, tuple(issues))


def health_port(service: ServiceConfig) -> int | None:
    """The port the health probe connects to, if it is an HTTP or TCP probe."""
    if service.health is None:
        return None
    probe = service.health.probe
    if isinstance(probe, TcpProbe):
        return probe.port
    if isinstance(probe, HttpProbe):
        return http_target(service, probe).port
    return None


def known_ports(context: ExportContext) -> dict[str, list[Port]]:
    """Per service, the ports others use (module docstring), sorted."""
    found: dict[str, set[Port]] = {name: set() for name in context.stack.services}
    for name, service in context.stack.services.items():
        found[name].update((p.container_port, p.protocol) for p in service.ports)
        port = health_port(service)
        if port is not None:
            found[name].add((port, "tcp"))
    names = tuple(context.stack.services)
    for user in context.stack.services.values():
        # Its secret files too: a database URL kept as a secret names the database's port.
        texts = [
            *user.environment.values(),
            *(
                context.secret_contents.get(s, b"").decode("utf-8", errors="replace")
                for s in user.secrets
            ),
        ]
        pairs = [p for text in texts for p in _host_ports(text, names)]
        pairs += _host_port_variables(user, names)
        for target, port in pairs:
            if target != user.name:
                found[target].add((port, "tcp"))
    return {name: sorted(ports) for name, ports in found.items()}


def _host_ports(text: str, names: tuple[str, ...]) -> list[tuple[str, int]]:
    """(service, port) for each `NAME:PORT` in `text` (a URL's authority, or host:port)."""
    out: list[tuple[str, int]] = []
    for name in names:
        pattern = rf"(?<![\w.-]){re.escape(name)}:(\d{{1,5}})(?!\d)"
        out.extend((name, int(m)) for m in re.findall(pattern, text) if 0 < int(m) < 65536)
    return out


def _host_port_variables(user: ServiceConfig, names: tuple[str, ...]) -> list[tuple[str, int]]:
    """(service, port) for each `X_HOST=NAME` with an `X_PORT=PORT` beside it."""
    out: list[tuple[str, int]] = []
    env = user.environment
    for key, value in env.items():
        if key.upper().endswith("HOST") and value in names:
            port_key = key[: -len("HOST")] + ("PORT" if key.isupper() else "port")
            port_text = env.get(port_key, "")
            if port_text.isdigit() and 0 < int(port_text) < 65536:
                out.append((value, int(port_text)))
    return out


def _port_entry(number: int, protocol: str, target: int | None = None) -> Manifest:
    return {
        "name": f"{protocol}-{number}",
        "port": number,
        "targetPort": number if target is None else target,
        "protocol": protocol.upper(),
    }


def services(context: ExportContext, ports: dict[str, list[Port]]) -> dict[str, list[Manifest]]:
    """Per service: a ClusterIP Service, and a public one for ports published beyond loopback."""
    out: dict[str, list[Manifest]] = {}
    for name, service in context.stack.services.items():
        manifests: list[Manifest] = []
        k8s_name = context.service_name(name)
        if ports[name]:
            manifests.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": context.metadata(k8s_name, name),
                    "spec": {
                        "type": "ClusterIP",
                        "selector": context.labels(name),
                        "ports": [_port_entry(n, p) for n, p in ports[name]],
                    },
                }
            )
        public = [
            (i, p) for i, p in enumerate(service.ports) if not is_loopback_host(p.host_ip or "")
        ]
        if public:
            manifests.append(_public_service(context, service, public))
        out[name] = manifests
    return out


def _public_service(
    context: ExportContext, service: ServiceConfig, public: list[tuple[int, PortMapping]]
) -> Manifest:
    expose_as = context.options.expose_as
    entries: list[Manifest] = []
    for index, mapping in public:
        where = f"services.{service.name}.ports[{index}]"
        number = mapping.host_port or mapping.container_port
        entry = _port_entry(number, mapping.protocol, mapping.container_port)
        if mapping.host_ip not in (None, "0.0.0.0", "::"):
            context.note(
                "warning",
                where,
                f"published on host address {mapping.host_ip} only; the {expose_as} Service "
                "listens wherever the cluster puts it",
            )
        if expose_as == "NodePort":
            if mapping.host_port in _NODE_PORTS:
                entry["nodePort"] = mapping.host_port
            else:
                context.note(
                    "info",
                    where,
                    f"host port {number} is outside the NodePort range 30000-32767: Kubernetes "
                    "picks the node port (kubectl get service shows it)",
                )
        entries.append(entry)
    k8s_name = context.service_name(service.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": context.metadata(suffixed(k8s_name, "public"), service.name),
        "spec": {"type": expose_as, "selector": context.labels(service.name), "ports": entries},
    }


def network_policies(context: ExportContext) -> list[Manifest]:
    """A NetworkPolicy per internal network, confining the pods that are on internal networks only.

    Docker's internal network has no route in or out; its members reach each other. A pod on
    an internal network and an ordinary one (certtransparency) is left unconfined, as on Docker
    where its other network routes. Policies add up, so a pod on two internal networks reaches
    the members of both. DNS stays reachable, as Docker's embedded DNS is.
    """
    stack = context.stack
    out: list[Manifest] = []
    for network, config in stack.networks.items():
        members = [s for s in stack.services.values() if network in s.networks]
        if not config.internal or not any(internal_only(stack, s.networks) for s in members):
            continue
        peers = {
            "podSelector": {"matchLabels": {**context.labels(), network_label(network): "true"}}
        }
        dns = {
            "to": [
                {
                    "namespaceSelector": {},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }
            ],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        }
        out.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": context.metadata(suffixed(_net_name(network), "internal")),
                "spec": {
                    "podSelector": internal_only_selector(
                        context, {network_label(network): "true"}
                    ),
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [{"from": [peers]}],
                    "egress": [{"to": [peers]}, dns],
                },
            }
        )
    waiting = [
        s.name for s in stack.services.values() if s.depends_on and internal_only(stack, s.networks)
    ]
    if out and waiting:
        out.append(_api_egress(context, waiting))
    return out


def _api_egress(context: ExportContext, waiting: list[str]) -> Manifest:
    """Let internal-only pods that wait on dependencies reach the Kubernetes API server."""
    for name in waiting:
        context.note(
            "warning",
            f"services.{name}.depends_on",
            "its dependency waits ask the Kubernetes API, so this internal-network pod may "
            f"open TCP {' and '.join(map(str, _API_SERVER_PORTS))} to any address (NetworkPolicy "
            f"{context.stack.project}-dependency-wait-api); narrow it to your API server with an "
            "ipBlock",
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": context.metadata(
            suffixed(dns_label(context.stack.project, fallback="ovpn"), "dependency-wait-api")
        ),
        "spec": {
            "podSelector": internal_only_selector(context, {WAITS_LABEL: "true"}),
            "policyTypes": ["Egress"],
            "egress": [
                {"ports": [{"protocol": "TCP", "port": port} for port in _API_SERVER_PORTS]}
            ],
        },
    }


def _net_name(network: str) -> str:
    return dns_label(network, fallback="network", letter_first=True)
