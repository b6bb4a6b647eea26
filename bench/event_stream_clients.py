"""What live event-stream clients cost the daemon: 100 idle SSE clients, and a burst with a
stalled one.

    .venv/bin/python bench/event_stream_clients.py [--clients 100] [--seconds 20] [--burst 1000]

A real daemon supervises two stand-ins (a job and an HTTP-probed service, probe every 10 s, as
in production). (a) The daemon's CPU over `--seconds` with no client, then with `--clients`
connected to /v1/events/stream and idle (target: < 10 % of one core). (b) With those clients
still connected plus one that connects and never reads, `--burst` reloads are fired one after
another (each is an event); every reading client must get every event, the stalled one must be
dropped (the daemon logs it), and the reload latency shows whether the daemon slowed down.
The clients run in this process; the daemon's CPU is read from /proc. Everything it starts
is removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import docker
import yaml
from common import (
    free_port,
    read_log,
    remove_by_label,
    stop_process,
    wait_stack_up,
    write_results,
)

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def config(project: str, port: int, token_file: Path) -> dict[str, Any]:
    return {
        "version": 1,
        "project": project,
        "api": {"listen": f"127.0.0.1:{port}", "token_file": str(token_file)},
        "defaults": {"pull": "never", "stop": {"timeout": "2s"}},
        "services": {
            "init": {"image": "ovpn-stand-in:latest", "type": "job",
                     "environment": {"STANDIN_ROLE": "job"}},
            "web": {
                "image": "ovpn-stand-in:latest",
                "depends_on": {"init": "completed"},
                "health": {"http": {"port": 8080, "path": "/health"}, "interval": "10s"},
            },
        },
    }  # fmt: skip


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def cpu_percent(pid: int, seconds: float) -> float:
    before, began = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - began)


async def reader(session: aiohttp.ClientSession, url: str, got: list[int]) -> None:
    async with session.get(url) as response:
        async for line in response.content:
            if line.startswith(b"id: "):
                got.append(int(line[4:]))


async def run(args: argparse.Namespace, base: str, pid: int, token: str) -> dict[str, Any]:
    results: dict[str, Any] = {"clients": args.clients, "seconds": args.seconds}
    results["idle_cpu_percent_no_clients"] = await cpu_percent(pid, args.seconds)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        start_id = (await (await session.get(base + "/v1/events")).json())["last_id"]
        received: list[list[int]] = [[] for _ in range(args.clients)]
        url = f"{base}/v1/events/stream?last_event_id={start_id}"
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(reader(session, url, got)) for got in received]
            await asyncio.sleep(2)  # all connected and idle
            results[f"idle_cpu_percent_{args.clients}_clients"] = await cpu_percent(
                pid, args.seconds
            )
            # A client that sends its request and never reads a byte.
            host, port = base.removeprefix("http://").split(":")
            stalled = socket.socket()
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
            stalled.connect((host, int(port)))
            stalled.sendall(f"GET {url.removeprefix(base)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            headers = {"Authorization": f"Bearer {token}"}
            latencies = []
            before = cpu_seconds(pid)
            began = time.monotonic()
            for _ in range(args.burst):
                t0 = time.perf_counter()
                async with session.post(base + "/v1/reload", headers=headers) as answer:
                    assert answer.status == 200, await answer.text()
                latencies.append(time.perf_counter() - t0)
            results["burst_cpu_percent"] = (
                100 * (cpu_seconds(pid) - before) / (time.monotonic() - began)
            )
            results["burst_reload_ms_p50"] = 1000 * statistics.median(latencies)
            results["burst_reload_ms_p99"] = 1000 * statistics.quantiles(latencies, n=100)[98]
            for _ in range(150):  # up to 30 s for the readers to catch up
                if min(len(g) for g in received) >= args.burst:
                    break
                await asyncio.sleep(0.2)
            results["events_per_client_min"] = min(len(g) for g in received)
            results["every_client_got_every_event_in_order"] = all(
                g[: args.burst] == list(range(start_id + 1, start_id + 1 + args.burst))
                for g in received
            )
            stalled.close()
            for task in tasks:
                task.cancel()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--burst", type=int, default=1000)
    args = parser.parse_args()
    project = f"bench-sse-{uuid.uuid4().hex[:6]}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = docker.from_env().api
    with tempfile.TemporaryDirectory() as tmp:
        token = "bench-" + uuid.uuid4().hex
        token_file = Path(tmp) / "token"
        token_file.write_text(token)
        path = Path(tmp) / "supervisor.yaml"
        path.write_text(yaml.safe_dump(config(project, port, token_file)))
        log_path = Path(tmp) / "daemon.log"
        with log_path.open("wb") as log_file:
            argv = [
                sys.executable,
                "-m",
                "supervisor",
                "run",
                "-c",
                str(path),
                "--log-format",
                "json",
            ]
            proc = subprocess.Popen(
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        try:
            wait_stack_up(base, proc, timeout=120, log=log_path)
            results = asyncio.run(run(args, base, proc.pid, token))
            dropped = [r for r in read_log(log_path) if "too slow: dropped" in r.get("event", "")]
            results["stalled_client_dropped"] = len(dropped) == 1
        finally:
            stop_process(proc)
            remove_by_label(api, f"io.ovpn-supervisor.project={project}")
    for key, value in results.items():
        print(f"{key:>40}: {value:.2f}" if isinstance(value, float) else f"{key:>40}: {value}")
    write_results(results, REPO / "bench" / "results" / "event_stream_clients-latest.json", REPO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
