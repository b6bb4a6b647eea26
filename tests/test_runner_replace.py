"""A stopped container the engine refuses to start is replaced by a new one (same spec)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import docker
import pytest
from daemon_process import running_daemon, write_config

from supervisor.clock import SYSTEM_CLOCK
from supervisor.config import load_config, parse_config
from supervisor.docker_api import ContainerInfo, DockerError, DockerUnavailable
from supervisor.engine_gate import EngineGate
from supervisor.runner import ServiceRunner
from supervisor.spec import ContainerSpec, container_spec
from supervisor.state_board import StateBoard
from supervisor.status import StackObserver

CONFIG = "version: 1\nproject: p\nservices:\n  db: {image: db:1}\n"


class Runtime:
    """The container `old` exists, stopped, with the current config; starting it fails with
    `refusal` (as after an engine died mid-start and left its task behind)."""

    def __init__(self, config_hash: str, refusal: DockerError) -> None:
        self.config_hash = config_hash
        self.refusal = refusal
        self.calls: list[str] = []

    async def inspect_container(self, name_or_id: str) -> ContainerInfo | None:
        running = name_or_id == "new"
        cid = "new" if running else "old"
        return ContainerInfo(
            cid, "p-db", "db", self.config_hash, "exited", running, 0, False, "", ""
        )

    async def image_present(self, image: str) -> bool:
        return True

    async def pull_image(self, image: str) -> None:
        raise AssertionError("no pull")

    async def create_container(self, spec: ContainerSpec) -> str:
        self.calls.append(f"create {spec.name}")
        return "new"

    async def start_container(self, container_id: str) -> None:
        self.calls.append(f"start {container_id}")
        if container_id == "old":
            raise self.refusal

    async def stop_container(self, container_id: str, timeout: float) -> None:
        self.calls.append(f"stop {container_id}")

    async def kill_container(self, container_id: str, signal: str = "SIGKILL") -> bool:
        self.calls.append(f"kill {container_id}")
        return True

    async def remove_container(self, container_id: str) -> None:
        self.calls.append(f"remove {container_id}")


def runner(runtime_for: type[Runtime], refusal: DockerError) -> tuple[ServiceRunner, Runtime]:
    stack = parse_config(CONFIG)
    service = stack.services["db"]
    made = ServiceRunner(
        stack,
        service,
        None,  # type: ignore[arg-type]  # set below, once the spec's hash is known
        None,  # type: ignore[arg-type]  # no probes here
        StateBoard(),
        SYSTEM_CLOCK,
        StackObserver(),
        EngineGate(),
    )
    runtime = runtime_for(made.spec.config_hash, refusal)
    made._runtime = runtime
    return made, runtime


def test_a_container_that_cannot_start_is_replaced_and_the_new_one_started() -> None:
    made, runtime = runner(Runtime, DockerError("task 0123: already exists"))
    container_id, _ = asyncio.run(made._start())
    assert container_id == "new"
    assert runtime.calls == ["start old", "remove old", "create p-db", "start new"]


def test_an_unreachable_engine_is_not_a_reason_to_replace_anything() -> None:
    made, runtime = runner(Runtime, DockerUnavailable("engine gone"))
    with pytest.raises(DockerUnavailable):
        asyncio.run(made._start())
    assert runtime.calls == ["start old"]


@pytest.mark.docker
def test_on_the_engine_a_container_that_cannot_start_is_replaced(
    tmp_path: Path, project_name: str, stand_in_image: str, docker_client: docker.DockerClient
) -> None:
    config: dict[str, Any] = {
        "version": 1,
        "project": project_name,
        "defaults": {"pull": "never"},
        "services": {
            "web": {
                "image": stand_in_image,
                "health": {"http": {"port": 8080, "path": "/health"}, "interval": "1s"},
            }
        },
    }
    path = write_config(tmp_path, config)
    stack = load_config(path)
    spec = container_spec(stack, stack.services["web"])
    # A container of the right name and config hash that the engine cannot start, as one left
    # with a stale task by an engine that died during its start.
    stuck = docker_client.api.create_container(
        stand_in_image, name=spec.name, labels=dict(spec.labels), entrypoint=["/nonexistent"]
    )["Id"]
    with running_daemon(path, tmp_path / "daemon.log") as daemon:
        daemon.wait_states({"web": "healthy"}, timeout=60)
        replaced = daemon.wait_logged(
            lambda r: r.get("event") == "container cannot start; replacing it",
            timeout=5,
            what="the replacement logged",
        )
    assert replaced["container"] == stuck[:12]
    assert docker_client.containers.get(spec.name).id != stuck
