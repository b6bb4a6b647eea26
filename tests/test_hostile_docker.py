"""Hostile input and clients against a real daemon and the real engine (issue 11)."""

from __future__ import annotations

import contextlib
import signal
import socket
from pathlib import Path
from typing import Any

import docker
import pytest
from daemon_process import run_cli, running_daemon, write_config
from live_api import live_api

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


def idle_flood(port: int, count: int) -> list[socket.socket]:
    """`count` connections that never send a byte (the client side stays open)."""
    flood = []
    for _ in range(count):
        sock = socket.socket()
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        flood.append(sock)
    return flood


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes and read until the server closes or the answer is whole."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        # No half-close: the server would take the EOF for a client gone and not answer.
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def healthz(port: int, host: str = "127.0.0.1") -> bytes:
    request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    return raw_request(port, request.encode())


def test_a_flood_of_idle_connections_neither_starves_healthz_nor_floods_the_log(
    tmp_path: Path, project_name: str, stand_in_image: str
) -> None:
    """The daemon runs with the 1,024 descriptors the issue saw exhausted."""
    with live_api(
        tmp_path, project_name, wrap=lambda argv: ["prlimit", "--nofile=1024", *argv]
    ) as live:
        port = int(live.address.rpartition(":")[2])
        log_before = live.daemon.log_path.stat().st_size
        flood = idle_flood(port, 1100)
        try:
            assert len(flood) >= 1000
            for _ in range(5):
                assert healthz(port).startswith(b"HTTP/1.1 200"), live.daemon.tail()
            status = live.get_json("/v1/status")
            assert status["daemon"]["all_up"]
        finally:
            for sock in flood:
                sock.close()
        grown = live.daemon.log_path.stat().st_size - log_before
        assert grown < 50_000, live.daemon.tail()
        assert healthz(port).startswith(b"HTTP/1.1 200")


def test_a_foreign_host_header_is_refused(
    tmp_path: Path, project_name: str, stand_in_image: str
) -> None:
    with live_api(tmp_path, project_name) as live:
        port = int(live.address.rpartition(":")[2])
        assert healthz(port, "localhost").startswith(b"HTTP/1.1 200")
        foreign = "GET /v1/status HTTP/1.1\r\nHost: rebind.attacker.example\r\n"
        refused = raw_request(port, (foreign + "Connection: close\r\n\r\n").encode())
        assert refused.startswith(b"HTTP/1.1 403"), refused
        assert b"api.allowed_hosts" in refused


def test_a_restarted_daemon_does_not_rerun_a_completed_job(
    tmp_path: Path, project_name: str, stand_in_image: str, docker_client: docker.DockerClient
) -> None:
    """Found by the soak: `init` (nothing running depends on it) ran again after a restart;
    `migrate` runs again only because its dependency `db` was recreated meanwhile."""
    health = {"interval": "500ms", "timeout": "1s", "retries": 2, "exec": ["pg_isready"]}
    job = {"STANDIN_ROLE": "job", "STANDIN_RUN_TIME": "0.2"}
    config = {
        "version": 1,
        "project": project_name,
        "defaults": {"pull": "never", "stop": {"timeout": "2s"}},
        "services": {
            "db": {"image": stand_in_image, "health": health},
            "init": {"image": stand_in_image, "type": "job", "environment": job},
            "migrate": {
                "image": stand_in_image,
                "type": "job",
                "environment": job,
                "depends_on": {"db": "healthy"},
            },
        },
    }
    path = write_config(tmp_path, config)
    done = {"db": "healthy", "init": "completed", "migrate": "completed"}
    with running_daemon(path, tmp_path / "first.log") as first:
        first.wait_states(done, timeout=60)
        first.signal(signal.SIGKILL)
        first.wait_exit(timeout=10)
    docker_client.containers.get(f"{project_name}-db").remove(force=True)
    with running_daemon(path, tmp_path / "second.log") as second:
        second.wait_states(done, timeout=60)
        started = [r["service"] for r in second.records() if r.get("event") == "container started"]
    assert sorted(started) == ["db", "migrate"]


MALFORMED = [
    b"\r\n\r\n",
    b"GARBAGE\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /healthz\r\n\r\n",  # HTTP/0.9
    b"G\x00T /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"b" * 20_000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-A: 1\r\n" * 500 + b"\r\n",
    b"GET / HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET /%zz%00 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /v1/services/%2e%2e%2f%2e%2e HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"POST /v1/reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n",
    b"POST /v1/reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999999999\r\n\r\nx",
    b"POST /v1/reload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /v1/reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /v1/services/web/restart HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Authorization: Bearer \xff\xfe\r\nContent-Length: 0\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # a TLS ClientHello
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"DELETE /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /x HTTP/1.1\r\n\r\nBAD\r\n\r\n",
]


def status_codes(answer: bytes) -> list[int]:
    """The status code of every response in `answer` (pipelined ones too)."""
    return [
        int(line.split()[1])
        for line in answer.split(b"\r\n")
        if line.startswith(b"HTTP/1.") and len(line.split()) > 1 and line.split()[1].isdigit()
    ]


def test_malformed_requests_get_no_5xx_and_the_daemon_keeps_answering(
    tmp_path: Path, project_name: str, stand_in_image: str
) -> None:
    from hypothesis import HealthCheck, given, settings  # noqa: PLC0415 - fuzz only here
    from hypothesis import strategies as st  # noqa: PLC0415

    with live_api(tmp_path, project_name) as live:
        port = int(live.address.rpartition(":")[2])
        for request in MALFORMED:
            answer = raw_request(port, request, timeout=3)
            assert all(code < 500 for code in status_codes(answer)), (request[:80], answer[:300])

        @settings(
            max_examples=80,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(
            head=st.sampled_from([b"GET /", b"POST /v1/", b"GET /v1/services/", b"", b"HEAD /"]),
            junk=st.binary(max_size=200),
        )
        def random_bytes(head: bytes, junk: bytes) -> None:
            answer = raw_request(port, head + junk + b"\r\n\r\n", timeout=1)
            assert all(code < 500 for code in status_codes(answer)), (junk, answer[:300])

        random_bytes()
        assert live.daemon.proc.poll() is None
        assert healthz(port).startswith(b"HTTP/1.1 200")
        assert live.get_json("/v1/status")["daemon"]["all_up"]
        assert "Traceback" not in live.daemon.log_path.read_text()


def test_an_operator_stop_outlives_a_reload_that_recreates_the_service(
    tmp_path: Path, project_name: str, stand_in_image: str, docker_client: docker.DockerClient
) -> None:
    """Found by the soak: a stopped service whose config changed was started by the reload."""
    config: dict[str, Any] = {
        "version": 1,
        "project": project_name,
        "defaults": {"pull": "never", "stop": {"timeout": "2s"}},
        "services": {
            "db": {"image": stand_in_image},
            "worker": {
                "image": stand_in_image,
                "environment": {"GENERATION": "1"},
                "depends_on": {"db": "started"},
            },
        },
    }
    path = write_config(tmp_path, config)
    with running_daemon(path, tmp_path / "daemon.log") as daemon:
        daemon.wait_states({"db": "running", "worker": "running"}, timeout=60)
        assert run_cli("stop", "worker", "--config", str(path)).returncode == 0
        daemon.wait_states({"worker": "stopped"}, timeout=30)
        config["services"]["worker"]["environment"]["GENERATION"] = "2"
        write_config(tmp_path, config)
        reload = run_cli("reload", "--config", str(path), timeout=120)
        assert reload.returncode == 0, reload.stdout + reload.stderr
        assert daemon.states()["worker"] == "stopped"
        worker = docker_client.containers.list(all=True, filters={"name": f"{project_name}-worker"})
        assert [c.status for c in worker] in ([], ["exited"], ["created"])
        assert run_cli("start", "worker", "--config", str(path)).returncode == 0
        daemon.wait_states({"worker": "running"}, timeout=30)
        env = docker_client.containers.get(f"{project_name}-worker").attrs["Config"]["Env"]
        assert "GENERATION=2" in env
        # Stopped, recreated while stopped, then removed: its old container goes too.
        assert run_cli("stop", "worker", "--config", str(path)).returncode == 0
        daemon.wait_states({"worker": "stopped"}, timeout=30)
        config["services"]["worker"]["environment"]["GENERATION"] = "3"
        write_config(tmp_path, config)
        assert run_cli("reload", "--config", str(path), timeout=120).returncode == 0
        del config["services"]["worker"]
        write_config(tmp_path, config)
        assert run_cli("reload", "--config", str(path), timeout=120).returncode == 0
        assert not docker_client.containers.list(
            all=True, filters={"name": f"{project_name}-worker"}
        )
