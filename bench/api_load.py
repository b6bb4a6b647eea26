"""API latency under load: N stand-in services supervised, 200 req/s on /v1/status and /metrics.

    .venv/bin/python bench/api_load.py [--services 200] [--rate 200] [--seconds 20] [--rounds 3]

Starts a real daemon on a generated config, waits until every service is healthy, then Debian's
`hey` (scripts/ensure-bench-tools installs it) sends the load, 10 workers each at rate/10, to one
path at a time; p50/p99 come from hey's per-request CSV; the daemon's CPU is read from /proc
over each window. Each round is followed by the same load on a peer: a bare aiohttp server
answering the same bytes (what this machine allows right now). Targets: /v1/status p99 <= 10 ms,
/metrics p99 <= 20 ms. Needs the stand-in image (scripts/build-stand-in-image). Everything it
starts is removed afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

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


# hey's workers each keep to a rate (-q is per worker), so 10 of them give the total rate while a
# slow answer holds up only its own worker's next request.
HEY_WORKERS = 10


def hey_load(url: str, rate: float, seconds: float) -> dict[str, Any]:
    """Load `url` at `rate` req/s for `seconds` with Debian's `hey` (a compiled generator: a
    Python one adds its own scheduling delays to every latency); per-request CSV in, summary out.
    """
    hey = shutil.which("hey")
    if hey is None:
        raise SystemExit("hey not found: run scripts/ensure-bench-tools")
    proc = subprocess.run(
        [hey, "-z", f"{seconds:g}s", "-c", str(HEY_WORKERS), "-q", f"{rate / HEY_WORKERS:g}",
         "-o", "csv", url],
        capture_output=True, text=True, check=True, timeout=seconds * 5 + 60,
    )  # fmt: skip
    rows = list(csv.reader(io.StringIO(proc.stdout)))
    header, body = rows[0], [r for r in rows[1:] if r]
    at, status, offset = (header.index(k) for k in ("response-time", "status-code", "offset"))
    latencies = sorted(float(r[at]) for r in body)
    elapsed = max(float(r[offset]) + float(r[at]) for r in body)
    return {
        "load_generator": f"hey -c {HEY_WORKERS} -q {rate / HEY_WORKERS:g} -z {seconds:g}s",
        "requests": len(latencies),
        "errors": sum(r[status] != "200" for r in body),
        "achieved_rate": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
        "max_ms": latencies[-1] * 1000,
    }


# The peer: the least an aiohttp server on this machine takes to answer the same bytes (the
# body is fetched from the daemon once per route), so a loaded machine shows in both figures.
PEER_SERVER = """
import sys
from aiohttp import web
body, ctype = open(sys.argv[2], "rb").read(), sys.argv[3]
async def answer(request):
    return web.Response(body=body, headers={"Content-Type": ctype})
app = web.Application()
app.router.add_get("/{tail:.*}", answer)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def measure(pid: int, base: str, rate: float, seconds: float, rounds: int) -> dict[str, Any]:
    """Idle CPU, then each route under load, ours and the peer server interleaved per round."""
    results: dict[str, Any] = {}
    idle_before = cpu_seconds(pid)
    time.sleep(5)
    results["daemon_cpu_idle_percent"] = round((cpu_seconds(pid) - idle_before) / 5 * 100, 1)
    for route, target in TARGETS.items():
        with urllib.request.urlopen(base + route, timeout=30) as response:
            body, ctype = response.read(), response.headers["Content-Type"]
        with tempfile.NamedTemporaryFile(suffix=".body") as file:
            file.write(body)
            file.flush()
            peer_port = free_port()
            peer = subprocess.Popen(
                [sys.executable, "-c", PEER_SERVER, str(peer_port), file.name, ctype]
            )
            try:
                wait_listening(peer_port)
                ours, peers = [], []
                for _ in range(rounds):
                    cpu_before = cpu_seconds(pid)
                    outcome = hey_load(base + route, rate, seconds)
                    outcome["daemon_cpu_percent"] = round(
                        (cpu_seconds(pid) - cpu_before) / seconds * 100, 1
                    )
                    outcome["load_average"] = os.getloadavg()[0]
                    ours.append(outcome)
                    peer_url = f"http://127.0.0.1:{peer_port}{route}"
                    peers.append(hey_load(peer_url, rate, seconds))
            finally:
                peer.terminate()
                peer.wait(timeout=30)
        p99s = [o["p99_ms"] for o in ours]
        peer_p99s = [o["p99_ms"] for o in peers]
        results[route] = {
            "body_bytes": len(body),
            "target_p99_ms": target * 1000,
            "p99_ms_median": statistics.median(p99s),
            "peer_p99_ms_median": statistics.median(peer_p99s),
            "rounds": ours,
            "peer_rounds": peers,
        }
        print(
            f"{route} ({len(body)} B), {rounds} rounds: p99 ms ours {spread(p99s)}, "
            f"peer {spread(peer_p99s)} (target {target * 1000:.0f} ms); "
            f"p50 ms ours {spread([o['p50_ms'] for o in ours])}, "
            f"peer {spread([o['p50_ms'] for o in peers])}; "
            f"rate {spread([o['achieved_rate'] for o in ours])} req/s; "
            f"errors {sum(o['errors'] for o in ours)}; "
            f"daemon CPU % {spread([o['daemon_cpu_percent'] for o in ours])}; "
            f"load average {spread([o['load_average'] for o in ours])}",
            flush=True,
        )
    return results


def wait_listening(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise TimeoutError(f"peer server on port {port} not listening after {timeout:g}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

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
        results.update(measure(daemon.pid, base, args.rate, args.seconds, args.rounds))
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
