"""Hostile input and clients against a real daemon and the real engine (issue 11)."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest
from daemon_process import running_daemon, write_config

pytestmark = pytest.mark.docker


def test_one_file_as_two_binds_and_a_secret_gives_three_mounts(
    tmp_path: Path, project_name: str, stand_in_image: str, docker_client: docker.DockerClient
) -> None:
    shared = tmp_path / "shared.txt"
    shared.write_text("same source\n")
    config = {
        "version": 1,
        "project": project_name,
        "defaults": {"pull": "never"},
        "secrets": {"shared": {"file": str(shared)}},
        "services": {
            "app": {
                "image": stand_in_image,
                "volumes": [f"{shared}:/a:ro", f"{shared}:/b:ro"],
                "secrets": ["shared"],
            }
        },
    }
    path = write_config(tmp_path, config)
    with running_daemon(path, tmp_path / "daemon.log") as daemon:
        daemon.wait_states({"app": "running"}, timeout=60)
        mounts = docker_client.api.inspect_container(f"{project_name}-app")["Mounts"]
    found = sorted((m["Source"], m["Destination"]) for m in mounts)
    assert found == [(str(shared), "/a"), (str(shared), "/b"), (str(shared), "/run/secrets/shared")]
