"""Restart latency and steady-state cost of ovpn-supervisor (issue #3 "Benchmark").

    .venv/bin/python bench/restart_latency.py [--rounds 5] [--backoff 100ms] [--first 0s]
        [--only a,b,c]

(a) crash -> running again: `/stand-in-ctl crash 3` in a stand-in, time from the engine's `die`
    event to its next `start` event of the same container. Ours (`restart: on-failure`, backoff
    `initial` = --backoff, `first` = --first or the default 0s, reset_after 10s) vs Docker's own
    `--restart on-failure` on the same image and the same network. Docker's restart manager
    waits 100 ms before the first restart, doubling each time, and resets after 10 s of running;
    so every round waits until both containers have run 10.5 s, and both are measured on a fresh
    backoff. Same instrument (engine events) for all three: the third is the engine's floor,
    a bare client in a thread that calls `start` the moment the `die` event arrives. Also
    recorded: when the daemon decided to start again (its `restarting` log record, after the
    `die`), and the engine's start alone (Docker's container stopped by hand, so cleaned up,
    then started: request to `start` event).
(b) health broken -> restart issued: `/stand-in-ctl fail` (HTTP 500 at once) and `hang` (no
    answer, so each probe takes its timeout), injected at a random phase of the probe loop, from the
    moment the exec returned to the daemon's `state changed ... new: restarting` log record; vs the
    bound `interval x retries + timeout`.
(c) steady state: 50 stand-ins with an HTTP probe every 1 s; for 60 s, CPU% (utime+stime from
    /proc/PID/stat) and RSS (VmRSS, sampled; VmHWM) of the daemon vs `bench/reference_poller.py`
    (a bare aiohttp loop polling the same 50 endpoints every 1 s), both measured over the same
    60 s window, side by side.
Runs on the shared engine with unique project names `bench-<hex>`; removes everything it made.
Results: table on stdout, JSON in bench/results/restart_latency-latest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import yaml
from common import iso_to_epoch, remove_by_label, stop_process

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "bench" / "results" / "restart_latency-latest.json"
IMAGE = "ovpn-stand-in:latest"
LABEL = "io.ovpn-supervisor.project"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(*parts: object) -> None:
    print("[restart_latency]", *parts, file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- engine events and the daemon ----------------------------------------------------------------


class Events:
    """Container `die`/`start` events (engine time, ns) of the given label value, in a thread."""

    def __init__(self, value: str) -> None:
        self.client = docker.from_env(timeout=None)  # type: ignore[arg-type]
        self.stream = self.client.api.events(
            decode=True,
            filters={"type": "container", "label": f"{LABEL}={value}", "event": ["die", "start"]},
        )
        self.seen: list[tuple[str, str, float]] = []  # (container id, action, epoch s)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        with contextlib.suppress(Exception):
            for raw in self.stream:
                with self.lock:
                    self.seen.append((raw["id"], raw["Action"], int(raw["timeNano"]) / 1e9))

    def after(self, cid: str, action: str, since: float) -> float | None:
        with self.lock:
            return next(
                (t for i, a, t in self.seen if i == cid and a == action and t > since), None
            )

    def close(self) -> None:
        self.stream.close()
        self.client.close()


class Reflex:
    """The engine's floor for "start it again at once": a bare client that calls `start` on
    the container the moment its `die` event arrives, from a thread doing nothing else (its
    own connection, no event loop, no decision). Its `die` → `start` is what any supervisor
    could reach on this engine with no backoff."""

    def __init__(self, cid: str) -> None:
        self.api = docker.APIClient(timeout=30)
        self.stream = self.api.events(
            decode=True, filters={"type": "container", "id": cid, "event": ["die"]}
        )
        self.cid = cid
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        with contextlib.suppress(Exception):
            for _ in self.stream:
                self.api.start(self.cid)

    def close(self) -> None:
        self.stream.close()
        self.api.close()


def wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout}s: {what}")


class Daemon:
    """`python -m supervisor run` on a config, its JSON log in a file."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        path = workdir / "supervisor.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / "daemon.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "supervisor", "run", "--config", str(path)),
                *("--log-format", "json", "--log-level", "info"),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                record = json.loads(line)
                if isinstance(record, dict):
                    out.append(record)
        return out

    def states(self) -> dict[str, str]:
        return {r["service"]: r["new"] for r in self.records() if r.get("event") == "state changed"}

    def wait_states(self, want: dict[str, str], timeout: float) -> None:
        def ok() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited ({self.proc.returncode})")
            now = self.states()
            return all(now.get(k) == v for k, v in want.items())

        wait(ok, timeout, f"states {want}")

    def close(self) -> None:
        stop_process(self.proc)
        self._log.close()


@contextlib.contextmanager
def project(api: docker.APIClient) -> Iterator[str]:
    name = f"bench-{secrets.token_hex(4)}"
    try:
        yield name
    finally:
        remove_by_label(api, f"{LABEL}={name}")


def config(
    name: str, services: dict[str, Any], backoff: str = "100ms", first: str | None = None
) -> dict[str, Any]:
    delays = {"initial": backoff, "max": "10s"} | ({"first": first} if first else {})
    return {
        "version": 1,
        "project": name,
        "api": {"listen": "unix://" + str(Path(tempfile.gettempdir()) / f"{name}.sock")},
        "defaults": {
            "pull": "never",
            "restart": {
                "policy": "on-failure",
                "backoff": delays,
                "limit": {"count": 1000, "window": "10m"},
                "reset_after": "10s",
            },
            "stop": {"timeout": "2s"},
        },
        "services": services,
    }


def exec_ctl(api: docker.APIClient, cid: str, *argv: str) -> None:
    exec_id = api.exec_create(cid, ["/stand-in-ctl", *argv])["Id"]
    api.exec_start(exec_id)


# -- (a) crash -> running again ------------------------------------------------------------------


def bench_crash(
    api: docker.APIClient, rounds: int, backoff: str, first: str | None
) -> dict[str, Any]:
    ours: list[float] = []
    theirs: list[float] = []
    reaction: list[float] = []  # ours: the `die` to our decision to start again (our log)
    # The engine's start alone: Docker's container stopped (and cleaned up), then started.
    plain: list[float] = []
    floor: list[float] = []  # a bare client's start at the `die` event (see Reflex)
    with project(api) as name, tempfile.TemporaryDirectory() as tmp:
        events = Events(name)
        probe = {"http": {"port": 8080}, "interval": "200ms", "timeout": "500ms", "retries": 3}
        daemon = Daemon(
            Path(tmp), config(name, {"svc": {"image": IMAGE, "health": probe}}, backoff, first)
        )
        try:
            daemon.wait_states({"svc": "healthy"}, 60)
            ours_info = api.inspect_container(f"{name}-svc")
            our_id = ours_info["Id"]
            # On our container's network: a start then attaches the same kind of endpoint.
            network = next(iter(ours_info["NetworkSettings"]["Networks"]))
            docker_id = api.create_container(
                IMAGE,
                name=f"{name}-docker",
                labels={LABEL: name},
                host_config=api.create_host_config(
                    restart_policy={"Name": "on-failure"}, network_mode=network
                ),
            )["Id"]
            api.start(docker_id)
            floor_id = api.create_container(
                IMAGE,
                name=f"{name}-floor",
                labels={LABEL: name},
                host_config=api.create_host_config(network_mode=network),
            )["Id"]
            api.start(floor_id)
            reflex = Reflex(floor_id)
            for rnd in range(rounds):
                for cid, out in ((our_id, ours), (docker_id, theirs), (floor_id, floor)):
                    # A fresh backoff for both: each has run >= 10.5 s since its last start.
                    started = iso_to_epoch(api.inspect_container(cid)["State"]["StartedAt"])
                    while time.time() < started + 10.5:
                        time.sleep(0.1)
                    before = time.time() - 0.001
                    exec_ctl(api, cid, "crash", "3")
                    died: float = wait(lambda: events.after(cid, "die", before), 30, "die")  # noqa: B023
                    back: float = wait(lambda: events.after(cid, "start", died), 30, "start")  # noqa: B023
                    out.append(back - died)
                    if cid == our_id:
                        decided = [
                            iso_to_epoch(r["timestamp"])
                            for r in daemon.records()
                            if r.get("event") == "state changed" and r.get("new") == "restarting"
                        ]
                        reaction.append(min(t for t in decided if t >= died - 0.001) - died)
                say(
                    f"(a) round {rnd + 1}: ours {ours[-1]:.3f} s (decided after "
                    f"{reaction[-1] * 1000:.1f} ms), docker {theirs[-1]:.3f} s, "
                    f"bare client {floor[-1]:.3f} s"
                )
                api.stop(docker_id, timeout=2)  # a manual stop: its policy leaves it stopped
                before = time.time() - 0.001
                api.start(docker_id)
                began: float = wait(lambda: events.after(docker_id, "start", before), 30, "start")  # noqa: B023
                plain.append(began - before)
                daemon.wait_states({"svc": "healthy"}, 30)
            reflex.close()
        finally:
            daemon.close()
            events.close()
    return {
        "backoff_initial": backoff,
        "backoff_first": first or "default (0s)",
        "ours_s": ours,
        "docker_s": theirs,
        "ours_median_s": median(ours),
        "ours_decided_after_die_s": reaction,
        "ours_decided_median_s": median(reaction),
        "docker_median_s": median(theirs),
        "engine_plain_start_s": plain,
        "engine_plain_start_median_s": median(plain),
        "bare_client_s": floor,
        "bare_client_median_s": median(floor),
        "bare_client_ratio": median(floor) / median(theirs),
        "ours_over_bare_client": median(ours) / median(floor),
        "ratio": median(ours) / median(theirs),
    }


# -- (b) health broken -> restart issued ---------------------------------------------------------


def bench_unhealthy(api: docker.APIClient, rounds: int) -> dict[str, Any]:
    interval, timeout, retries = 1.0, 0.5, 3
    bound = interval * retries + timeout
    out: dict[str, Any] = {"interval_s": interval, "timeout_s": timeout, "retries": retries}
    out["bound_s"] = bound
    for mode in ("fail", "hang"):
        latencies: list[float] = []
        with project(api) as name, tempfile.TemporaryDirectory() as tmp:
            health = {
                "http": {"port": 8080},
                "interval": f"{interval}s",
                "timeout": f"{timeout}s",
                "retries": retries,
                "start_period": "5s",
            }
            svc = {"image": IMAGE, "health": health, "restart": {"policy": "always"}}
            daemon = Daemon(Path(tmp), config(name, {"svc": svc}))
            try:
                for rnd in range(rounds):
                    daemon.wait_states({"svc": "healthy"}, 60)
                    # A random phase against the probe loop: `healthy` is logged right after a
                    # probe, so a fault injected at once would always land at the same phase.
                    time.sleep(interval + random.uniform(0, interval))
                    seen = len(daemon.records())
                    cid = api.inspect_container(f"{name}-svc")["Id"]
                    exec_ctl(api, cid, mode)
                    fault = time.time()

                    def issued(s: int = seen, d: Daemon = daemon) -> float | None:
                        return next(
                            (
                                iso_to_epoch(r["timestamp"])
                                for r in d.records()[s:]
                                if r.get("event") == "state changed"
                                and r.get("new") == "restarting"
                            ),
                            None,
                        )

                    latencies.append(wait(issued, 60, "restart issued") - fault)
                    say(f"(b) {mode} round {rnd + 1}: {latencies[-1]:.3f} s (bound {bound:.3f} s)")
            finally:
                daemon.close()
        out[mode] = {
            "latencies_s": latencies,
            "median_s": median(latencies),
            "max_s": max(latencies),
            "max_over_bound_s": max(latencies) - bound,
        }
    return out


# -- (c) steady state ----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def memory_kib(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def bench_steady(api: docker.APIClient, services: int, seconds: float) -> dict[str, Any]:
    health = {"http": {"port": 8080}, "interval": "1s", "timeout": "1s", "retries": 3}
    with project(api) as name, tempfile.TemporaryDirectory() as tmp:
        svcs = {f"s{i:02d}": {"image": IMAGE, "health": health} for i in range(services)}
        daemon = Daemon(Path(tmp), config(name, svcs))
        reference: subprocess.Popen[bytes] | None = None
        try:
            daemon.wait_states(dict.fromkeys(svcs, "healthy"), 300)
            urls = []
            for svc in svcs:
                nets = api.inspect_container(f"{name}-{svc}")["NetworkSettings"]["Networks"]
                ip = next(n["IPAddress"] for n in nets.values() if n.get("IPAddress"))
                urls.append(f"http://{ip}:8080/health")
            reference = subprocess.Popen(
                [sys.executable, str(REPO_ROOT / "bench" / "reference_poller.py"), *urls]
            )
            time.sleep(5)  # settle: imports done, the first rounds behind both
            pids = {"ours": daemon.proc.pid, "reference": reference.pid}
            cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
            t0 = time.monotonic()
            rss: dict[str, list[int]] = {k: [] for k in pids}
            while time.monotonic() - t0 < seconds:
                for k, p in pids.items():
                    rss[k].append(memory_kib(p)["VmRSS"])
                time.sleep(1)
            elapsed = time.monotonic() - t0
            result: dict[str, Any] = {"services": services, "seconds": elapsed}
            for k, p in pids.items():
                result[k] = {
                    "cpu_percent": 100 * (cpu_seconds(p) - cpu0[k]) / elapsed,
                    "rss_max_mib": max(rss[k]) / 1024,
                    "rss_median_mib": median([float(v) for v in rss[k]]) / 1024,
                    "hwm_mib": memory_kib(p)["VmHWM"] / 1024,
                }
            probes = sum(1 for r in daemon.records() if r.get("event") == "probe failed")
            result["probe_failures_logged"] = probes
            result["cpu_ratio"] = result["ours"]["cpu_percent"] / result["reference"]["cpu_percent"]
            result["rss_ratio"] = result["ours"]["rss_max_mib"] / result["reference"]["rss_max_mib"]
        finally:
            if reference is not None:
                reference.send_signal(signal.SIGTERM)
                reference.wait(timeout=30)
            daemon.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backoff", default="100ms", help="our restart backoff `initial` for (a)")
    parser.add_argument(
        "--first",
        help="our `backoff.first` for (a) (default: the daemon's, 0s: the first restart after a"
        " run of reset_after is immediate; 100ms matches Docker's delay)",
    )
    parser.add_argument("--only", default="a,b,c")
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    api = docker.APIClient(timeout=120)
    only = set(args.only.split(","))
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    out: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "docker": api.version()["Version"],
        "loadavg_before": load_before,
    }
    if "a" in only:
        out["crash"] = bench_crash(api, args.rounds, args.backoff, args.first)
    if "b" in only:
        out["unhealthy"] = bench_unhealthy(api, args.rounds)
    if "c" in only:
        out["steady"] = bench_steady(api, args.services, args.seconds)
    out["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
