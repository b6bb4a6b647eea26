"""Stop of a large flat stack: ovpn-supervisor vs `docker stop` of the same containers in parallel.

    .venv/bin/python bench/stop_all.py [--services 200] [--rounds 2] [--timeout 5]

N stand-ins with no dependencies (so one level) are brought up by the daemon twice per round,
in two variants:
  * `exits`:   the stand-ins exit at once on SIGTERM;
  * `ignores`: they ignore SIGTERM (STANDIN_IGNORE_TERM=1), so the stop timeout (`--timeout`
               seconds, also given to `docker stop`) runs out and they are killed.
and stopped two ways, in alternating order:
  * ours:  SIGTERM to the daemon until its process has exited;
  * peer:  the daemon is SIGKILLed (its containers keep running), then `docker stop` (Engine
           API, docker-py) of every container at once, a thread each, with the same timeout;
           timed from the first request to the last `die` event, and to the last call returned.
The load average is recorded with every sample. Everything made is removed. Results: table on
stdout, JSON in bench/results/stop_all-latest.json.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import docker
import yaml
from common import free_port, machine, remove_by_label, wait_exit, wait_stack_up, write_results

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "bench" / "results" / "stop_all-latest.json"
LABEL = "io.ovpn-supervisor.project"


def say(*parts: object) -> None:
    print("[stop_all]", *parts, file=sys.stderr, flush=True)


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}] n={len(values)}"


def config(project: str, services: int, port: int, ignores: bool, timeout: int) -> dict[str, Any]:
    environment = {"STANDIN_PORT": ""}
    if ignores:
        environment["STANDIN_IGNORE_TERM"] = "1"
    return {
        "version": 1,
        "project": project,
        "api": {"listen": f"127.0.0.1:{port}"},
        "defaults": {"pull": "never", "stop": {"timeout": f"{timeout}s"}},
        "services": {
            f"svc-{i:03d}": {"image": "ovpn-stand-in:latest", "environment": environment}
            for i in range(services)
        },
    }


def start_stack(work: Path, cfg: dict[str, Any], port: int) -> subprocess.Popen[bytes]:
    path = work / "supervisor.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    log = work / "daemon.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "run", "-c", str(path), "--log-format", "json"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
    )
    wait_stack_up(f"http://127.0.0.1:{port}", proc, timeout=900, log=log, every=1)
    return proc


def stop_ours(proc: subprocess.Popen[bytes]) -> float:
    began = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    wait_exit(proc, timeout=300)
    return time.perf_counter() - began


def stop_peer(api: docker.APIClient, project: str, timeout: int) -> tuple[float, float]:
    """`docker stop` of every running container of the project at once: (last die, last return)."""
    ids = [c["Id"] for c in api.containers(filters={"label": f"{LABEL}={project}"})]
    pending = set(ids)
    last_die = [0.0]
    stream = api.events(decode=True, filters={"type": "container", "event": ["die"]})

    def pump() -> None:
        for event in stream:
            if event.get("id") in pending:
                pending.discard(event["id"])
                last_die[0] = time.perf_counter()
            if not pending:
                return

    listener = threading.Thread(target=pump, daemon=True)
    listener.start()
    time.sleep(0.2)  # the event stream is subscribed before the first stop
    began = time.perf_counter()
    workers = [
        threading.Thread(target=api.stop, args=(cid,), kwargs={"timeout": timeout}) for cid in ids
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
    returned = time.perf_counter() - began
    listener.join(30)
    stream.close()
    return last_die[0] - began, returned


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=5, help="stop timeout, seconds")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    api = docker.APIClient(timeout=600)
    rows: dict[str, list[float]] = {}
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="stop-all-") as tmp:
        work = Path(tmp)
        for rnd in range(args.rounds):
            for variant in ("exits", "ignores"):
                order = ("ours", "peer") if rnd % 2 == 0 else ("peer", "ours")
                for kind in order:
                    project = f"bench-stopall-{secrets.token_hex(3)}"
                    port = free_port()
                    cfg = config(project, args.services, port, variant == "ignores", args.timeout)
                    try:
                        proc = start_stack(work, cfg, port)
                        time.sleep(2.0)  # let the start's stragglers (inspects, events) settle
                        if kind == "ours":
                            rows.setdefault(f"{variant} ours", []).append(stop_ours(proc))
                        else:
                            proc.kill()
                            proc.wait()
                            died, returned = stop_peer(api, project, args.timeout)
                            rows.setdefault(f"{variant} peer (last die)", []).append(died)
                            rows.setdefault(f"{variant} peer (calls returned)", []).append(returned)
                        loads.append(os.getloadavg()[0])
                        say(f"round {rnd + 1} {variant} {kind}: done (load {loads[-1]:.1f})")
                    finally:
                        down = [sys.executable, "-m", "supervisor", "down", "-c"]
                        subprocess.run(
                            [*down, str(work / "supervisor.yaml")],
                            cwd=REPO_ROOT, capture_output=True, check=False, timeout=600,
                        )  # fmt: skip
                        remove_by_label(api, f"{LABEL}={project}")
    print(f"stop of {args.services} services (stop timeout {args.timeout} s), seconds")
    for name, values in rows.items():
        print(f"  {name:32} {spread(values):>32}")
    ratios = {}
    for variant in ("exits", "ignores"):
        ours = rows.get(f"{variant} ours")
        peer = rows.get(f"{variant} peer (calls returned)")
        if ours and peer:
            ratios[variant] = statistics.median(ours) / statistics.median(peer)
            print(f"  ratio ours / parallel docker stop ({variant}): {ratios[variant]:.2f}")
    print(f"load average (1 min) over the samples: {spread(loads)}")
    write_results(
        {"services": args.services, "stop_timeout_s": args.timeout, "samples_s": rows,
         "ratios": ratios, "loadavg_per_sample": loads, "machine": machine(api)},
        args.json, REPO_ROOT,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
