"""Image updates, rollbacks, pins, backups and restores against the real engine.

A test-unique image name starts as the stand-in; a "new release" is a `docker commit` of it
with a changed config, tagged under the same name, so parallel tests never share an image.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from conftest import STAND_IN_IMAGE, remove_project
from daemon_process import REPO_ROOT, DaemonProcess, run_cli, running_daemon, write_config
from helpers import wait_until

pytestmark = pytest.mark.docker

PINNED_LABEL = "io.ovpn-supervisor.pinned-image"
UP = {"db": "healthy", "migrate": "completed", "app": "healthy", "web": "healthy"}
TIMING = {"interval": "1s", "timeout": "1s", "retries": 2, "start_interval": "100ms"}


def run_in(client: docker.DockerClient, container: str, argv: list[str]) -> bytes:
    """A command's output, run inside a container."""
    return bytes(client.api.exec_start(str(client.api.exec_create(container, argv)["Id"])))


@dataclass
class Images:
    """A test-unique image name (`reference`) and every image made for the test."""

    client: docker.DockerClient
    repository: str
    made: list[str] = field(default_factory=list)

    @property
    def reference(self) -> str:
        return f"{self.repository}:latest"

    def id_of(self, reference: str) -> str:
        return str(self.client.images.get(reference).id)

    def release(self, *changes: str) -> str:
        """A new image under `reference`: the stand-in with `changes` (Dockerfile lines)."""
        container = self.client.api.create_container(STAND_IN_IMAGE)
        try:
            made = self.client.api.commit(
                container["Id"], self.repository, "latest", changes=list(changes)
            )
        finally:
            self.client.api.remove_container(container["Id"], force=True)
        self.made.append(str(made["Id"]))
        return str(made["Id"])


@pytest.fixture
def images(
    docker_client: docker.DockerClient, stand_in_image: str, project_name: str
) -> Iterator[Images]:
    found = Images(docker_client, f"ovpn-update-test-{project_name}")
    docker_client.api.tag(stand_in_image, found.repository, "latest")
    yield found
    remove_project(docker_client, project_name)  # containers first: they hold the images
    tags = [found.reference, f"{found.repository}-extra:latest"]
    tags += [f"ovpn-supervisor-rollback:{project_name}.{s}" for s in ("migrate", "app")]
    for name in (*tags, *found.made):
        with contextlib.suppress(docker.errors.APIError):
            docker_client.api.remove_image(name, noprune=False)


def stack(project: str, tmp_path: Path, image: str) -> dict[str, Any]:
    """db (stand-in, with backup/restore) <- migrate (job) <- app <- web; app and migrate on
    the test image, which is what an update changes."""
    return {
        "version": 1,
        "project": project,
        "defaults": {"health": {**TIMING, "start_period": "3s"}, "pull": "never"},
        "backups": {"dir": str(tmp_path / "backups")},
        "services": {
            "db": {
                "image": STAND_IN_IMAGE,
                "health": {"exec": ["pg_isready"]},
                "backup": {"exec": ["sh", "-c", "cat /tmp/rows"], "keep": 2},
                "restore": {"exec": ["sh", "-c", "cat > /tmp/rows"]},
            },
            "migrate": {
                "image": image,
                "type": "job",
                "environment": {"STANDIN_ROLE": "job", "STANDIN_RUN_TIME": "0.3"},
                "depends_on": {"db": "healthy"},
                "restart": {"policy": "no"},
            },
            "app": {
                "image": image,
                "depends_on": {
                    "migrate": "completed",
                    "db": {"condition": "healthy", "restart": True},
                },
                "health": {"http": {"port": 8080, "path": "/health"}},
            },
            "web": {
                "image": STAND_IN_IMAGE,
                "depends_on": {"app": "healthy"},
                "health": {"http": {"port": 8080, "path": "/health"}},
            },
        },
    }


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--config", str(config), timeout=120)


def update(config: Path, *args: str) -> tuple[int, dict[str, Any]]:
    proc = cli(config, "update", "--json", *args)
    assert proc.stdout, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return proc.returncode, result


def containers(client: docker.DockerClient, project: str) -> dict[str, dict[str, Any]]:
    """service -> the engine's inspect answer, for every container of the project."""
    found = client.api.containers(
        all=True, filters={"label": f"io.ovpn-supervisor.project={project}"}
    )
    out = {}
    for c in found:
        info = client.api.inspect_container(c["Id"])
        out[info["Config"]["Labels"]["io.ovpn-supervisor.service"]] = info
    return out


@contextlib.contextmanager
def up(tmp_path: Path, config: dict[str, Any], log: str = "daemon.log") -> Iterator[DaemonProcess]:
    path = tmp_path / "supervisor.yaml"
    if not path.exists():
        write_config(tmp_path, config)
    with running_daemon(path, tmp_path / log) as daemon:
        daemon.wait_states(UP, timeout=60)
        yield daemon


def test_update_recreates_exactly_the_changed_services_migration_first(
    tmp_path: Path, project_name: str, images: Images, docker_client: docker.DockerClient
) -> None:
    config = stack(project_name, tmp_path, images.reference)
    config["services"]["extra"] = {"image": f"{images.repository}-extra:latest", "pull": "missing"}
    docker_client.api.tag(STAND_IN_IMAGE, f"{images.repository}-extra", "latest")
    path = tmp_path / "supervisor.yaml"
    with up(tmp_path, config) as daemon:
        run_in(docker_client, f"{project_name}-db", ["sh", "-c", "echo v1 > /tmp/rows"])
        before = containers(docker_client, project_name)
        old = images.id_of(images.reference)
        new = images.release("LABEL release=2")

        # --dry-run: the plan, and not one container touched.
        code, dry = update(path, "--dry-run")
        assert code == 0 and dry["dry_run"], dry
        assert [line.split(" (")[0] for line in dry["plan"]] == [
            "back up db",
            "1. rerun-job migrate",
            "2. recreate app",
        ]
        assert {s: c["Id"] for s, c in containers(docker_client, project_name).items()} == {
            s: c["Id"] for s, c in before.items()
        }

        code, result = update(path)
        assert code == 0, result
        assert [(s["service"], s["outcome"]) for s in result["services"]] == [
            ("migrate", "updated"),
            ("app", "updated"),
        ]
        after = containers(docker_client, project_name)
        for name in ("db", "web", "extra"):
            assert after[name]["Id"] == before[name]["Id"], f"{name} was touched"
        for name in ("migrate", "app"):
            assert after[name]["Id"] != before[name]["Id"]
            assert after[name]["Image"] == new != old
        # Migration before the app: the job had finished before the app's container started.
        assert after["migrate"]["State"]["FinishedAt"] < after["app"]["State"]["StartedAt"]
        # The database was backed up before the migration, under the images it ran with.
        (backup,) = result["backups"]
        assert Path(backup).read_text() == "v1\n"
        assert f"migrate-{old.removeprefix('sha256:')[:12]}" in Path(backup).name
        daemon.wait_states(UP, timeout=30)

        # Bad input: an unknown service is named, exit 2; a failed pull leaves the service.
        proc = cli(path, "update", "nope")
        assert proc.returncode == 2 and "nope" in proc.stderr, proc.stderr
        code, pulled = update(path, "--pull", "extra")
        assert code == 1
        assert [(s["service"], s["outcome"]) for s in pulled["services"]] == [("extra", "skipped")]
        assert "pull failed" in pulled["services"][0]["reason"]
        assert containers(docker_client, project_name)["extra"]["Id"] == before["extra"]["Id"]

        # Backup on demand, rows changed, restore: the rows are back; app and web (its
        # dependents) were stopped around it and run again.
        proc = cli(path, "backup", "db")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        taken = proc.stdout.splitlines()[-1].strip()
        run_in(docker_client, f"{project_name}-db", ["sh", "-c", "echo v2 > /tmp/rows"])
        proc = cli(path, "restore", "db", Path(taken).name)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        rows = run_in(docker_client, f"{project_name}-db", ["cat", "/tmp/rows"])
        assert rows == b"v1\n"
        restarted = containers(docker_client, project_name)
        for name in ("app", "web"):
            assert restarted[name]["State"]["StartedAt"] > after[name]["State"]["StartedAt"]
        daemon.wait_states(UP, timeout=30)


def test_new_image_that_never_gets_healthy_is_rolled_back_and_stays_pinned(
    tmp_path: Path, project_name: str, images: Images, docker_client: docker.DockerClient
) -> None:
    path = tmp_path / "supervisor.yaml"
    with up(tmp_path, stack(project_name, tmp_path, images.reference)) as daemon:
        old = images.id_of(images.reference)
        bad = images.release("ENV STANDIN_READY_DELAY=3600")  # /health stays 503
        proc = cli(path, "update", "--no-backup")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "app: rolled-back" in proc.stdout, proc.stdout
        # The event history says so too, with both image IDs.
        [event] = [
            r for r in daemon.records() if r.get("kind") == "update" and r.get("service") == "app"
        ]
        assert event["data"]["outcome"] == "rolled-back"
        assert (event["data"]["old_image"], event["data"]["new_image"]) == (old, bad)
        assert "migration migrate ran on the new image" in proc.stdout
        app = containers(docker_client, project_name)["app"]
        assert app["Image"] == old
        assert app["Config"]["Labels"][PINNED_LABEL] == old
        assert app["Config"]["Labels"]["io.ovpn-supervisor.rejected-image"] == bad
        status = json.loads(cli(path, "status", "--json").stdout)
        assert {s["name"]: s["state"] for s in status["services"]}["app"] == "healthy"
        assert status["daemon"]["last_update"]["ok"] is False
    # A daemon restart keeps the pin, and so does a container lost out of band.
    with up(tmp_path, {}, log="daemon2.log") as daemon:
        assert containers(docker_client, project_name)["app"]["Image"] == old
        docker_client.api.remove_container(f"{project_name}-app", force=True)
        wait_until(
            lambda: (
                containers(docker_client, project_name).get("app", {}).get("Image") == old
                and daemon.states().get("app") == "healthy"
            ),
            timeout=30,
            message="app recreated on its pinned image",
        )
        # The broken release is not tried again unless the service is named.
        code, again = update(path, "--no-backup")
        assert code == 0 and again["services"] == [], again
        assert any("rolled back before" in line for line in again["plan"]), again
        # A good release next: the update succeeds and the pin goes.
        good = images.release("LABEL release=3")
        code, result = update(path, "--no-backup")
        assert code == 0, result
        app = containers(docker_client, project_name)["app"]
        assert app["Image"] == good
        assert PINNED_LABEL not in app["Config"]["Labels"]
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(60) == 0


def test_failed_migration_on_the_new_image_leaves_the_app_alone(
    tmp_path: Path, project_name: str, images: Images, docker_client: docker.DockerClient
) -> None:
    path = tmp_path / "supervisor.yaml"
    with up(tmp_path, stack(project_name, tmp_path, images.reference)) as daemon:
        before = containers(docker_client, project_name)
        images.release("ENV STANDIN_EXIT_CODE=3")  # the job exits 3
        code, result = update(path, "--no-backup")
        assert code == 1
        assert [(s["service"], s["outcome"]) for s in result["services"]] == [("migrate", "failed")]
        assert any("cannot be undone" in note for note in result["notes"])
        after = containers(docker_client, project_name)
        assert after["app"]["Id"] == before["app"]["Id"]
        assert after["app"]["State"]["StartedAt"] == before["app"]["State"]["StartedAt"]
        assert daemon.states()["app"] == "healthy"


def test_daemon_killed_mid_update_rolls_the_service_back_when_it_returns(
    tmp_path: Path, project_name: str, images: Images, docker_client: docker.DockerClient
) -> None:
    path = tmp_path / "supervisor.yaml"
    journal = tmp_path / "backups" / ".update-journal.json"
    with up(tmp_path, stack(project_name, tmp_path, images.reference)) as daemon:
        old = images.id_of(images.reference)
        new = images.release("ENV STANDIN_READY_DELAY=3600")
        updating = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "update", "--no-backup", "--config", str(path)],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(
                lambda: (
                    journal.exists()
                    and json.loads(journal.read_text())["service"] == "app"
                    and containers(docker_client, project_name)["app"]["Image"] == new
                ),
                timeout=30,
                message="the update is recreating app",
            )
            daemon.proc.kill()  # no chance to finish or roll back
            daemon.proc.wait(timeout=10)
        finally:
            updating.kill()
            updating.wait(timeout=10)
    with running_daemon(path, tmp_path / "daemon2.log") as daemon:
        record = daemon.wait_logged(
            lambda r: r.get("event") == "update finished", timeout=60, what="recovery"
        )
        assert record["ok"] is False
        assert record["services"] == ["app: rolled-back"]
        app = containers(docker_client, project_name)["app"]
        assert app["Image"] == old
        assert app["Config"]["Labels"][PINNED_LABEL] == old
        assert not journal.exists()
        names = [
            c["Names"]
            for c in docker_client.api.containers(all=True, filters={"name": f"{project_name}-app"})
        ]
        assert names == [[f"/{project_name}-app"]]  # one container for the service
        daemon.wait_states(UP, timeout=30)


def test_automatic_update_runs_on_its_schedule(
    tmp_path: Path, project_name: str, images: Images, docker_client: docker.DockerClient
) -> None:
    config = stack(project_name, tmp_path, images.reference)
    config["update"] = {"every": "2s", "pull": False}
    with up(tmp_path, config) as daemon:
        old = images.id_of(images.reference)
        new = images.release("LABEL release=2")
        # The database's backup command fails (no /tmp/rows yet): the update stops before
        # anything changes.
        refused = daemon.wait_logged(
            lambda r: (
                r.get("event") == "update finished"
                and str(r.get("message")).startswith("backup failed, nothing changed")
            ),
            timeout=30,
            what="an automatic update stopped by a failed backup",
        )
        assert refused["ok"] is False
        assert containers(docker_client, project_name)["app"]["Image"] == old
        db = f"{project_name}-db"
        run_in(docker_client, db, ["sh", "-c", "echo v1 > /tmp/rows"])
        record = daemon.wait_logged(
            lambda r: r.get("event") == "update finished" and bool(r.get("services")),
            timeout=30,
            what="an automatic update",
        )
        assert record["ok"] is True
        assert record["services"] == ["migrate: updated", "app: updated"]
        assert containers(docker_client, project_name)["app"]["Image"] == new
