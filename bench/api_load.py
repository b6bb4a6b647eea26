"""API latency under load: N stand-in services supervised, 200 req/s on /v1/status and /metrics.

    .venv/bin/python bench/api_load.py [--services 200] [--rate 200] [--seconds 20]

Starts a real daemon on a generated config, waits until every service is healthy, then a second
process sends an open-loop load (requests at a fixed pace, not waiting on each other) to one path
at a time and reports p50/p99 latency; the daemon's CPU is read from /proc over each window.
Targets: /v1/status p99 <= 10 ms, /metrics p99 <= 20 ms. Needs the stand-in image
(scripts/build-stand-in-image). Everything it starts is removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from common import free_port, wait_stack_up

REPO = Path(__file__).resolve().parent.parent
TARGETS = {"/v1/status": 0.010, "/metrics": 0.020}


def config(project: str, services: int, port: int) -> dict[str, Any]:
    return {
        "version": 1,
        "project": project,
        "api": {"listen": f"127.0.0.1:{port}"},
        "defaults": {
            "pull": "never",
            "health": {"interval": "10s", "timeout": "3s", "retries": 3, "start_period": "120s"},
            "stop": {"timeout": "5s"},
        },
        "services": {
            f"svc-{i:03d}": {
                "image": "ovpn-stand-in:latest",
                "environment": {"STANDIN_PORT": "8080"},
                "health": {"http": {"port": 8080, "path": "/health"}},
            }
            for i in range(services)
        },
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _load(url: str, rate: float, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            nonlocal errors
            began = time.perf_counter()
            try:
                async with session.get(url) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.perf_counter() - began)

        loop = asyncio.get_running_loop()
        start = loop.time()
        count = int(rate * seconds)
        async with asyncio.TaskGroup() as group:
            for i in range(count):
                # Open loop: each request leaves at its slot, whatever the previous ones do.
                delay = start + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                group.create_task(one())
        elapsed = loop.time() - start
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "achieved_rate": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "max_ms": latencies[-1] * 1000,
    }


def load_main(url: str, rate: float, seconds: float) -> None:
    """The second process: print the result as one JSON line."""
    print(json.dumps(asyncio.run(_load(url, rate, seconds))))


def measure(pid: int, base: str, rate: float, seconds: float) -> dict[str, Any]:
    """Idle CPU, then each route under load from a second process, with the daemon's CPU."""
    results: dict[str, Any] = {}
    idle_before = cpu_seconds(pid)
    time.sleep(5)
    results["daemon_cpu_idle_percent"] = round((cpu_seconds(pid) - idle_before) / 5 * 100, 1)
    for route, target in TARGETS.items():
        cpu_before = cpu_seconds(pid)
        proc = subprocess.run(
            [sys.executable, __file__, "--load", base + route, "--rate", str(rate),
             "--seconds", str(seconds)],
            capture_output=True, text=True, check=True, timeout=seconds * 5 + 60,
        )  # fmt: skip
        cpu = (cpu_seconds(pid) - cpu_before) / seconds * 100
        outcome = json.loads(proc.stdout.strip().splitlines()[-1])
        outcome["daemon_cpu_percent"] = round(cpu, 1)
        outcome["target_p99_ms"] = target * 1000
        outcome["p99_vs_target"] = round(outcome["p99_ms"] / (target * 1000), 2)
        results[route] = outcome
        print(
            f"{route}: p50 {outcome['p50_ms']:.2f} ms, p99 {outcome['p99_ms']:.2f} ms "
            f"(target {target * 1000:.0f} ms, ratio {outcome['p99_vs_target']}), "
            f"max {outcome['max_ms']:.1f} ms, {outcome['achieved_rate']:.0f} req/s, "
            f"errors {outcome['errors']}, daemon CPU {cpu:.0f}%",
            flush=True,
        )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--load", help=argparse.SUPPRESS)  # internal: the load process
    args = parser.parse_args()
    if args.load:
        load_main(args.load, args.rate, args.seconds)
        return 0

    project = f"bench-api-{os.getpid()}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    work = Path(tempfile.mkdtemp(prefix="api-load-"))
    path = work / "supervisor.yaml"
    path.write_text(yaml.safe_dump(config(project, args.services, port)))
    log = (work / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "run", "-c", str(path), "--log-format", "json"],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    results: dict[str, Any] = {"services": args.services, "rate": args.rate}
    try:
        began = time.monotonic()
        wait_stack_up(base, daemon, timeout=900, log=work / "daemon.log", every=1)
        results["stack_up_seconds"] = round(time.monotonic() - began, 1)
        results.update(measure(daemon.pid, base, args.rate, args.seconds))
        print(json.dumps(results, indent=2))
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=300)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.close()
        subprocess.run(
            [sys.executable, "-m", "supervisor", "down", "-c", str(path)],
            cwd=REPO, check=False, capture_output=True, timeout=600,
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
