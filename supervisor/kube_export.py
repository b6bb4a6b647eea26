"""The stack's config as Kubernetes manifests: `export_stack` (pure) and its result.

The result groups manifests by the file they go to (namespace, one file per service, volumes,
secrets, dependency-wait RBAC, network policies) and carries the notes: what could not be carried
over exactly, with the config key path it concerns. `kube_output` writes it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from supervisor.config import (
    Condition,
    PullPolicy,
    RestartPolicy,
    ServiceConfig,
    ServiceType,
    StackConfig,
)
from supervisor.kube_common import (
    MIN_SECRET_LENGTH,
    WAIT_ANNOTATION,
    WAITS_LABEL,
    ExportContext,
    ExportError,
    ExportNote,
    ExportOptions,
    Manifest,
    assign_service_names,
    check_namespace,
    is_qualified_name,
    network_label,
)
from supervisor.kube_network import Port, known_ports, network_policies, services
from supervisor.kube_workloads import (
    PULL_POLICIES,
    SECRETS_DIR,
    api_access_volume,
    environment_manifests,
    file_secrets,
    init_containers,
    probes,
    seconds,
    secret_name,
    split_environment,
    templated,
    volume_claim,
    volume_notes,
    volume_users,
    wait_account,
    wait_check,
    wait_rbac,
)


@dataclass(frozen=True, slots=True)
class DependencyWait:
    """One depends_on entry as exported: who waits for what, and how it is checked."""

    service: str
    dependency: str
    condition: Condition
    checked_as: str


@dataclass(frozen=True)
class KubeExport:
    """Manifests by file name (in apply order), the notes, the namespace, the waits."""

    files: Mapping[str, list[Manifest]]
    notes: tuple[ExportNote, ...]
    namespace: str
    waits: tuple[DependencyWait, ...] = ()

    def manifests(self) -> list[Manifest]:
        return [m for items in self.files.values() for m in items]


def export_stack(
    stack: StackConfig,
    options: ExportOptions,
    secret_contents: Mapping[str, bytes] | None = None,
) -> KubeExport:
    """Map the config to manifests; `secret_contents` are the secret files' bytes by name."""
    context = ExportContext(stack, options, dict(secret_contents or {}))
    check_namespace(context)
    assign_service_names(context)
    files: dict[str, list[Manifest]] = {
        "namespace.yaml": [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": context.metadata(context.namespace, namespaced=False),
            }
        ]
    }
    users = volume_users(context)
    for volume, owners in users.items():
        if owners:
            volume_notes(context, volume)
    claims = [
        volume_claim(context, v, template=False)
        for v in stack.volumes
        if users[v] and not templated(context, v, users)
    ]
    if claims:
        files["volumes.yaml"] = claims
    secrets = file_secrets(context)
    if secrets:
        files["secrets.yaml"] = secrets
    rbac = wait_rbac(context)
    if rbac:
        files["dependency-wait-rbac.yaml"] = rbac
    ports = known_ports(context)
    service_objects = services(context, ports)
    # Files in start order, so reading them follows the stack's dependency levels.
    for name in (n for level in stack.graph().levels() for n in level):
        service = stack.services[name]
        env_objects, workload = _workload(context, service, ports[name], users)
        # In a folder of their own: a service named `volumes` must not replace volumes.yaml.
        files[f"services/{context.service_name(name)}.yaml"] = [
            *env_objects,
            workload,
            *service_objects[name],
        ]
        _report_unported(context, service, ports[name])
        _report_container_names(context, service)
    policies = network_policies(context)
    if policies:
        files["network-policies.yaml"] = policies
    _check_no_secret_values(context, files)
    _check_unique_names(files)
    waits = tuple(
        DependencyWait(name, d, dep.condition, wait_check(context, d, dep.condition)[1])
        for name, service in stack.services.items()
        for d, dep in service.depends_on.items()
    )
    return KubeExport(files, tuple(context.notes), context.namespace, waits)


def _check_unique_names(files: Mapping[str, list[Manifest]]) -> None:
    """Two objects of one kind and name (service `web` beside `web-public`) cannot both apply."""
    seen: dict[tuple[str, str], str] = {}
    for file, manifests in files.items():
        for manifest in manifests:
            key = (manifest["kind"], manifest["metadata"]["name"])
            if key in seen:
                raise ExportError(
                    f"{key[0]} {key[1]} would be written twice ({seen[key]} and {file}): "
                    "rename the service, volume or secret it comes from"
                )
            seen[key] = file


def _check_no_secret_values(context: ExportContext, files: Mapping[str, list[Manifest]]) -> None:
    """Refuse to write a secret's value anywhere but a Secret (a command line, a label...)."""
    values = {
        f"secrets.{name}": content.decode("utf-8", errors="replace").strip()
        for name, content in context.secret_contents.items()
    }
    for service in context.stack.services.values():
        for key, value in split_environment(context, service)[1].items():
            values[f"services.{service.name}.environment.{key}"] = value
    guarded = {k: v for k, v in values.items() if len(v) >= MIN_SECRET_LENGTH}
    for file, manifests in files.items():
        for manifest in manifests:
            if manifest["kind"] == "Secret":
                continue
            for where, value in guarded.items():
                if not any(value in text for text in _texts(manifest)):
                    continue
                kind, name = manifest["kind"], manifest["metadata"]["name"]
                if not context.options.include_secret_values:
                    raise ExportError(
                        f"the value of {where} appears in {kind} {name} ({file}), which is "
                        "not a Secret: move it into a secret, or export with "
                        "--include-secret-values"
                    )
                context.note("warning", where, f"its value is written in {kind} {name}")


def _texts(value: object, key: str = "") -> list[str]:
    """Every string in a manifest but object names (a Secret is named after its key, and a
    secret file may hold its own name, as test fixtures do)."""
    if isinstance(value, str):
        return [] if key == "name" else [value]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in (k, *_texts(v, k))]
    if isinstance(value, list):
        return [t for item in value for t in _texts(item, key)]
    return []


def _report_container_names(context: ExportContext, service: ServiceConfig) -> None:
    """A variable naming a container (`<project>-<service>`): no such host on Kubernetes."""
    for key, value in service.environment.items():
        for other in context.stack.services:
            container = f"{context.stack.project}-{other}"
            if re.search(rf"(?<![\w.-]){re.escape(container)}(?![\w-])", value):
                context.note(
                    "warning",
                    f"services.{service.name}.environment.{key}",
                    f"names the container {container!r}, which Kubernetes does not have: use "
                    f"the Service name {context.service_name(other)!r}",
                )


def _report_unported(context: ExportContext, service: ServiceConfig, ports: list[Port]) -> None:
    dependents = [s.name for s in context.stack.services.values() if service.name in s.depends_on]
    if ports or not dependents or service.type is ServiceType.JOB:
        return
    context.note(
        "warning",
        f"services.{service.name}",
        f"no port of it is known (no ports, no http/tcp probe, not named in another service's "
        f"environment), so it gets no Service: {', '.join(dependents)} cannot reach it by name "
        "until you add one",
    )


def _workload(
    context: ExportContext,
    service: ServiceConfig,
    ports: list[Port],
    users: Mapping[str, list[str]],
) -> tuple[list[Manifest], Manifest]:
    env_objects, env_from, env = environment_manifests(context, service)
    name = context.service_name(service.name)
    is_job = service.type is ServiceType.JOB
    mounts, volumes, templates = _volumes(context, service, users)
    container: Manifest = {
        "name": name,
        "image": service.image,
        "imagePullPolicy": PULL_POLICIES[service.pull],
    }
    if service.entrypoint is not None:
        container["command"] = list(service.entrypoint)
    if service.command is not None:
        container["args"] = list(service.command)
    if service.pull is PullPolicy.NEVER:
        context.note(
            "info",
            f"services.{service.name}.pull",
            f"never: {service.image} must already be on every node that may run the pod",
        )
    if service.working_dir:
        container["workingDir"] = service.working_dir
    if env_from:
        container["envFrom"] = env_from
    if env:
        container["env"] = env
    if ports:
        container["ports"] = [{"containerPort": n, "protocol": p.upper()} for n, p in ports]
    if mounts:
        container["volumeMounts"] = mounts
    container.update(probes(context, service))
    security = _security_context(context, service)
    if security:
        container["securityContext"] = security
    pod: Manifest = {"automountServiceAccountToken": False}
    waits = init_containers(context, service)
    if waits:
        pod["serviceAccountName"] = wait_account(context)
        pod["initContainers"] = waits
        volumes.append(api_access_volume())
    pod["restartPolicy"] = "Never" if is_job else "Always"
    pod["terminationGracePeriodSeconds"] = seconds(service.stop.timeout)
    pod["containers"] = [container]
    if volumes:
        pod["volumes"] = volumes
    _stop_notes(context, service)
    template = {"metadata": _pod_metadata(context, service), "spec": pod}
    if is_job:
        return env_objects, _job(context, service, template)
    _restart_notes(context, service)
    selector = {"matchLabels": context.labels(service.name)}
    if not any(m.kind == "volume" for m in service.volumes):
        spec: Manifest = {"replicas": 1, "selector": selector, "template": template}
        return env_objects, _object(context, "apps/v1", "Deployment", name, service, spec)
    spec = {
        "replicas": 1,
        "serviceName": name,
        "selector": selector,
        "template": template,
    }
    if templates:
        spec["volumeClaimTemplates"] = templates
    return env_objects, _object(context, "apps/v1", "StatefulSet", name, service, spec)


def _object(
    context: ExportContext, api: str, kind: str, name: str, service: ServiceConfig, spec: Manifest
) -> Manifest:
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": context.metadata(name, service.name),
        "spec": spec,
    }


def _job(context: ExportContext, service: ServiceConfig, template: Manifest) -> Manifest:
    # Each retry is a new pod (restartPolicy Never), so its init containers check the
    # dependencies again, as the supervisor does before restarting a job.
    retries = 0 if service.restart.policy is RestartPolicy.NO else service.restart.limit_count
    spec = {"backoffLimit": retries, "template": template}
    return _object(context, "batch/v1", "Job", context.service_name(service.name), service, spec)


def _pod_metadata(context: ExportContext, service: ServiceConfig) -> Manifest:
    labels = context.labels(service.name)
    labels.update({network_label(n): "true" for n in service.networks})
    annotations: dict[str, str] = {}
    for key, value in service.labels.items():
        if is_qualified_name(key):
            annotations[key] = value
        else:
            context.note(
                "warning",
                f"services.{service.name}.labels.{key}",
                "not a valid Kubernetes annotation key: left out",
            )
    if service.depends_on:
        labels[WAITS_LABEL] = "true"
        annotations[WAIT_ANNOTATION] = "; ".join(
            f"{context.service_name(d)}: {dep.condition.value} = "
            f"{wait_check(context, d, dep.condition)[1]}, through the Kubernetes API"
            for d, dep in service.depends_on.items()
        )
    metadata: Manifest = {"labels": labels}
    if annotations:
        metadata["annotations"] = annotations
    return metadata


def _volumes(
    context: ExportContext, service: ServiceConfig, users: Mapping[str, list[str]]
) -> tuple[list[Manifest], list[Manifest], list[Manifest]]:
    """(volumeMounts, pod volumes, claim templates) for the service's mounts and secrets."""
    mounts: list[Manifest] = []
    volumes: list[Manifest] = []
    templates: list[Manifest] = []
    for index, mount in enumerate(service.volumes):
        if mount.kind == "bind":
            context.note(
                "warning",
                f"services.{service.name}.volumes[{index}]",
                f"host bind mount {mount.source} -> {mount.target} cannot be carried over: "
                "left out; put its files in a ConfigMap or Secret (kubectl create configmap "
                f"... --from-file={mount.source}) and mount that at {mount.target}",
            )
            continue
        claim = volume_claim(context, mount.source, template=True)
        claim_name = claim["metadata"]["name"]
        entry: Manifest = {"name": claim_name, "mountPath": mount.target}
        if mount.read_only:
            entry["readOnly"] = True
        mounts.append(entry)
        if templated(context, mount.source, users):
            templates.append(claim)
        else:
            volumes.append(
                {
                    "name": claim_name,
                    "persistentVolumeClaim": {"claimName": claim_name, "readOnly": mount.read_only},
                }
            )
    if service.secrets:
        mounts.append({"name": "run-secrets", "mountPath": SECRETS_DIR, "readOnly": True})
        volumes.append(
            {
                "name": "run-secrets",
                "projected": {
                    "sources": [
                        {
                            "secret": {
                                "name": secret_name(s),
                                "items": [{"key": s, "path": s}],
                            }
                        }
                        for s in service.secrets
                    ]
                },
            }
        )
    return mounts, volumes, templates


def _security_context(context: ExportContext, service: ServiceConfig) -> Manifest:
    if service.user is None:
        return {}
    where = f"services.{service.name}.user"
    user, _, group = service.user.partition(":")
    if not user.isdigit() or (group and not group.isdigit()):
        context.note(
            "warning",
            where,
            f"{service.user!r}: Kubernetes needs numeric ids (uid[:gid]); left out, so the "
            "image's user runs",
        )
        return {}
    if int(user) == 0:
        context.note(
            "warning",
            where,
            "runs as root (uid 0): a namespace enforcing the restricted Pod Security Standard "
            "refuses the pod",
        )
    security: Manifest = {"runAsUser": int(user)}
    if group:
        security["runAsGroup"] = int(group)
    return security


def _stop_notes(context: ExportContext, service: ServiceConfig) -> None:
    if service.stop.signal != "SIGTERM":
        context.note(
            "warning",
            f"services.{service.name}.stop.signal",
            f"{service.stop.signal} is not sent: Kubernetes 1.30 stops a container with its "
            "image's STOPSIGNAL (SIGTERM unless the image sets another); set STOPSIGNAL in "
            "the image or add a preStop hook",
        )


def _restart_notes(context: ExportContext, service: ServiceConfig) -> None:
    policy = service.restart.policy
    where = f"services.{service.name}.restart.policy"
    if policy is RestartPolicy.NO:
        context.note(
            "warning",
            where,
            "'no' cannot be carried over: a Deployment or StatefulSet always restarts its "
            "container (restartPolicy Always)",
        )
    elif policy is RestartPolicy.ON_FAILURE:
        context.note(
            "info",
            where,
            "'on-failure' becomes restartPolicy Always: Kubernetes restarts a long-running "
            "container whatever its exit code",
        )
