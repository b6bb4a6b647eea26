"""What the Kubernetes export's parts share: options, the report, names and labels.

Kubernetes names are stricter than the config's (DNS labels: lowercase, no '_' or '.'), so
every name goes through `dns_label`, and a name that had to change is reported once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from supervisor.config import StackConfig

Manifest = dict[str, Any]
NoteLevel = Literal["info", "warning"]
ExposeAs = Literal["LoadBalancer", "NodePort"]

# Our own label keys under a domain prefix (Kubernetes reserves unprefixed keys for users).
PART_OF = "app.kubernetes.io/part-of"
NAME = "app.kubernetes.io/name"
NETWORK_PREFIX = "network.ovpn-supervisor.io/"
WAITS_LABEL = "ovpn-supervisor.io/waits-for-dependencies"
WAIT_ANNOTATION = "ovpn-supervisor.io/wait-for"
# kubectl and a POSIX shell: the dependency waits loop over `kubectl wait` (registry.k8s.io's
# kubectl image has no shell). kustomization.yaml lists it under `images` to pin or mirror it.
WAIT_IMAGE = "docker.io/bitnami/kubectl"
WAIT_IMAGE_TAG = "latest"
MAX_NAME = 63
# A secret value shorter than this is not looked for inside other text: it would be found there
# by chance.
MIN_SECRET_LENGTH = 6
_LABEL_VALUE_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$")
_QUALIFIED_NAME_RE = re.compile(
    r"^(?:[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$"
)


class ExportError(Exception):
    """The config cannot be exported as it is (e.g. two services map to one Kubernetes name)."""


@dataclass(frozen=True, slots=True)
class ExportOptions:
    """The command line's choices."""

    namespace: str | None = None
    expose_as: ExposeAs = "LoadBalancer"
    include_secret_values: bool = False


@dataclass(frozen=True, slots=True)
class ExportNote:
    """One thing the export could not carry over exactly, located by config key path."""

    level: NoteLevel
    path: str
    message: str

    def __str__(self) -> str:
        subject = f"{self.path}: " if self.path else ""
        return f"{self.level}: {subject}{self.message}"


@dataclass
class ExportContext:
    """One export: the config, the options, the names chosen and the notes so far."""

    stack: StackConfig
    options: ExportOptions
    # The secret files' contents: written only with --include-secret-values, and otherwise
    # used to recognise an environment variable that carries one of them.
    secret_contents: Mapping[str, bytes] = field(default_factory=dict)
    notes: list[ExportNote] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)

    def note(self, level: NoteLevel, path: str, message: str) -> None:
        self.notes.append(ExportNote(level, path, message))

    @property
    def namespace(self) -> str:
        return self.options.namespace or dns_label(self.stack.project, fallback="ovpn")

    @property
    def project_label(self) -> str:
        return label_value(self.stack.project)

    def service_name(self, service: str) -> str:
        """The service's Kubernetes name (Deployment, Service, DNS name); chosen once."""
        return self.names[service]

    def labels(self, service: str | None = None) -> dict[str, str]:
        out = {PART_OF: self.project_label}
        if service is not None:
            out[NAME] = label_value(self.service_name(service))
        return out

    def metadata(
        self, name: str, service: str | None = None, *, namespaced: bool = True
    ) -> Manifest:
        meta: Manifest = {"name": name}
        if namespaced:
            meta["namespace"] = self.namespace
        meta["labels"] = self.labels(service)
        return meta


def check_namespace(context: ExportContext) -> None:
    """An explicit --namespace must be a valid name; a project name is made one."""
    given = context.options.namespace
    if given is not None and dns_label(given, fallback="") != given:
        raise ExportError(
            f"--namespace {given!r}: not a namespace name (lowercase letters, digits and '-', "
            "at most 63, starting and ending with a letter or digit)"
        )


def assign_service_names(context: ExportContext) -> None:
    """Give every service a distinct DNS-1035 name; report those that differ from the config."""
    taken: dict[str, str] = {}
    for service in context.stack.services:
        name = dns_label(service, fallback="service", letter_first=True)
        if name in taken:
            raise ExportError(
                f"services.{service}: its Kubernetes name {name!r} is the same as that of "
                f"service {taken[name]!r}; rename one of them"
            )
        taken[name] = service
        context.names[service] = name
        if name != service:
            context.note(
                "warning",
                f"services.{service}",
                f"named {name!r} in Kubernetes (names are lowercase DNS labels): other "
                f"services reach it as {name!r}, not {service!r}",
            )


def dns_label(text: str, *, fallback: str, letter_first: bool = False) -> str:
    """`text` as an RFC 1123 label (lowercase alphanumerics and '-', at most 63 characters).

    A shortened name keeps a hash of the original, so two long names stay distinct.
    """
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if letter_first and name and not name[0].isalpha():
        name = f"s-{name}"
    if not name:
        name = fallback
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        name = f"{name[: MAX_NAME - 9].rstrip('-')}-{digest}"
    return name


def suffixed(name: str, suffix: str) -> str:
    """`name-suffix` within 63 characters (the name is shortened, never the suffix)."""
    return f"{name[: MAX_NAME - len(suffix) - 1].rstrip('-')}-{suffix}"


def label_value(text: str) -> str:
    """`text` made a valid label value (alphanumerics, '-', '_', '.'; at most 63)."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:MAX_NAME].strip("-_.")
    return value if _LABEL_VALUE_RE.match(value) else ""


def is_qualified_name(key: str) -> bool:
    """A valid label or annotation key (`[prefix/]name`)."""
    return bool(_QUALIFIED_NAME_RE.match(key)) and len(key.rpartition("/")[2]) <= MAX_NAME


def network_label(network: str) -> str:
    """The pod label that says the pod is on `network`."""
    return NETWORK_PREFIX + label_value(network)


def internal_only(stack: StackConfig, networks: tuple[str, ...]) -> bool:
    """True when every network the service is on is internal (no route in or out)."""
    return bool(networks) and all(
        stack.networks[n].internal for n in networks if n in stack.networks
    )


def non_internal_networks(stack: StackConfig) -> list[str]:
    return [name for name, net in stack.networks.items() if not net.internal]


def internal_only_selector(context: ExportContext, match: Mapping[str, str]) -> Manifest:
    """A pod selector for `match` restricted to pods on no non-internal network."""
    selector: Manifest = {"matchLabels": {**context.labels(), **match}}
    others = non_internal_networks(context.stack)
    if others:
        selector["matchExpressions"] = [
            {"key": network_label(n), "operator": "DoesNotExist"} for n in others
        ]
    return selector
