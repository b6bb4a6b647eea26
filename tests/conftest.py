"""Shared fixtures: the real Docker Engine, the stand-in image and per-test project names."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from docker.models.containers import Container
from helpers import RunStandIn

REPO_ROOT = Path(__file__).resolve().parent.parent
STAND_IN_IMAGE = "ovpn-stand-in:latest"
PROJECT_LABEL = "io.ovpn-supervisor.project"
SERVICE_LABEL = "io.ovpn-supervisor.service"


@pytest.fixture(autouse=True, scope="session")
def private_fixture_tokens() -> None:
    """The config refuses a token file others may read; git does not keep file modes."""
    for token in (REPO_ROOT / "tests" / "fixtures").rglob("*token*"):
        token.chmod(0o600)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A docker-py client for the real engine; fails (never skips) when it is unreachable."""
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # any failure means the same thing here
        pytest.fail(f"Docker Engine not reachable: run scripts/ensure-dockerd ({exc})")
    yield client
    client.close()


def build_images(script: str, timeout: float) -> None:
    """Run scripts/SCRIPT (a cached image build); a failure fails the test, never skips it."""
    proc = subprocess.run(
        [str(REPO_ROOT / "scripts" / script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/{script} failed:\n{proc.stdout}{proc.stderr}")


@pytest.fixture(scope="session")
def stand_in_image(docker_client: docker.DockerClient) -> str:
    """Name of the stand-in image, built (or found up to date) once per session."""
    build_images("build-stand-in-image", timeout=300)
    return STAND_IN_IMAGE


@pytest.fixture(scope="session")
def demo_images(docker_client: docker.DockerClient) -> dict[str, str]:
    """The real demo images (scripts/build-demo-images; scripts/test builds them beforehand,
    so a cold debootstrap is not inside a test)."""
    build_images("build-demo-images", timeout=900)
    return {
        "postgres": "ovpn-demo/postgres:15",
        "nginx": "ovpn-demo/nginx:1.22",
        "app": "ovpn-demo/app:1",
    }


def remove_project(client: docker.DockerClient, name: str) -> None:
    """Force-remove every container, network and volume of project ``name``."""
    label: dict[str, str | list[str] | bool] = {"label": f"{PROJECT_LABEL}={name}"}
    prefix = f"{name}-"
    containers = {c.id: c for c in client.containers.list(all=True, filters=label)}
    for c in client.containers.list(all=True, filters={"name": prefix}):
        if c.name and c.name.startswith(prefix):
            containers[c.id] = c
    for c in containers.values():
        with contextlib.suppress(docker.errors.NotFound):
            c.remove(force=True, v=True)
    networks = {n.id: n for n in client.networks.list(filters=label)}
    for n in client.networks.list(names=[prefix]):
        if n.name and n.name.startswith(prefix):
            networks[n.id] = n
    for n in networks.values():
        with contextlib.suppress(docker.errors.NotFound):
            n.remove()
    volumes = {v.id: v for v in client.volumes.list(filters=label)}
    for v in client.volumes.list():
        if v.name and v.name.startswith(prefix):
            volumes[v.id] = v
    for v in volumes.values():
        with contextlib.suppress(docker.errors.NotFound):
            v.remove(force=True)


@pytest.fixture
def project_name(docker_client: docker.DockerClient) -> Iterator[str]:
    """A unique project name (``t-<8 hex>``); everything of that project is removed afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    yield name
    remove_project(docker_client, name)


@pytest.fixture
def run_stand_in(
    docker_client: docker.DockerClient, stand_in_image: str, project_name: str
) -> RunStandIn:
    """Factory: start a stand-in container ``<project>-<service>`` labelled with the project.

    Keyword arguments: ``env`` (dict), ``port`` (container port published on 127.0.0.1, or
    None), plus any ``containers.run`` keyword.
    """

    def run(
        service: str = "svc",
        *,
        env: dict[str, str] | None = None,
        port: int | None = 8080,
        **kwargs: Any,
    ) -> Container:
        # Published on loopback only, on a free port: tests talk to 127.0.0.1 alone.
        ports: dict[str, Any] = {f"{port}/tcp": ("127.0.0.1",)} if port is not None else {}
        labels = {PROJECT_LABEL: project_name, SERVICE_LABEL: service}
        container: Container = docker_client.containers.run(
            stand_in_image,
            name=f"{project_name}-{service}",
            environment=env or {},
            labels=labels,
            ports=ports,
            detach=True,
            **kwargs,
        )
        return container

    return run
