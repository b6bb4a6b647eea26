"""Nothing is lost, on real PostgreSQL: rows written through the app survive every fault.

One small real stack (ovpn-demo/postgres:15 with a named volume and a password secret, the
migrate job, frontend over HTTPS) runs under a real daemon for the whole module; the cases run
one after the other on it, each writing a row and then checking that every row written so far
is still there and the stack is healthy again. Engine restarts run on a private engine. The
last case runs config/demo.yaml itself: every service healthy, HTTPS through nginx.
"""

from __future__ import annotations

import contextlib
import json
import signal
import ssl
import subprocess
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import yaml
from conftest import REPO_ROOT, remove_project
from daemon_process import DaemonProcess, free_port, run_cli, running_daemon, write_config
from docker.models.containers import Container
from helpers import wait_until
from private_engine import PrivateEngine, private_engine

pytestmark = pytest.mark.docker

HEALTH = {"interval": "1s", "timeout": "2s", "retries": 2, "start_period": "60s"}
UP = {"db": "healthy", "migrate": "completed", "app": "healthy"}
# Inside the app's container: one request to the app itself, printed as "STATUS BODY".
REQUEST = """
import ssl, sys, urllib.error, urllib.request
method, path = sys.argv[1], sys.argv[2]
req = urllib.request.Request("https://127.0.0.1:8600" + path, method=method,
                             data=b"row" if method == "POST" else None)
try:
    with urllib.request.urlopen(req, context=ssl._create_unverified_context(), timeout=5) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
"""


def stack_config(project: str, directory: Path, db_image: str, app_image: str) -> dict[str, Any]:
    """db (PostgreSQL, volume, secret) <- migrate (job) <- app (HTTPS, follows db)."""
    password = uuid.uuid4().hex
    (directory / "db_password").write_text(password)
    (directory / "db_url").write_text(f"postgresql://app:{password}@db:5432/app")
    url_env = {"DATABASE_URL_FILE": "/run/secrets/db_url"}
    return {
        "version": 1,
        "project": project,
        "defaults": {
            "pull": "never",
            "health": HEALTH,
            "restart": {"policy": "always", "backoff": {"initial": "200ms", "max": "2s"}},
        },
        "networks": {"net": {}},
        "volumes": {"pgdata": {}},
        "secrets": {
            "db_password": {"file": str(directory / "db_password")},
            "db_url": {"file": str(directory / "db_url")},
        },
        "services": {
            "db": {
                "image": db_image,
                "environment": {
                    "POSTGRES_USER": "app",
                    "POSTGRES_DB": "app",
                    "POSTGRES_PASSWORD_FILE": "/run/secrets/db_password",
                    "POSTGRES_INITDB_ARGS": "--no-sync",  # a test database: initialise fast
                },
                "secrets": ["db_password"],
                "volumes": ["pgdata:/var/lib/postgresql/data"],
                "networks": ["net"],
                "health": {"exec": ["pg_isready", "-U", "app", "-d", "app"]},
                # PostgreSQL's fast shutdown; the stop timeout is the default one.
                "stop": {"signal": "SIGINT"},
            },
            "migrate": {
                "image": app_image,
                "type": "job",
                "command": ["migrate", "frontend"],
                "environment": url_env,
                "secrets": ["db_url"],
                "networks": ["net"],
                "depends_on": {"db": "healthy"},
                "restart": {"policy": "on-failure"},
            },
            "app": {
                "image": app_image,
                "command": ["serve", "frontend"],
                "environment": url_env,
                "secrets": ["db_url"],
                "networks": ["net"],
                "depends_on": {
                    "migrate": "completed",
                    "db": {"condition": "healthy", "restart": True},
                },
                "health": {
                    "http": {
                        "port": 8600,
                        "path": "/health",
                        "scheme": "https",
                        "tls_verify": False,
                    }
                },
            },
        },
    }


@dataclass
class RealStack:
    """The module's stack: its config, its current daemon, and the rows written so far."""

    client: docker.DockerClient
    project: str
    directory: Path
    db_image: str
    config: dict[str, Any]
    env: dict[str, str] | None = None
    wrap: Callable[[list[str]], list[str]] | None = None
    daemon: DaemonProcess | None = None
    rows: int = 0
    runs: int = 0
    stack_config: Path = field(init=False)

    def __post_init__(self) -> None:
        self.stack_config = write_config(self.directory, self.config)

    # -- the daemon ---------------------------------------------------------------------

    def start_daemon(self) -> DaemonProcess:
        self.runs += 1
        log = self.directory / f"daemon-{self.runs}.log"
        self.daemon = DaemonProcess(self.stack_config, log, self.env, self.wrap)
        return self.daemon

    @property
    def running(self) -> DaemonProcess:
        assert self.daemon is not None, "no daemon running"
        return self.daemon

    def stop_daemon(self) -> int:
        daemon, self.daemon = self.running, None
        daemon.signal(signal.SIGTERM)
        code = daemon.wait_exit(timeout=90)
        daemon.close()
        return code

    def cli(self, *args: str) -> str:
        proc = run_cli(*args, "--config", str(self.stack_config), env=self.env, timeout=120)
        assert proc.returncode == 0, f"{args}: {proc.stdout}{proc.stderr}"
        return proc.stdout

    def rewrite(self, **db_environment: str) -> None:
        self.config["services"]["db"]["environment"].update(db_environment)
        self.stack_config.write_text(yaml.safe_dump(self.config, sort_keys=False))

    # -- the containers and the data ----------------------------------------------------

    def container(self, service: str) -> Container:
        return self.client.containers.get(f"{self.project}-{service}")

    def request(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        """A request to the app from inside its container (works on any engine's network)."""
        result = self.container("app").exec_run(["python3", "-c", REQUEST, method, path])
        output = result.output
        assert isinstance(output, bytes)  # not streamed
        status, _, body = output.decode().strip().partition(" ")
        assert result.exit_code == 0 and status.isdigit(), output.decode()
        return int(status), json.loads(body)

    def write_row(self) -> None:
        status, body = self.request("POST", "/records")
        assert status == 201, body
        self.rows += 1

    def wait_healthy(self, timeout: float = 90) -> None:
        """Healthy as logged, the app started after its database (it follows it, `restart:
        true`, so a database restart not yet followed is not settled) and answering."""

        def settled() -> bool:
            if any(self.running.states().get(k) != v for k, v in UP.items()):
                return False
            db, app = (self.container(s).attrs["State"] for s in ("db", "app"))
            return (
                bool(app["StartedAt"] > db["StartedAt"])
                and self.request("GET", "/records")[0] == 200
            )

        wait_until(settled, timeout=timeout, message=f"stack settled (log {self.running.log_path})")

    def assert_rows_kept(self) -> None:
        """Healthy again, every row written so far still there, and writable."""
        self.wait_healthy()
        status, body = self.request("GET", "/records")
        assert (status, body) == (200, {"count": self.rows})
        self.write_row()

    def started_at(self, service: str) -> tuple[str, str]:
        c = self.container(service)
        return str(c.id), str(c.attrs["State"]["StartedAt"])


@pytest.fixture(scope="module")
def stack(
    docker_client: docker.DockerClient,
    demo_images: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RealStack]:
    project = f"t-{uuid.uuid4().hex[:8]}"
    # The stack's own tag for the database image, so re-tagging it touches no other test.
    db_image = f"ovpn-demo-test/postgres:{project}"
    docker_client.images.get(demo_images["postgres"]).tag(db_image)
    directory = tmp_path_factory.mktemp("real-stack")
    real = RealStack(
        docker_client,
        project,
        directory,
        db_image,
        stack_config(project, directory, db_image, demo_images["app"]),
    )
    try:
        real.start_daemon()
        real.wait_healthy(timeout=120)
        for _ in range(3):
            real.write_row()
        yield real
    finally:
        if real.daemon is not None:
            real.daemon.close()
        remove_project(docker_client, project)
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(db_image, force=True)


def test_rows_survive_a_sigkill_of_the_database(stack: RealStack) -> None:
    before = stack.started_at("db")
    stack.container("db").kill(signal="SIGKILL")
    stack.running.wait_for(
        lambda: stack.started_at("db")[1] != before[1],
        timeout=60,
        what="db started again",
    )
    assert stack.started_at("db")[0] == before[0]  # restarted, the same container
    stack.assert_rows_kept()


def test_rows_survive_the_database_container_removed_out_of_band(stack: RealStack) -> None:
    volume = _data_volume(stack)
    old_id = stack.started_at("db")[0]
    stack.container("db").remove(force=True)
    stack.running.wait_for(
        lambda: _exists(stack, "db") and stack.started_at("db")[0] != old_id,
        timeout=60,
        what="db recreated",
    )
    assert _data_volume(stack) == volume == f"{stack.project}-pgdata"
    stack.assert_rows_kept()


def test_a_killed_supervisor_adopts_the_stack_without_restarting_it(stack: RealStack) -> None:
    stack.wait_healthy()
    before = {s: stack.started_at(s) for s in ("db", "app")}
    stack.running.proc.kill()
    stack.running.proc.wait(timeout=30)
    stack.running.close()
    stack.start_daemon()
    stack.running.wait_logged(
        lambda r: r.get("event") == "container adopted" and r.get("service") == "app",
        timeout=60,
        what="app adopted",
    )
    stack.assert_rows_kept()
    assert {s: stack.started_at(s) for s in ("db", "app")} == before


def test_rows_survive_a_reload_that_recreates_the_database(stack: RealStack) -> None:
    stack.wait_healthy()
    old_id = stack.started_at("db")[0]
    stack.rewrite(TZ="UTC")
    stack.cli("reload")
    assert stack.container("db").attrs["Config"]["Env"].count("TZ=UTC") == 1
    assert stack.started_at("db")[0] != old_id
    stack.assert_rows_kept()


def test_rows_survive_a_new_image_under_the_same_tag(
    stack: RealStack, docker_client: docker.DockerClient
) -> None:
    # A trivially different image (one more label) re-tagged under the stack's image name.
    base = docker_client.api.create_container(stack.db_image)
    try:
        new_image = docker_client.api.commit(
            base["Id"],
            repository=stack.db_image.rsplit(":", 1)[0],
            tag=stack.db_image.rsplit(":", 1)[1],
            changes=["LABEL io.ovpn-test.variant=2"],
        )["Id"]
    finally:
        docker_client.api.remove_container(base["Id"])
    assert _image_id(stack, "db") != new_image
    # The supervisor names images by tag: the service is recreated (here out of band, as an
    # upgrade script would) and its new container runs the re-tagged image on the same volume.
    stack.container("db").remove(force=True)
    stack.running.wait_for(
        lambda: _exists(stack, "db") and _image_id(stack, "db") == new_image,
        timeout=60,
        what="db recreated on the new image",
    )
    stack.assert_rows_kept()


def test_a_stopped_database_makes_the_app_unhealthy_and_it_recovers_alone(
    stack: RealStack,
) -> None:
    stack.wait_healthy()
    seen = len(stack.running.records())  # earlier cases made the app unhealthy too
    stack.cli("stop", "db")
    status, body = stack.request("GET", "/health")
    assert status == 503 and body["database"] == "disconnected", body
    # interval x retries + timeout = 1s x 2 + 2s; the wait's deadline is generous on 2 cores.
    # Unhealthy is brief: the app is restarted at once and then waits for its database.
    stack.running.wait_for(
        lambda: any(
            r.get("event") == "state changed"
            and r.get("service") == "app"
            and r.get("new") == "unhealthy"
            for r in stack.running.records()[seen:]
        ),
        timeout=30,
        what="app unhealthy",
    )
    # `status` says why: the app's last probe got a 503 and it waits for its stopped database.
    proc = run_cli("status", "--config", str(stack.stack_config), env=stack.env)
    assert proc.returncode != 0 and "db stopped" in proc.stdout, proc.stdout
    app_line = next(line for line in proc.stdout.splitlines() if line.startswith("app "))
    assert "waiting for dependencies" in app_line or "HTTPS 503" in app_line, proc.stdout
    app = _service_status(stack, "app")
    assert app["last_probe"]["detail"] == "HTTPS 503" and not app["last_probe"]["ok"], app
    stack.cli("start", "db")
    stack.assert_rows_kept()


def test_rows_survive_down_without_volumes_then_run(stack: RealStack) -> None:
    assert stack.stop_daemon() == 0
    stack.cli("down")
    assert not _exists(stack, "db")
    stack.start_daemon()
    stack.assert_rows_kept()


def test_a_normal_stop_shuts_postgresql_down_cleanly(stack: RealStack) -> None:
    stack.wait_healthy()
    assert stack.stop_daemon() == 0
    db = stack.container("db")
    assert db.attrs["State"]["ExitCode"] == 0  # not 137: no SIGKILL at the stop timeout
    assert "database system is shut down" in db.logs().decode()


def _service_status(stack: RealStack, name: str) -> dict[str, Any]:
    status = json.loads(run_cli("status", "--json", "--config", str(stack.stack_config)).stdout)
    found: dict[str, Any] = next(s for s in status["services"] if s["name"] == name)
    return found


def _data_volume(stack: RealStack) -> str:
    mounts = stack.container("db").attrs["Mounts"]
    return str(next(m["Name"] for m in mounts if m["Destination"] == "/var/lib/postgresql/data"))


def _image_id(stack: RealStack, service: str) -> str | None:
    image = stack.container(service).image
    return None if image is None else image.id


def _exists(stack: RealStack, service: str) -> bool:
    try:
        stack.container(service)
    except docker.errors.NotFound:
        return False
    return True


# --------------------------------------------------------------------------- engine restart


@pytest.fixture
def engine(demo_images: dict[str, str]) -> Iterator[PrivateEngine]:
    """A private engine with the demo's database and app images (never the shared dockerd)."""
    with private_engine() as started:
        started.load_image(demo_images["postgres"], demo_images["app"])
        yield started


def test_rows_survive_a_restart_of_dockerd(
    engine: PrivateEngine, demo_images: dict[str, str], tmp_path: Path
) -> None:
    project = f"t-{uuid.uuid4().hex[:8]}"
    client = engine.client()
    config = stack_config(project, tmp_path, demo_images["postgres"], demo_images["app"])
    real = RealStack(
        client,
        project,
        tmp_path,
        demo_images["postgres"],
        config,
        env=engine.env(),
        wrap=engine.wrap,
    )
    real.start_daemon()
    try:
        real.wait_healthy(timeout=120)
        real.write_row()
        real.write_row()
        client.close()
        engine.stop()  # SIGTERM: the engine stops every container on its way out
        engine.start()
        real.client = engine.client()
        real.running.wait_logged(
            lambda r: str(r.get("event", "")).startswith("docker event stream reconnected"),
            timeout=60,
            what="event stream reconnected",
        )
        real.assert_rows_kept()
    finally:
        if real.daemon is not None:
            real.daemon.close()
        real.client.close()


# --------------------------------------------------------------------------- the demo itself


def test_the_demo_runs_all_healthy_and_serves_https_through_nginx(
    demo_images: dict[str, str], project_name: str, tmp_path: Path
) -> None:
    config: dict[str, Any] = yaml.safe_load((REPO_ROOT / "config" / "demo.yaml").read_text())
    config["project"] = project_name
    port = free_port()
    config["services"]["nginx"]["ports"] = [f"127.0.0.1:{port}:8443"]
    images = {s["image"] for s in config["services"].values()}
    assert images == set(demo_images.values())
    made = subprocess.run(
        [str(REPO_ROOT / "config" / "production" / "generate-secrets"), str(tmp_path)],
        env={"PATH": "/usr/bin:/bin", "OIDC_CLIENT_SECRET": "demo", "CA_KEY_PASSPHRASE": "demo"},
        capture_output=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    path = write_config(tmp_path, config)
    with running_daemon(path, tmp_path / "daemon.log") as daemon:
        jobs = {"signing-init", "certtransparency-migrate", "frontend-migrate"}
        daemon.wait_states(
            {n: "completed" if n in jobs else "healthy" for n in config["services"]}, timeout=180
        )
        context = ssl._create_unverified_context()  # nginx's certificate is self-signed
        with urllib.request.urlopen(
            f"https://127.0.0.1:{port}/records", context=context, timeout=10
        ) as reply:
            assert json.load(reply) == {"count": 0}  # frontend, through nginx, from PostgreSQL
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout=120) == 0
    for db in ("postgres-frontend", "postgres-ct"):
        state = docker.from_env().containers.get(f"{project_name}-{db}").attrs["State"]
        assert state["ExitCode"] == 0, (db, state)
