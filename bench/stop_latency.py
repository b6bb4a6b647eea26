"""Reverse-order stop of the stand-in demo: ovpn-supervisor vs the engine's own bound.

    .venv/bin/python bench/stop_latency.py [--rounds 5]

Each round brings the demo topology (tests/fixtures/standin-demo.yaml; stand-ins exit at once on
their stop signal) up twice with the daemon, and stops it two ways, in alternating order:
  * ours:  SIGTERM to the daemon until its process has exited;
  * bound: the daemon is SIGKILLed (its containers keep running, restart policy `no`), then this
           script stops them itself in reverse dependency order, each `docker stop` (API) issued
           the moment the `die` events of all its dependents have arrived, from a thread per
           service; timed from the first stop request to the last `die` event.
So the bound is the engine's cost of the same levels with nothing in between but event hand-offs.
The load average is recorded with every round (the machine may be shared). Everything made is
removed (`supervisor down --volumes`). Results: table on stdout, JSON in
bench/results/stop_latency-latest.json.
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
from common import machine, read_log, remove_by_label, wait_exit, write_results

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO = REPO_ROOT / "tests" / "fixtures" / "standin-demo.yaml"
RESULTS = REPO_ROOT / "bench" / "results" / "stop_latency-latest.json"
LABEL = "io.ovpn-supervisor.project"


def say(*parts: object) -> None:
    print("[stop_latency]", *parts, file=sys.stderr, flush=True)


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}] n={len(values)}"


def target_state(service: dict[str, Any]) -> str:
    if service.get("type") == "job":
        return "completed"
    return "healthy" if service.get("health") else "running"


def start_stack(workdir: Path, config: dict[str, Any]) -> subprocess.Popen[bytes]:
    """The daemon on `config`, returned once every long-running service is up."""
    path = workdir / "supervisor.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    log = workdir / "daemon.log"
    log.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "run", "-c", str(path), "--log-format", "json"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
    )
    services = config["services"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        states: dict[str, str] = {}
        for r in read_log(log):
            if r.get("event") == "state changed":
                states[r["service"]] = r["new"]
        wanted = {name: target_state(s) for name, s in services.items()}
        if all(states.get(n) == w for n, w in wanted.items()):
            return proc
        if proc.poll() is not None:
            raise SystemExit(f"daemon exited early; see {log}")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the stack did not come up in 180 s; see {log}")


def stop_ours(proc: subprocess.Popen[bytes]) -> float:
    began = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    wait_exit(proc, timeout=120)
    return time.perf_counter() - began


def stop_bound(api: docker.APIClient, project: str, config: dict[str, Any]) -> float:
    """Reverse-order `docker stop`, each started on its dependents' die events."""
    services = config["services"]
    dependents: dict[str, set[str]] = {name: set() for name in services}
    for name, s in services.items():
        for dep in s.get("depends_on") or {}:
            dependents[dep].add(name)
    ids = {}
    running = set()
    for name in services:
        info = api.inspect_container(f"{project}-{name}")
        ids[name] = info["Id"]
        if info["State"]["Running"]:
            running.add(name)
    down = {name: threading.Event() for name in services}
    for name in services:
        if name not in running:
            down[name].set()
    last_die = [0.0]
    stream = api.events(
        decode=True, filters={"type": "container", "event": ["die"], "label": f"{LABEL}={project}"}
    )
    by_id = {cid: name for name, cid in ids.items()}

    def pump() -> None:
        for event in stream:
            name = by_id.get(event.get("id", ""))
            if name is not None:
                last_die[0] = time.perf_counter()
                down[name].set()
            if all(e.is_set() for e in down.values()):
                return

    def stop(name: str) -> None:
        for dependent in dependents[name]:
            down[dependent].wait(60)
        if name in running:
            # The demo's stop timeouts are whole seconds ("5s"); the stand-ins never need them.
            timeout = str((services[name].get("stop") or {}).get("timeout", "10s"))
            api.stop(ids[name], timeout=int(timeout.rstrip("s")))

    listener = threading.Thread(target=pump, daemon=True)
    listener.start()
    time.sleep(0.2)  # the event stream is subscribed before the first stop
    began = time.perf_counter()
    workers = [threading.Thread(target=stop, args=(n,)) for n in services]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    listener.join(30)
    stream.close()
    return last_die[0] - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    api = docker.APIClient(timeout=300)
    base = yaml.safe_load(DEMO.read_text())
    base["defaults"]["health"]["interval"] = "1s"
    rows: dict[str, list[float]] = {"ours": [], "bound": []}
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="stop-latency-") as tmp:
        work = Path(tmp)
        for rnd in range(args.rounds):
            order = ("ours", "bound") if rnd % 2 == 0 else ("bound", "ours")
            for kind in order:
                project = f"bench-stop-{secrets.token_hex(3)}"
                config = {**base, "project": project}
                path = work / "supervisor.yaml"
                try:
                    proc = start_stack(work, config)
                    time.sleep(1.0)  # settle: the start's probes and creates are done
                    if kind == "ours":
                        seconds = stop_ours(proc)
                    else:
                        proc.kill()
                        proc.wait()
                        seconds = stop_bound(api, project, config)
                    rows[kind].append(seconds)
                    loads.append(os.getloadavg()[0])
                    say(f"round {rnd + 1}: {kind} {seconds:.3f} s (load {loads[-1]:.1f})")
                finally:
                    subprocess.run(
                        [sys.executable, "-m", "supervisor", "down", "--volumes", "-c", str(path)],
                        cwd=REPO_ROOT, capture_output=True, check=False, timeout=300,
                    )  # fmt: skip
                    remove_by_label(api, f"{LABEL}={project}")
    ours, bound = rows["ours"], rows["bound"]
    ratio = statistics.median(ours) / statistics.median(bound) if ours and bound else None
    print(f"{'stop of the demo':24} {'median [min-max] s':>32}")
    print(f"{'ours (SIGTERM -> exit)':24} {spread(ours):>32}")
    print(f"{'bound (die-driven levels)':24} {spread(bound):>32}")
    print(f"ratio ours/bound: {ratio:.2f}" if ratio else "ratio: -")
    print(f"load average (1 min) over the rounds: {spread(loads)}")
    write_results(
        {
            "ours_s": ours,
            "bound_s": bound,
            "ratio_median": ratio,
            "loadavg_per_sample": loads,
            "machine": machine(api),
        },
        args.json,
        REPO_ROOT,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
