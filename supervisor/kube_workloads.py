"""Services and jobs as Kubernetes workloads: containers, probes, env, secrets, volumes, waits.

A long-running service becomes a Deployment (one replica), or a StatefulSet when it mounts a
named volume: the StatefulSet never runs two pods on one volume at once, and a volume used by
that service alone becomes its PersistentVolumeClaim template (PostgreSQL keeps its data). A
volume shared with another service or a job is one PersistentVolumeClaim mounted by all.

`depends_on` becomes init containers that ask the Kubernetes API (kubectl wait) until the
dependency meets its condition: *completed* is the Job's Complete condition, *healthy* its pods'
Ready condition (the readiness probe is the health probe), *started* a pod in phase Running.
Only the init containers get the API token (a projected volume); the app container does not.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from pathlib import PurePosixPath

from supervisor.config import (
    Condition,
    ExecProbe,
    HealthConfig,
    HttpProbe,
    PullPolicy,
    ServiceConfig,
    ServiceType,
    TcpProbe,
)
from supervisor.kube_common import (
    MIN_SECRET_LENGTH,
    NAME,
    PART_OF,
    WAIT_IMAGE,
    WAIT_IMAGE_TAG,
    ExportContext,
    Manifest,
    dns_label,
    suffixed,
)
from supervisor.kube_network import http_target

DEFAULT_STORAGE = "1Gi"
SECRETS_DIR = "/run/secrets"
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
WAIT_TIMEOUT = "60s"  # one `kubectl wait`; the loop around it waits as long as it takes
PULL_POLICIES = {
    PullPolicy.MISSING: "IfNotPresent",
    PullPolicy.ALWAYS: "Always",
    PullPolicy.NEVER: "Never",
}
_SECRET_NAME_RE = re.compile(
    r"PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|CREDENTIAL|PRIVATE_?KEY|API_?KEY|ACCESS_?KEY|"
    r"(?:^|_)KEY$",
    re.IGNORECASE,
)
# Names a secret-looking name can end with and still not hold one (SECRET_KEY_FILE, TOKEN_URL).
_REFERENCE_RE = re.compile(r"_(?:FILE|PATH|DIR|URL|URI|HOST|PORT|NAME)$", re.IGNORECASE)
_URL_CREDENTIALS_RE = re.compile(r"://[^/@\s:]+:[^/@\s]+@")
_CONFIGMAP_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")
_SHELLS = {"sh", "bash", "ash", "dash"}
_TOOLS = {"curl", "wget", "nc", "python", "python3"}


def seconds(value: float) -> int:
    """Kubernetes counts probe and grace times in whole seconds (at least 1)."""
    return max(1, math.ceil(value))


def secret_name(name: str) -> str:
    """The Kubernetes Secret holding the config's file-backed secret `name`."""
    return dns_label(name, fallback="secret")


def volume_users(context: ExportContext) -> dict[str, list[str]]:
    """Per named volume, the services that mount it."""
    users: dict[str, list[str]] = {name: [] for name in context.stack.volumes}
    for service in context.stack.services.values():
        for mount in service.volumes:
            if mount.kind == "volume" and service.name not in users[mount.source]:
                users[mount.source].append(service.name)
    return users


def templated(context: ExportContext, volume: str, users: Mapping[str, list[str]]) -> bool:
    """A volume used by one long-running service only: that StatefulSet's claim template."""
    owners = users[volume]
    return len(owners) == 1 and context.stack.services[owners[0]].type is ServiceType.SERVICE


def volume_notes(context: ExportContext, volume: str) -> None:
    """What an operator must know about a named volume moving to a claim."""
    config = context.stack.volumes[volume]
    docker_name = config.name or f"{context.stack.project}-{volume}"
    context.note(
        "info",
        f"volumes.{volume}",
        f"a new, empty {DEFAULT_STORAGE} claim on the default StorageClass (edit the size "
        f"before applying); the data in Docker volume {docker_name} stays on the host",
    )
    if config.driver != "local":
        context.note(
            "warning",
            f"volumes.{volume}.driver",
            f"Docker volume driver {config.driver!r} has no Kubernetes counterpart here: set "
            "storageClassName by hand",
        )


def volume_claim(context: ExportContext, volume: str, *, template: bool) -> Manifest:
    """A PersistentVolumeClaim for the volume (a bare one for a StatefulSet's template)."""
    name = dns_label(volume, fallback="volume")
    metadata = {"name": name} if template else context.metadata(name)
    return {
        **({} if template else {"apiVersion": "v1", "kind": "PersistentVolumeClaim"}),
        "metadata": metadata,
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": DEFAULT_STORAGE}},
        },
    }


# --------------------------------------------------------------------------- environment


def is_secret_variable(context: ExportContext, key: str, value: str) -> bool:
    """A variable whose value must not be written: named like a secret, holding (or holding
    within it) a secret file's contents, or a URL with a password in it. `*_FILE`, `*_URL` and
    the like name where a secret is, not the secret."""
    if _URL_CREDENTIALS_RE.search(value):
        return True
    for content in context.secret_contents.values():
        text = content.decode("utf-8", errors="replace").strip()
        if text and (value.strip() == text or (len(text) >= MIN_SECRET_LENGTH and text in value)):
            return True
    return bool(_SECRET_NAME_RE.search(key)) and not _REFERENCE_RE.search(key)


def split_environment(
    context: ExportContext, service: ServiceConfig
) -> tuple[dict[str, str], dict[str, str]]:
    """The service's variables as (plain, secret)."""
    plain: dict[str, str] = {}
    secret: dict[str, str] = {}
    for key, value in service.environment.items():
        (secret if is_secret_variable(context, key, value) else plain)[key] = value
    return plain, secret


def environment_manifests(
    context: ExportContext, service: ServiceConfig
) -> tuple[list[Manifest], list[Manifest], list[Manifest]]:
    """(manifests, envFrom, env) for the service's variables: a ConfigMap for the plain ones,
    a Secret reference for the secret ones (with their values only if asked)."""
    plain, secret = split_environment(context, service)
    name = context.service_name(service.name)
    manifests: list[Manifest] = []
    env_from: list[Manifest] = []
    # A ConfigMap key is narrower than a variable name; such variables go in `env` directly,
    # with `$(` escaped, since Kubernetes expands $(VAR) there and Docker does not.
    direct = [
        {"name": k, "value": v.replace("$(", "$$(")}
        for k, v in plain.items()
        if not _CONFIGMAP_KEY_RE.match(k)
    ]
    data = {k: v for k, v in plain.items() if _CONFIGMAP_KEY_RE.match(k)}
    if data:
        config_map = suffixed(name, "env")
        manifests.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": context.metadata(config_map, service.name),
                "data": data,
            }
        )
        env_from.append({"configMapRef": {"name": config_map}})
    if secret:
        secret_ref = suffixed(name, "env-secret")
        env_from.append({"secretRef": {"name": secret_ref}})
        where = f"services.{service.name}.environment"
        keys = ", ".join(sorted(secret))
        if context.options.include_secret_values:
            manifests.append(_secret(context, secret_ref, secret, service.name))
            context.note("info", where, f"{keys} written to Secret {secret_ref}")
        else:
            context.note(
                "warning",
                where,
                f"{keys} look like secrets: left out, read from Secret {secret_ref} "
                f"(create it with keys {keys}, or export with --include-secret-values)",
            )
    return manifests, env_from, direct


def _secret(
    context: ExportContext, name: str, values: Mapping[str, str | bytes], service: str | None
) -> Manifest:
    def encode(value: str | bytes) -> str:
        raw = value.encode() if isinstance(value, str) else value
        return base64.b64encode(raw).decode("ascii")

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": context.metadata(name, service),
        "type": "Opaque",
        "data": {k: encode(v) for k, v in values.items()},
    }


def file_secrets(context: ExportContext) -> list[Manifest]:
    """The config's file-backed secrets as Secrets (only with --include-secret-values)."""
    if not context.options.include_secret_values:
        return []
    return [
        _secret(context, secret_name(name), {name: context.secret_contents.get(name, b"")}, None)
        for name in context.stack.secrets
    ]


# --------------------------------------------------------------------------- probes


def probes(context: ExportContext, service: ServiceConfig) -> Manifest:
    """startupProbe (start_period at start_interval), readinessProbe and livenessProbe."""
    health = service.health
    if health is None:
        return {}
    handler = _probe_handler(context, service, health)
    timeout = seconds(health.timeout)
    steady = {
        **handler,
        "periodSeconds": seconds(health.interval),
        "timeoutSeconds": timeout,
        "failureThreshold": health.retries,
        "successThreshold": 1,
    }
    out: Manifest = {"readinessProbe": steady, "livenessProbe": dict(steady)}
    if health.start_period > 0:
        # On one host a failure inside start_period does not count and `retries` failures
        # after it make the service unhealthy: the startup probe allows that whole span.
        period = seconds(health.start_interval)
        span = health.start_period + health.retries * health.interval
        out["startupProbe"] = {
            **handler,
            "periodSeconds": period,
            "timeoutSeconds": timeout,
            "failureThreshold": max(1, math.ceil(span / period)),
            "successThreshold": 1,
        }
    return out


def _probe_handler(
    context: ExportContext, service: ServiceConfig, health: HealthConfig
) -> Manifest:
    probe = health.probe
    where = f"services.{service.name}.health"
    if isinstance(probe, TcpProbe):
        return {"tcpSocket": {"port": probe.port}}
    if isinstance(probe, ExecProbe):
        tools = _probe_tools(probe.command)
        if tools:
            context.note(
                "warning",
                f"{where}.exec",
                f"needs {' and '.join(tools)} in the image; an http or tcp probe needs no tool "
                "in it (the kubelet probes those itself)",
            )
        return {"exec": {"command": list(probe.command)}}
    assert isinstance(probe, HttpProbe)
    target = http_target(service, probe)
    for issue in target.issues:
        context.note("warning", f"{where}.http.url", issue)
    if target.scheme == "HTTPS" and getattr(probe, "tls_verify", True):
        # tls_verify and ca_file came with the https scheme key: read them the same way.
        context.note(
            "info",
            f"{where}.http",
            "the kubelet does not verify an HTTPS probe's certificate (tls_verify and ca_file "
            "are not carried over): the probe checks the answer, not who gave it",
        )
    return {"httpGet": {"path": target.path, "port": target.port, "scheme": target.scheme}}


def _probe_tools(argv: tuple[str, ...]) -> list[str]:
    """The shell and network tools an exec probe relies on (`sh -c "curl ..."` needs both)."""
    words = [PurePosixPath(argv[0]).name] if argv else []
    if words and words[0] in _SHELLS and len(argv) > 2 and argv[1] == "-c" and argv[2].split():
        words.append(PurePosixPath(argv[2].split()[0]).name)
    return [w for w in words if w in _SHELLS or w in _TOOLS]


# --------------------------------------------------------------------------- dependency waits


def wait_account(context: ExportContext) -> str:
    return suffixed(dns_label(context.stack.project, fallback="ovpn"), "dependency-wait")


def wait_check(context: ExportContext, dependency: str, condition: Condition) -> tuple[str, str]:
    """(shell condition that holds once `dependency` meets `condition`, what it checks)."""
    name = context.service_name(dependency)
    selector = f"{PART_OF}={context.project_label},{NAME}={name}"
    timeout = f"--timeout={WAIT_TIMEOUT}"
    if condition is Condition.COMPLETED:
        return f"kubectl wait job/{name} --for=condition=complete {timeout}", (
            "Job condition Complete"
        )
    if condition is Condition.HEALTHY:
        return f"kubectl wait pod -l {selector} --for=condition=Ready {timeout}", (
            "pods Ready (readiness probe = health probe)"
        )
    if context.stack.services[dependency].type is ServiceType.JOB:
        # A job's pod may be done before a wait for Running sees it: any phase past Pending.
        phases = f"kubectl get pod -l {selector} -o jsonpath='{{.items[*].status.phase}}'"
        return f'case "$({phases})" in *Running*|*Succeeded*|*Failed*) ;; *) false ;; esac', (
            "a pod of the Job Running or finished"
        )
    return f"kubectl wait pod -l {selector} --for=jsonpath='{{.status.phase}}'=Running {timeout}", (
        "a pod in phase Running"
    )


def _wait_script(context: ExportContext, dependency: str, condition: Condition) -> str:
    check, what = wait_check(context, dependency, condition)
    return (
        f'echo "waiting for {context.service_name(dependency)} to be {condition.value}: {what}"\n'
        f"until {check}; do sleep 2; done\n"
    )


def init_containers(context: ExportContext, service: ServiceConfig) -> list[Manifest]:
    out: list[Manifest] = []
    for dependency, dep in service.depends_on.items():
        if dep.restart:
            context.note(
                "warning",
                f"services.{service.name}.depends_on.{dependency}.restart",
                f"not carried over: Kubernetes does not restart {service.name} when "
                f"{dependency} restarts",
            )
        out.append(
            {
                "name": suffixed("wait-for", context.service_name(dependency))[:63],
                "image": f"{WAIT_IMAGE}:{WAIT_IMAGE_TAG}",
                "command": ["/bin/sh", "-c", _wait_script(context, dependency, dep.condition)],
                "volumeMounts": [
                    {"name": "kube-api-access", "mountPath": TOKEN_DIR, "readOnly": True}
                ],
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        )
    return out


def api_access_volume() -> Manifest:
    """What the service account token mount would be, for the init containers only."""
    return {
        "name": "kube-api-access",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ]
        },
    }


def wait_rbac(context: ExportContext) -> list[Manifest]:
    """ServiceAccount, Role (read pods and jobs) and RoleBinding for the dependency waits."""
    conditions = {
        d.condition for s in context.stack.services.values() for d in s.depends_on.values()
    }
    if not conditions:
        return []
    rules: list[Manifest] = []
    if conditions - {Condition.COMPLETED}:
        rules.append({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]})
    if Condition.COMPLETED in conditions:
        rules.append(
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch"]}
        )
    name = wait_account(context)
    subject = {"kind": "ServiceAccount", "name": name, "namespace": context.namespace}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": context.metadata(name),
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": context.metadata(name),
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": context.metadata(name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [subject],
        },
    ]
