"""Backup and restore with a real PostgreSQL (ovpn-demo/postgres:15, scripts/build-demo-images):
rows written, backup, rows changed, restore, the original rows are back."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest
from daemon_process import run_cli, running_daemon, write_config

pytestmark = pytest.mark.docker


@pytest.fixture(scope="session")
def postgres_image(demo_images: dict[str, str]) -> str:
    """The real PostgreSQL image (scripts/build-demo-images; cached after the first build)."""
    return demo_images["postgres"]


def psql(client: docker.DockerClient, container: str, sql: str) -> str:
    exec_id = str(
        client.api.exec_create(container, ["psql", "-U", "app", "-d", "app", "-tAq", "-c", sql])[
            "Id"
        ]
    )
    output = client.api.exec_start(exec_id).decode()
    assert client.api.exec_inspect(exec_id)["ExitCode"] == 0, output
    return output.strip()


@pytest.mark.timeout(1800)  # the first build of the PostgreSQL image, on a fresh machine
def test_pg_dump_backup_and_psql_restore_bring_the_rows_back(
    tmp_path: Path,
    project_name: str,
    postgres_image: str,
    stand_in_image: str,
    docker_client: docker.DockerClient,
) -> None:
    config = {
        "version": 1,
        "project": project_name,
        "defaults": {"health": {"interval": "1s", "start_interval": "200ms"}, "pull": "never"},
        "backups": {"dir": str(tmp_path / "backups")},
        "services": {
            "db": {
                "image": postgres_image,
                "environment": {"POSTGRES_USER": "app", "POSTGRES_PASSWORD": "secret"},
                "health": {"exec": ["pg_isready", "-U", "app", "-d", "app"]},
                "stop": {"signal": "SIGINT", "timeout": "10s"},
                "backup": {"exec": ["pg_dump", "-U", "app", "--clean", "--if-exists", "app"]},
                "restore": {
                    "exec": ["psql", "-v", "ON_ERROR_STOP=1", "-q", "-U", "app", "-d", "app"]
                },
            },
            "app": {
                "image": stand_in_image,
                "depends_on": {"db": "healthy"},
                "health": {"http": {"port": 8080, "path": "/health"}},
            },
        },
    }
    path = write_config(tmp_path, config)
    db = f"{project_name}-db"
    with running_daemon(path, tmp_path / "daemon.log") as daemon:
        daemon.wait_states({"db": "healthy", "app": "healthy"}, timeout=90)
        psql(
            docker_client,
            db,
            "CREATE TABLE certs (serial int, subject text);"
            "INSERT INTO certs VALUES (1, 'alice'), (2, 'bob')",
        )

        proc = run_cli("backup", "--config", str(path), timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        backup = Path(proc.stdout.splitlines()[-1].strip())
        assert backup.parent == tmp_path / "backups" / "db"
        assert "INSERT INTO" in backup.read_text() or "COPY public.certs" in backup.read_text()

        psql(
            docker_client,
            db,
            "DELETE FROM certs WHERE serial = 1;"
            "UPDATE certs SET subject = 'mallory'; INSERT INTO certs VALUES (3, 'eve')",
        )
        assert (
            psql(docker_client, db, "SELECT subject FROM certs ORDER BY serial") == "mallory\neve"
        )

        proc = run_cli("restore", "db", str(backup), "--config", str(path), timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert psql(docker_client, db, "SELECT serial, subject FROM certs ORDER BY serial") == (
            "1|alice\n2|bob"
        )
        # The dependent was stopped around the restore and is back.
        stops = [
            r
            for r in daemon.records()
            if r.get("service") == "app"
            and r.get("event") == "state changed"
            and r["new"] == "stopped"
        ]
        assert stops, "app was not stopped during the restore"
        daemon.wait_states({"db": "healthy", "app": "healthy"}, timeout=30)
        # A restore of a backup that is not there says so and changes nothing.
        proc = run_cli("restore", "db", "nope.backup", "--config", str(path), timeout=60)
        assert proc.returncode == 1 and "no backup file" in proc.stdout, proc.stdout
