"""`export kubernetes`: the mapping, schema validity (Kubernetes 1.30, strict), kustomize, secrets.

The detailed mapping is asserted against tests/fixtures/kubernetes/stack.yaml; the demo and
production configs are only exported and checked for validity, since they change on their own.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kubernetes_validate
import pytest
import yaml
from conftest import REPO_ROOT

from supervisor.compose import load_compose
from supervisor.config import HttpProbe, StackConfig
from supervisor.kube_common import ExportContext, ExportError, ExportOptions
from supervisor.kube_export import KubeExport, export_stack
from supervisor.kube_network import http_target
from supervisor.kube_output import read_secrets
from supervisor.kube_workloads import is_secret_variable
from supervisor.stack_file import load_stack

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "kubernetes" / "stack.yaml"
CANARY = "canary-7f3a9c2e-do-not-leak"
KUBERNETES_VERSION = "1.30.0"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def with_secrets(tmp_path: Path, config: str) -> Path:
    """A copy of config/ whose secret files are generated, as an operator (or scripts/demo) has
    it: the demo and production configs name secret files that git does not hold."""
    folder = tmp_path / "config"
    shutil.copytree(REPO_ROOT / "config", folder, ignore=shutil.ignore_patterns("secrets"))
    for target in (folder, folder / "production"):
        subprocess.run(
            [str(folder / "production" / "generate-secrets"), str(target)],
            env={"PATH": "/usr/bin:/bin", "OIDC_CLIENT_SECRET": "from-the-idp"},
            capture_output=True,
            check=True,
        )
    return folder / config


def production(tmp_path: Path) -> Path:
    return with_secrets(tmp_path, "production/supervisor.yaml")


def load(name: str, tmp_path: Path) -> StackConfig:
    if name == "production":
        return load_stack(production(tmp_path))
    if name == "config/demo.yaml":
        return load_stack(with_secrets(tmp_path, "demo.yaml"))
    if name == "compose":
        compose = (
            REPO_ROOT / "tests" / "fixtures" / "compose" / "vpn-manager" / "docker-compose.yml"
        )
        return load_compose(compose, environ={"PROJECT_NAME": "vpn"})[0]
    return load_stack(REPO_ROOT / name)


def export(stack: StackConfig, **options: Any) -> KubeExport:
    return export_stack(stack, ExportOptions(**options), read_secrets(stack))


def by_kind(result: KubeExport, kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in result.manifests() if m["kind"] == kind}


def pod(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def notes(result: KubeExport) -> list[str]:
    return [str(n) for n in result.notes]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )


# --------------------------------------------------------------------------- validity

CONFIGS = [
    "config/demo.yaml",
    "production",
    "compose",
    "tests/fixtures/config/full.yaml",
    "tests/fixtures/kubernetes/stack.yaml",
]
VARIANTS = [
    {},
    {"expose_as": "NodePort", "include_secret_values": True, "namespace": "other-ns"},
]


@pytest.mark.parametrize("options", VARIANTS, ids=["default", "nodeport-secrets"])
@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.slow
def test_every_manifest_validates_against_kubernetes_1_30_strict(
    name: str, options: dict[str, Any], tmp_path: Path
) -> None:
    result = export(load(name, tmp_path), **options)
    assert result.manifests()
    for manifest in result.manifests():
        # Strict: an unknown field anywhere is an error; a kind without a schema raises too.
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        # The schemas do not check names: object names are DNS labels, label values short.
        assert DNS_LABEL.match(manifest["metadata"]["name"]), manifest["metadata"]
        for value in manifest["metadata"]["labels"].values():
            assert re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", value)


def test_the_validator_catches_an_unknown_field() -> None:
    # The check above is only worth something if strict mode refuses what the API would.
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 80}], "exposeAs": "LoadBalancer"},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", ["config/demo.yaml", "production", FIXTURE.relative_to(REPO_ROOT)])
@pytest.mark.slow
def test_kubectl_kustomize_builds_the_written_folder(name: str, tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl missing: run scripts/ensure-test-tools (Debian's kubernetes-client)"
    configs = {"production": "production/supervisor.yaml", "config/demo.yaml": "demo.yaml"}
    config = with_secrets(tmp_path, configs[name]) if name in configs else REPO_ROOT / name
    out = tmp_path / "out"
    proc = run_cli("export", "kubernetes", "--config", str(config), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    built = subprocess.run(
        [kubectl, "kustomize", str(out)], capture_output=True, text=True, timeout=60, check=False
    )
    assert built.returncode == 0, built.stderr
    documents = [d for d in yaml.safe_load_all(built.stdout) if d]
    written = [
        d
        for f in out.rglob("*.yaml")
        if f.name != "kustomization.yaml"
        for d in yaml.safe_load_all(f.read_text())
        if d
    ]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in documents) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in written
    )
    namespaced = [d for d in documents if d["kind"] != "Namespace"]
    assert {d["metadata"]["namespace"] for d in namespaced} == {documents[0]["metadata"]["name"]}


# --------------------------------------------------------------------------- mapping


@pytest.fixture(scope="module")
def fixture_export() -> KubeExport:
    return export(load_stack(FIXTURE))


def test_workload_kinds_follow_type_and_named_volumes(fixture_export: KubeExport) -> None:
    kinds = {(m["kind"], m["metadata"]["name"]) for m in fixture_export.manifests()}
    assert {("StatefulSet", "db"), ("StatefulSet", "api"), ("Job", "seed")} <= kinds
    assert {("Deployment", "web"), ("Deployment", "worker")} <= kinds
    for workload in [
        *by_kind(fixture_export, "Deployment").values(),
        *by_kind(fixture_export, "StatefulSet").values(),
    ]:
        assert workload["spec"]["replicas"] == 1
        assert pod(workload)["restartPolicy"] == "Always"
        assert workload["metadata"]["labels"] == {
            "app.kubernetes.io/part-of": "kx",
            "app.kubernetes.io/name": workload["metadata"]["name"],
        }


def test_a_volume_of_one_service_is_its_claim_template_a_shared_one_a_claim(
    fixture_export: KubeExport,
) -> None:
    db = by_kind(fixture_export, "StatefulSet")["db"]
    (template,) = db["spec"]["volumeClaimTemplates"]
    assert template["metadata"]["name"] == "dbdata"
    assert template["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pod(db)["containers"][0]["volumeMounts"][0] == {
        "name": "dbdata",
        "mountPath": "/var/lib/postgresql/data",
    }
    # `shared` is written by the seed job and read by api: one claim both mount.
    assert set(by_kind(fixture_export, "PersistentVolumeClaim")) == {"shared"}
    api = by_kind(fixture_export, "StatefulSet")["api"]
    assert "volumeClaimTemplates" not in api["spec"]
    assert {
        "name": "shared",
        "persistentVolumeClaim": {"claimName": "shared", "readOnly": True},
    } in pod(api)["volumes"]
    seed = by_kind(fixture_export, "Job")["seed"]
    assert {
        "name": "shared",
        "persistentVolumeClaim": {"claimName": "shared", "readOnly": False},
    } in pod(seed)["volumes"]


def test_probes_carry_handler_and_timing(fixture_export: KubeExport) -> None:
    web = pod(by_kind(fixture_export, "Deployment")["web"])["containers"][0]
    http = {"path": "/ready", "port": 80, "scheme": "HTTP"}
    # defaults: interval 7s, timeout 1500ms, retries 4, start_period 20s, start_interval 2s
    for kind in ("readinessProbe", "livenessProbe"):
        assert web[kind] == {
            "httpGet": http,
            "periodSeconds": 7,
            "timeoutSeconds": 2,
            "failureThreshold": 4,
            "successThreshold": 1,
        }
    # start_period plus `retries` steady failures, probed every start_interval: (20 + 4*7) / 2
    assert web["startupProbe"] == {
        "httpGet": http,
        "periodSeconds": 2,
        "timeoutSeconds": 2,
        "failureThreshold": 24,
        "successThreshold": 1,
    }
    db = pod(by_kind(fixture_export, "StatefulSet")["db"])["containers"][0]
    assert db["readinessProbe"]["exec"] == {"command": ["pg_isready", "-U", "app"]}
    worker = pod(by_kind(fixture_export, "Deployment")["worker"])["containers"][0]
    assert worker["livenessProbe"]["exec"]["command"][:2] == ["/bin/sh", "-c"]
    assert "warning: services.worker.health.exec: needs sh and curl in the image" in "\n".join(
        notes(fixture_export)
    )


def test_an_https_url_probe_goes_to_the_container_port_it_publishes(
    fixture_export: KubeExport,
) -> None:
    api = pod(by_kind(fixture_export, "StatefulSet")["api"])["containers"][0]
    # https://127.0.0.1:9443/healthz on the host; 127.0.0.1:9443 publishes container port 8443
    assert api["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8443, "scheme": "HTTPS"}
    assert api["readinessProbe"]["failureThreshold"] == 2
    assert any(
        n.startswith("info: services.api.health.http: the kubelet does not verify")
        for n in notes(fixture_export)
    )


def test_the_http_probe_scheme_key_selects_https() -> None:
    # health.http.scheme (added beside this exporter) is read with getattr: an object with it
    # stands in for the newer HttpProbe; the current one without it means plain HTTP.
    service = load_stack(FIXTURE).services["web"]
    newer = SimpleNamespace(port=8443, path="/health", url=None, scheme="https")
    assert http_target(service, newer).scheme == "HTTPS"  # type: ignore[arg-type]
    assert http_target(service, HttpProbe(port=80)).scheme == "HTTP"


def test_depends_on_becomes_init_containers_in_order_waiting_through_the_api(
    fixture_export: KubeExport,
) -> None:
    api = pod(by_kind(fixture_export, "StatefulSet")["api"])
    assert [c["name"] for c in api["initContainers"]] == ["wait-for-seed", "wait-for-db"]
    seed_wait, db_wait = (c["command"][2] for c in api["initContainers"])
    assert "kubectl wait job/seed --for=condition=complete" in seed_wait
    assert (
        "kubectl wait pod -l app.kubernetes.io/part-of=kx,app.kubernetes.io/name=db "
        "--for=condition=Ready" in db_wait
    )
    web = pod(by_kind(fixture_export, "Deployment")["web"])
    (api_wait,) = web["initContainers"]
    assert "--for=jsonpath='{.status.phase}'=Running" in api_wait["command"][2]
    # Only the init containers get the API token; the app container does not.
    assert api["automountServiceAccountToken"] is False
    assert api["serviceAccountName"] == "kx-dependency-wait"
    assert all(
        m["name"] == "kube-api-access" for c in api["initContainers"] for m in c["volumeMounts"]
    )
    assert all(m["name"] != "kube-api-access" for m in api["containers"][0]["volumeMounts"])
    assert (
        "Job condition Complete"
        in by_kind(fixture_export, "StatefulSet")["api"]["spec"]["template"]["metadata"][
            "annotations"
        ]["ovpn-supervisor.io/wait-for"]
    )
    # No dependencies, no waits and no service account.
    assert "initContainers" not in pod(by_kind(fixture_export, "StatefulSet")["db"])
    assert "serviceAccountName" not in pod(by_kind(fixture_export, "StatefulSet")["db"])


def test_the_wait_role_only_reads_pods_and_jobs(fixture_export: KubeExport) -> None:
    (role,) = by_kind(fixture_export, "Role").values()
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch"]},
    ]
    (binding,) = by_kind(fixture_export, "RoleBinding").values()
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "kx-dependency-wait", "namespace": "kx"}
    ]


def run_wait_script(script: str, kubectl: str, tmp_path: Path) -> list[str]:
    """Run an init container's script with /bin/sh and a fake kubectl; its calls, in order."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    log.touch()
    fake = bin_dir / "kubectl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\ncalls=$(wc -l < {log})\n{kubectl}\n')
    fake.chmod(0o755)
    proc = subprocess.run(
        ["/bin/sh", "-c", script.replace("sleep 2", "sleep 0")],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return log.read_text().splitlines()


def test_the_wait_script_loops_until_kubectl_wait_succeeds(
    fixture_export: KubeExport, tmp_path: Path
) -> None:
    # A POSIX shell runs it against a kubectl that fails twice first: the loop retries, and
    # the jsonpath argument reaches kubectl with its quotes removed.
    (wait,) = pod(by_kind(fixture_export, "Deployment")["web"])["initContainers"]
    calls = run_wait_script(wait["command"][2], '[ "$calls" -ge 3 ]', tmp_path)
    assert calls == 3 * [
        "wait pod -l app.kubernetes.io/part-of=kx,app.kubernetes.io/name=api "
        "--for=jsonpath={.status.phase}=Running --timeout=60s"
    ]


def test_a_job_counts_as_started_once_its_pod_runs_or_finished(
    fixture_export: KubeExport, tmp_path: Path
) -> None:
    # A job may finish before anyone sees it Running: Succeeded counts as started too.
    (wait,) = pod(by_kind(fixture_export, "Deployment")["worker"])["initContainers"]
    phases = 'if [ "$calls" -ge 3 ]; then echo Succeeded; else echo Pending; fi'
    calls = run_wait_script(wait["command"][2], phases, tmp_path)
    assert calls == 3 * [
        "get pod -l app.kubernetes.io/part-of=kx,app.kubernetes.io/name=seed "
        "-o jsonpath={.items[*].status.phase}"
    ]


def test_jobs_retry_per_restart_policy(fixture_export: KubeExport) -> None:
    seed = by_kind(fixture_export, "Job")["seed"]
    assert seed["spec"]["backoffLimit"] == 4
    assert pod(seed)["restartPolicy"] == "Never"
    assert pod(seed)["containers"][0]["args"] == ["seed", "--all"]
    assert pod(seed)["containers"][0]["securityContext"] == {"runAsUser": 0}


def test_stop_and_restart_settings(fixture_export: KubeExport) -> None:
    assert pod(by_kind(fixture_export, "StatefulSet")["db"])["terminationGracePeriodSeconds"] == 45
    assert pod(by_kind(fixture_export, "Deployment")["web"])["terminationGracePeriodSeconds"] == 3
    text = "\n".join(notes(fixture_export))
    assert "warning: services.web.stop.signal: SIGQUIT is not sent" in text
    assert "warning: services.db.stop.signal: SIGINT is not sent" in text
    assert "warning: services.worker.restart.policy: 'no' cannot be carried over" in text
    assert "warning: services.api.depends_on.db.restart: not carried over" in text


def test_what_cannot_be_carried_over_is_reported_with_its_key_path(
    fixture_export: KubeExport,
) -> None:
    text = "\n".join(notes(fixture_export))
    assert "warning: services.seed.volumes[1]: host bind mount" in text
    assert "warning: services.seed.user: runs as root (uid 0)" in text
    assert "warning: services.worker.environment.LEGACY_DB: names the container 'kx-db'" in text
    seed = pod(by_kind(fixture_export, "Job")["seed"])
    assert [m["mountPath"] for m in seed["containers"][0]["volumeMounts"]] == ["/shared"]


def test_services_cover_the_ports_others_use(fixture_export: KubeExport) -> None:
    services = by_kind(fixture_export, "Service")

    def ports(name: str) -> list[tuple[int, int | str]]:
        return [(p["port"], p["targetPort"]) for p in services[name]["spec"]["ports"]]

    # db: from api's DB_HOST/DB_PORT and the db:5432 in its DATABASE_URL
    assert services["db"]["spec"]["type"] == "ClusterIP"
    assert ports("db") == [(5432, 5432)]
    # api: published on loopback only (stays ClusterIP), probed there, named by worker
    assert ports("api") == [(8443, 8443)]
    assert "api-public" not in services
    assert ports("web") == [(80, 80), (8443, 8443), (9000, 9000)]
    # web's ports beyond loopback: a LoadBalancer on the host ports, to the container ports
    assert services["web-public"]["spec"]["type"] == "LoadBalancer"
    assert ports("web-public") == [(443, 8443), (30080, 80)]
    assert services["web"]["spec"]["selector"] == {
        "app.kubernetes.io/part-of": "kx",
        "app.kubernetes.io/name": "web",
    }
    assert "worker" not in services  # nobody uses a port of it


def test_a_database_url_kept_as_a_secret_names_the_port_but_leaks_nothing(tmp_path: Path) -> None:
    (tmp_path / "url").write_text(f"postgresql://app:{CANARY}@db:6543/app")
    config = tmp_path / "stack.yaml"
    config.write_text(
        "version: 1\nproject: p\nsecrets: {url: {file: url}}\nservices:\n"
        "  db: {image: postgres}\n"
        "  app: {image: x, secrets: [url], environment: {DATABASE_URL_FILE: /run/secrets/url}}\n"
    )
    result = export(load_stack(config))
    service = by_kind(result, "Service")["db"]
    assert [p["port"] for p in service["spec"]["ports"]] == [6543]
    assert CANARY not in yaml.safe_dump_all(result.manifests())


def test_node_port_keeps_host_ports_in_the_node_port_range() -> None:
    result = export(load_stack(FIXTURE), expose_as="NodePort")
    public = by_kind(result, "Service")["web-public"]["spec"]
    assert public["type"] == "NodePort"
    assert [p.get("nodePort") for p in public["ports"]] == [None, 30080]
    assert any(
        "services.web.ports[0]: host port 443 is outside the NodePort range" in n
        for n in notes(result)
    )


def test_an_internal_network_confines_the_pods_on_it_alone(fixture_export: KubeExport) -> None:
    policies = by_kind(fixture_export, "NetworkPolicy")
    data = policies["data-internal"]["spec"]
    member = {"app.kubernetes.io/part-of": "kx", "network.ovpn-supervisor.io/data": "true"}
    # db and seed are on `data` only; api is on `edge` too, which routes, so it is not confined.
    assert data["podSelector"] == {
        "matchLabels": member,
        "matchExpressions": [
            {"key": "network.ovpn-supervisor.io/edge", "operator": "DoesNotExist"}
        ],
    }
    assert data["policyTypes"] == ["Ingress", "Egress"]
    assert data["ingress"] == [{"from": [{"podSelector": {"matchLabels": member}}]}]
    assert data["egress"][0] == {"to": [{"podSelector": {"matchLabels": member}}]}
    assert data["egress"][1]["ports"][0] == {"protocol": "UDP", "port": 53}
    labels = by_kind(fixture_export, "StatefulSet")["api"]["spec"]["template"]["metadata"]["labels"]
    assert (
        labels["network.ovpn-supervisor.io/data"]
        == labels["network.ovpn-supervisor.io/edge"]
        == "true"
    )
    # seed waits for db through the API, so it may reach the API server's ports: said aloud.
    assert "kx-dependency-wait-api" in policies
    assert any(
        n.startswith("warning: services.seed.depends_on: its dependency waits ask")
        for n in notes(fixture_export)
    )


def test_environment_goes_to_a_config_map_and_secrets_to_secret_references(
    fixture_export: KubeExport,
) -> None:
    config_map = by_kind(fixture_export, "ConfigMap")["api-env"]
    assert config_map["data"] == {
        "LOG_LEVEL": "debug",
        "DB_HOST": "db",
        "DB_PORT": "5432",
        "SECRET_KEY_FILE": "/run/secrets/db_password",
        "OIDC_TOKEN_URL": "https://id.example.org/token",
    }
    api = pod(by_kind(fixture_export, "StatefulSet")["api"])
    assert api["containers"][0]["envFrom"] == [
        {"configMapRef": {"name": "api-env"}},
        {"secretRef": {"name": "api-env-secret"}},
    ]
    assert api["containers"][0]["volumeMounts"][-1] == {
        "name": "run-secrets",
        "mountPath": "/run/secrets",
        "readOnly": True,
    }
    (source,) = next(v for v in api["volumes"] if v["name"] == "run-secrets")["projected"][
        "sources"
    ]
    assert source == {
        "secret": {"name": "db-password", "items": [{"key": "db_password", "path": "db_password"}]}
    }
    assert by_kind(fixture_export, "Secret") == {}
    assert any(
        "services.api.environment: API_TOKEN, CONNINFO, DATABASE_URL, INNOCENT_LOOKING look like"
        in n
        for n in notes(fixture_export)
    )
    annotations = by_kind(fixture_export, "StatefulSet")["api"]["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotations["com.example.team"] == "vpn"


@pytest.mark.parametrize(
    ("key", "value", "secret"),
    [
        ("POSTGRES_PASSWORD", "x", True),
        ("api_token", "x", True),
        ("SIGNING_API_SECRET", "x", True),
        ("SSH_KEY", "x", True),
        ("POSTGRES_PASSWORD_FILE", "/run/secrets/pw", False),
        ("CA_KEY_PATH", "/pki/ca.key", False),
        ("OIDC_TOKEN_URL", "https://id/token", False),
        ("MONKEY", "banana", False),
        ("DSN", "postgres://user:pw@db/app", True),
        ("DSN", "postgres://db/app", False),
        ("ANYTHING", CANARY, True),  # a secret file's contents
        ("ANYTHING", f"pre {CANARY} post", True),
        ("ANYTHING", "canary", False),
    ],
)
def test_which_variables_count_as_secrets(key: str, value: str, secret: bool) -> None:
    context = ExportContext(load_stack(FIXTURE), ExportOptions(), {"pw": (CANARY + "\n").encode()})
    assert is_secret_variable(context, key, value) is secret


def _all_text(folder: Path) -> str:
    return "\n".join(f.read_text() for f in sorted(folder.rglob("*")) if f.is_file())


@pytest.mark.slow
def test_the_canary_secret_appears_nowhere_without_include_secret_values(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli("export", "kubernetes", "--config", str(FIXTURE), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    stream = run_cli("export", "kubernetes", "--config", str(FIXTURE), "-o", "-")
    assert stream.returncode == 0, stream.stderr
    encoded = base64.b64encode(CANARY.encode()).decode()
    for text in (_all_text(out), stream.stdout, stream.stderr, proc.stderr):
        assert CANARY not in text
        assert CANARY[:12] not in text
        assert encoded[:16] not in text
    assert {str(f.relative_to(out)) for f in out.rglob("*")} >= {
        "kustomization.yaml",
        "NOTES.md",
        "services/api.yaml",
    }
    assert (
        "kubectl -n kx create secret generic db-password --from-file=db_password="
        in (out / "NOTES.md").read_text()
    )


def test_include_secret_values_writes_them_as_secrets_only(tmp_path: Path) -> None:
    result = export(load_stack(FIXTURE), include_secret_values=True)
    secrets = by_kind(result, "Secret")
    decoded = {
        name: {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
        for name, s in secrets.items()
    }
    assert decoded["db-password"] == {"db_password": CANARY + "\n"}
    assert decoded["api-env-secret"]["API_TOKEN"] == CANARY
    assert set(decoded["api-env-secret"]) == {
        "API_TOKEN",
        "CONNINFO",
        "DATABASE_URL",
        "INNOCENT_LOOKING",
    }
    assert CANARY in decoded["api-env-secret"]["DATABASE_URL"]
    others = [m for m in result.manifests() if m["kind"] != "Secret"]
    assert CANARY not in yaml.safe_dump_all(others)


@pytest.mark.slow
def test_a_secret_value_outside_a_secret_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "stack"
    shutil.copytree(FIXTURE.parent, folder)
    config = folder / "stack.yaml"
    config.write_text(config.read_text().replace("command: worker", f"command: [worker, {CANARY}]"))
    with pytest.raises(ExportError, match=r"secrets.db_password appears in Deployment worker"):
        export(load_stack(config))
    proc = run_cli("export", "kubernetes", "--config", str(config), "-o", "-")
    assert proc.returncode == 78
    assert CANARY not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_cli_reports_notes_on_stderr_and_an_invalid_config_with_exit_78(tmp_path: Path) -> None:
    proc = run_cli(
        "export", "kubernetes", "--config", str(FIXTURE), "-o", "-", "--namespace", "vpn"
    )
    assert proc.returncode == 0, proc.stderr
    documents = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert {d["metadata"].get("namespace") for d in documents if d["kind"] != "Namespace"} == {
        "vpn"
    }
    assert "warning: services.seed.volumes[1]: host bind mount" in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nproject: x\nservices: {a: {imagee: x}}\n")
    proc = run_cli("export", "kubernetes", "--config", str(bad), "-o", str(tmp_path / "out"))
    assert proc.returncode == 78
    assert "services.a.imagee: unknown key" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_names_that_would_clash_or_break_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "stack.yaml"
    config.write_text(
        "version: 1\nproject: p\nservices:\n"
        "  web: {image: x, ports: ['8080:80']}\n"
        "  web-public: {image: x, ports: ['127.0.0.1:9090:90']}\n"
    )
    with pytest.raises(ExportError, match="Service web-public would be written twice"):
        export(load_stack(config))
    with pytest.raises(ExportError, match="--namespace 'VPN_prod': not a namespace name"):
        export(load_stack(FIXTURE), namespace="VPN_prod")


def test_a_name_kubernetes_cannot_take_is_changed_and_reported(tmp_path: Path) -> None:
    config = tmp_path / "stack.yaml"
    config.write_text(
        "version: 1\nproject: p\nservices:\n"
        "  Web_Front: {image: x, ports: ['8080:80']}\n"
        "  web-front: {image: x}\n"
    )
    with pytest.raises(ExportError, match=r"services\.web-front: its Kubernetes name 'web-front'"):
        export(load_stack(config))
    config.write_text(
        "version: 1\nproject: p\nservices:\n  Web_Front: {image: x, ports: ['8080:80']}\n"
    )
    result = export(load_stack(config))
    assert set(by_kind(result, "Service")) == {"web-front", "web-front-public"}
    assert "warning: services.Web_Front: named 'web-front' in Kubernetes" in "\n".join(
        notes(result)
    )
