"""The API component: bound before Docker is touched, served once its server is imported."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from pathlib import Path
from typing import Any

import docker
import pytest
from daemon_process import free_port, run_cli, running_daemon, write_config

from supervisor import api_component as component
from supervisor.api_component import api_component
from supervisor.api_setup import ApiSetupError
from supervisor.config import parse_config
from supervisor.daemon import Supervisor
from supervisor.spec import LABEL_PROJECT
from supervisor.status import StackObserver


class EngineThatAnswers:
    async def ping(self) -> None:
        return None


def supervisor_on(tmp_path: Path, port: int, *, token_file: bool = True) -> Supervisor:
    token = tmp_path / "api.token"
    token.write_text("t" * 32)
    token.chmod(0o600)
    listen = f"listen: '127.0.0.1:{port}'"
    api = f"api: {{{listen}, token_file: '{token}'}}" if token_file else f"api: {{{listen}}}"
    text = f"version: 1\nproject: p\n{api}\nservices:\n  db: {{image: x}}\n"
    path = tmp_path / "supervisor.yaml"
    path.write_text(text)
    engine: Any = EngineThatAnswers()  # the API pings the engine and reads nothing else here
    return Supervisor(path, parse_config(text, source=path), runtime=engine)


async def came_up(supervisor: Supervisor) -> None:
    """Until the component reports, whether it serves or gave up."""
    reported = asyncio.Event()

    class Watch(StackObserver):
        def component_came_up(self, component: str) -> None:
            reported.set()

    supervisor.observers.add(Watch())
    if supervisor.coming_up:
        async with asyncio.timeout(30):
            await reported.wait()
    assert not supervisor.coming_up


async def get_json(url: str) -> tuple[int, dict[str, object]]:
    def fetch() -> tuple[int, dict[str, object]]:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, json.load(answer)

    return await asyncio.to_thread(fetch)


async def test_the_address_is_bound_at_once_and_served_once_imported(tmp_path: Path) -> None:
    port = free_port()
    supervisor = supervisor_on(tmp_path, port)
    served = api_component(supervisor)
    # Bound before the context is even entered: a second bind fails now, not later.
    with pytest.raises(ApiSetupError, match=f"cannot listen on 127.0.0.1:{port}"):
        api_component(supervisor_on(tmp_path, port))
    async with served:
        assert supervisor.coming_up == {"api"}
        await came_up(supervisor)
        status, body = await get_json(f"http://127.0.0.1:{port}/v1/status")
        assert status == 200 and body["services"] == []
    # Closed with the daemon: the port is free again.
    with socket.create_server(("127.0.0.1", port)):
        pass


async def test_a_server_that_cannot_come_up_holds_nothing_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(component, "SERVER_MODULES", ("supervisor.no_such_module",))
    port = free_port()
    supervisor = supervisor_on(tmp_path, port, token_file=False)
    generated = tmp_path / "generated.token"
    monkeypatch.setattr(component, "generated_token_path", lambda listen: generated)
    async with api_component(supervisor):
        assert generated.exists()
        await came_up(supervisor)  # readiness is not withheld for ever
    assert "api not served; the stack runs on without it" in capsys.readouterr().out
    assert not generated.exists()
    with socket.create_server(("127.0.0.1", port)):
        pass


@pytest.mark.docker
def test_a_second_daemon_on_the_same_address_exits_78_before_touching_docker(
    tmp_path: Path, project_name: str, stand_in_image: str, docker_client: docker.DockerClient
) -> None:
    first: dict[str, Any] = {
        "version": 1,
        "project": project_name,
        "defaults": {"pull": "never", "stop": {"timeout": "5s"}},
        "services": {"app": {"image": stand_in_image}},
    }
    path = write_config(tmp_path, first)
    with running_daemon(path, tmp_path / "daemon.log") as daemon:
        daemon.wait_states({"app": "running"}, timeout=60)
        second_project = f"{project_name}-b"
        second = {**first, "project": second_project, "api": first["api"]}
        (tmp_path / "second").mkdir()
        second_path = write_config(tmp_path / "second", second)
        refused = run_cli("run", "--config", str(second_path))
        assert refused.returncode == 78, refused.stderr
        assert f"cannot listen on {first['api']['listen']}" in refused.stderr
        made = docker_client.containers.list(
            all=True, filters={"label": f"{LABEL_PROJECT}={second_project}"}
        )
        assert made == []
        # The first daemon still serves its address.
        url = f"http://{first['api']['listen']}/v1/status"
        with urllib.request.urlopen(url, timeout=5) as answer:
            assert [s["name"] for s in json.load(answer)["services"]] == ["app"]
