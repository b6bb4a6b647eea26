"""Hostile input and clients against a real daemon and the real engine (issue 11)."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import docker
import pytest
from daemon_process import running_daemon, write_config
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
