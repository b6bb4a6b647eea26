"""Chaos soak (issue 11): N random faults against a real daemon on a private Docker Engine,
each followed by a settle, with the stack's invariants checked after every settle.

    .venv/bin/python bench/soak.py [--faults 1000] [--seed N] [--settle-timeout 90]

Everything runs on a throwaway engine (tests/private_engine.py: own socket, data root and
network namespace), so `dockerd` itself can be restarted as a fault; the shared engine is never
touched. The daemon runs in that namespace and serves its API on a unix socket.

Faults, picked at random (seeded; the seed is printed): SIGKILL of a container, OOM, `docker rm
-f`, `docker stop`, health 500, health hang, the supervisor SIGKILLed and started again, a
SIGHUP storm, reloads that add / change / remove a service, operator stop / start / restart
over the API, and dockerd restarted.

After every settle (the fault seen and repaired, or `--settle-timeout`), the run stops at the
first breach of:
  - every long-running service healthy (or running, without a probe) unless the operator
    stopped it; exactly one container per service; no container, network or volume of the
    project outside the config;
  - no container started while one of its dependencies was not at its condition (from the
    daemon's JSON log);
  - completed jobs not rerun unless one of their dependencies left its condition meanwhile;
  - named volumes never removed: a marker file written into each at the start is still there;
  - daemon RSS and open descriptors within a bound after warm-up.
Results: summary on stdout, JSON in bench/results/soak-latest.json (or --json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors
import yaml
from common import write_results

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(REPO_ROOT))

from private_engine import PrivateEngine, private_engine  # noqa: E402

from supervisor.client import ApiClient, ClientError  # noqa: E402

IMAGE = "ovpn-stand-in:latest"
RESULTS = REPO_ROOT / "bench" / "results" / "soak-latest.json"
LABEL_PROJECT = "io.ovpn-supervisor.project"
LABEL_SERVICE = "io.ovpn-supervisor.service"
MARKER = ".soak-marker"
MAX_EXTRAS = 3
# (fault, weight). dockerd restarts are slow (~15 s), so rarer.
FAULTS = [
    ("kill", 10),
    ("oom", 4),
    ("rm", 8),
    ("stop", 8),
    ("health500", 8),
    ("hang", 6),
    ("daemon-kill", 5),
    ("sighup-storm", 5),
    ("reload-add", 5),
    ("reload-change", 5),
    ("reload-remove", 5),
    ("op-stop", 5),
    ("op-start", 6),
    ("op-restart", 6),
    ("dockerd-restart", 2),
]


class Breach(Exception):
    """An invariant does not hold after a settle."""


def base_config(project: str, socket_path: Path) -> dict[str, Any]:
    """db <- migrate (job) <- app <- web; init (job) <- worker; volumes dbdata and pki."""
    health = {"interval": "500ms", "timeout": "1s", "retries": 2, "start_period": "10s"}
    http = {**health, "http": {"port": 8080, "path": "/health"}}
    return {
        "version": 1,
        "project": project,
        "api": {"listen": f"unix://{socket_path}"},
        "systemd": {"startup_timeout": "60s"},
        "defaults": {
            "pull": "never",
            "restart": {
                "policy": "always",
                "backoff": {"initial": "100ms", "max": "1s"},
                "limit": {"count": 100000, "window": "1s"},
            },
            "stop": {"timeout": "2s"},
        },
        "networks": {"inner": {}},
        "volumes": {"dbdata": {}, "pki": {}},
        "services": {
            "db": {
                "image": IMAGE,
                "environment": {"STANDIN_READY_DELAY": "0.5"},
                "volumes": ["dbdata:/data"],
                "networks": ["inner"],
                "health": {**health, "exec": ["pg_isready", "-U", "app"]},
            },
            "migrate": {
                "image": IMAGE,
                "type": "job",
                "environment": {"STANDIN_ROLE": "job", "STANDIN_RUN_TIME": "0.2"},
                "volumes": ["dbdata:/data"],
                "networks": ["inner"],
                "depends_on": {"db": "healthy"},
            },
            "init": {
                "image": IMAGE,
                "type": "job",
                "environment": {"STANDIN_ROLE": "job", "STANDIN_RUN_TIME": "0.2"},
                "volumes": ["pki:/pki"],
                "networks": ["inner"],
            },
            "app": {
                "image": IMAGE,
                "environment": {"STANDIN_READY_DELAY": "0.3"},
                "networks": ["inner"],
                "depends_on": {"db": "healthy", "migrate": "completed"},
                "health": http,
            },
            "web": {
                "image": IMAGE,
                "networks": ["inner"],
                "depends_on": {"app": "healthy"},
                "health": http,
            },
            "worker": {
                "image": IMAGE,
                "environment": {"GENERATION": "0"},
                "volumes": ["pki:/pki:ro"],
                "networks": ["inner"],
                "depends_on": {"init": "completed"},
            },
        },
    }


def extra_service() -> dict[str, Any]:
    health = {"interval": "500ms", "timeout": "1s", "retries": 2, "start_period": "10s"}
    return {
        "image": IMAGE,
        "environment": {"GENERATION": "0"},
        "networks": ["inner"],
        "depends_on": {"db": "healthy"},
        "health": {**health, "http": {"port": 8080, "path": "/health"}},
    }


# --------------------------------------------------------------------------- the daemon


class Daemon:
    """The supervisor process inside the engine's namespace; one log file per incarnation."""

    def __init__(self, engine: PrivateEngine, config: Path, workdir: Path) -> None:
        self.engine = engine
        self.config = config
        self.workdir = workdir
        self.incarnation = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []

    def start(self) -> None:
        self.incarnation += 1
        log = self.workdir / f"daemon-{self.incarnation}.log"
        self.logs.append(log)
        argv = [sys.executable, "-m", "supervisor", "run", "--config", str(self.config)]
        argv += ["--log-format", "json", "--log-level", "debug"]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.engine.wrap(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**self.engine.env(), "PYTHONUNBUFFERED": "1"},
                cwd=REPO_ROOT,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def resources(self) -> tuple[float, int]:
        """RSS in MiB and open descriptors of the daemon process."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        rss_kb = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")
        )
        return rss_kb / 1024, len(list(Path(f"/proc/{self.pid}/fd").iterdir()))

    def tail(self, lines: int = 30) -> str:
        if not self.logs:
            return ""
        return "\n".join(self.logs[-1].read_text(errors="replace").splitlines()[-lines:])


# --------------------------------------------------------------------------- log checks


@dataclass
class LogChecker:
    """Reads the daemon's JSON logs as they grow; checks start order and job reruns."""

    offsets: dict[Path, int] = field(default_factory=dict)
    states: dict[Path, dict[str, str]] = field(default_factory=dict)
    # per job: dependencies left their condition since the job's last start
    job_started: dict[str, int] = field(default_factory=dict)
    job_may_rerun: dict[str, bool] = field(default_factory=dict)
    starts: int = 0
    reruns: int = 0
    # per service: dependencies seen at their condition since it began waiting for them
    met: dict[str, set[str]] = field(default_factory=dict)

    def check(self, logs: list[Path], config: dict[str, Any]) -> None:
        services = config["services"]
        for log in logs:
            offset = self.offsets.get(log, 0)
            with log.open("rb") as handle:
                handle.seek(offset)
                data = handle.read()
            whole = data[: data.rfind(b"\n") + 1]
            self.offsets[log] = offset + len(whole)
            states = self.states.setdefault(log, {})
            for line in whole.splitlines():
                with contextlib.suppress(json.JSONDecodeError, UnicodeDecodeError):
                    record = json.loads(line)
                    if isinstance(record, dict):
                        self._record(record, states, services)

    def _record(
        self, record: dict[str, Any], states: dict[str, str], services: dict[str, Any]
    ) -> None:
        event, name = record.get("event"), record.get("service")
        if event == "state changed" and isinstance(name, str):
            states[name] = str(record.get("new"))
            if record.get("reason") in ("waiting for dependencies", "starting container"):
                # A new wait: which dependencies have been at their condition since.
                deps = services.get(name, {}).get("depends_on") or {}
                self.met[name] = {d for d, c in deps.items() if _at(states.get(d), c)}
            for other, body in services.items():
                deps = body.get("depends_on") or {}
                if name in deps and _at(states.get(name), deps[name]):
                    self.met.setdefault(other, set()).add(name)
                if name in deps and not _at(states.get(name), deps[name]):
                    self.job_may_rerun[other] = True
        elif event == "container started" and isinstance(name, str) and name in services:
            self.starts += 1
            deps = services[name].get("depends_on") or {}
            for dep, condition in deps.items():
                # The daemon decides to start once every dependency is at its condition; one
                # may fail during the engine's start call, so "since the wait began" counts.
                if not _at(states.get(dep), condition) and dep not in self.met.get(name, set()):
                    raise Breach(
                        f"{name} started while {dep} was {states.get(dep)!r}, not {condition}: "
                        f"{json.dumps(record)}"
                    )
            if services[name].get("type") == "job":
                if self.job_started.get(name) and not self.job_may_rerun.get(name):
                    raise Breach(f"completed job {name} rerun with its dependencies untouched")
                if self.job_started.get(name):
                    self.reruns += 1
                self.job_started[name] = self.job_started.get(name, 0) + 1
                self.job_may_rerun[name] = False


def _at(state: str | None, condition: str) -> bool:
    if condition == "completed":
        return state == "completed"
    if condition == "healthy":
        return state == "healthy"
    return state in ("starting", "running", "healthy", "unhealthy")


# --------------------------------------------------------------------------- the soak


@dataclass
class Soak:
    engine: PrivateEngine
    workdir: Path
    project: str
    rng: random.Random
    settle_timeout: float
    config: dict[str, Any] = field(default_factory=dict)
    stopped: set[str] = field(default_factory=set)
    extras: int = 0
    log_checker: LogChecker = field(default_factory=LogChecker)
    records: list[dict[str, Any]] = field(default_factory=list)
    rss_bound: float | None = None
    fd_bound: int | None = None
    markers: bool = False  # written into each volume once the stack is first up

    def __post_init__(self) -> None:
        self.socket = self.workdir / "api.sock"
        self.config_path = self.workdir / "supervisor.yaml"
        self.config = base_config(self.project, self.socket)
        self.write_config()
        self.daemon = Daemon(self.engine, self.config_path, self.workdir)
        self.client = self.engine.client(timeout=30)
        self.api = ApiClient(f"unix://{self.socket}", timeout=10)

    # -- plumbing ---------------------------------------------------------------------

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def status(self) -> dict[str, Any] | None:
        try:
            answer: dict[str, Any] = self.api.get("/v1/status")
            return answer
        except ClientError:
            return None

    def long_running(self) -> list[str]:
        return [n for n, s in self.config["services"].items() if s.get("type") != "job"]

    def containers(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.client.api.containers(
            all=True, filters={"label": f"{LABEL_PROJECT}={self.project}"}
        )
        return found

    def container_of(self, service: str) -> dict[str, Any] | None:
        for c in self.containers():
            if c["Labels"].get(LABEL_SERVICE) == service:
                return c
        return None

    def started_at(self, service: str) -> tuple[str, str] | None:
        c = self.container_of(service)
        if c is None:
            return None
        try:
            info = self.client.api.inspect_container(c["Id"])
        except docker.errors.NotFound:  # replaced between the listing and the look
            return None
        return info["Id"], info["State"]["StartedAt"]

    def volume_dir(self, name: str) -> Path:
        root: Path = self.engine.data_root
        return root / "volumes" / f"{self.project}-{name}" / "_data"

    # -- invariants -------------------------------------------------------------------

    def problems(self) -> list[str]:
        """What is not as it should be right now (empty: settled)."""
        out: list[str] = []
        status = self.status()
        if status is None:
            return ["the API does not answer"]
        services = self.config["services"]
        shown = {s["name"]: s for s in status["services"]}
        if set(shown) != set(services):
            out.append(f"API shows {sorted(shown)}, config has {sorted(services)}")
        for name in self.long_running():
            state = shown.get(name, {}).get("state")
            if name in self.stopped:
                if state != "stopped":
                    out.append(f"{name} is {state}, the operator stopped it")
            elif state not in ("healthy", "running") or (
                state == "running" and "health" in services[name]
            ):
                out.append(f"{name} is {state}")
        for name, body in services.items():
            if body.get("type") == "job" and shown.get(name, {}).get("state") != "completed":
                out.append(f"job {name} is {shown.get(name, {}).get('state')}")
        per_service: dict[str, int] = {}
        for c in self.containers():
            service = c["Labels"].get(LABEL_SERVICE, "?")
            per_service[service] = per_service.get(service, 0) + 1
            if service not in services:
                out.append(f"container {c['Names'][0]} of {service!r}, not in the config")
            elif service in self.stopped:
                if c["State"] == "running":
                    out.append(f"{service} is stopped but its container runs")
            elif body_is_long_running(services[service]) and c["State"] != "running":
                out.append(f"container of {service} is {c['State']}")
        for name in services:
            if per_service.get(name, 0) > 1 or (
                per_service.get(name, 0) == 0 and name not in self.stopped
            ):
                out.append(f"{name} has {per_service.get(name, 0)} containers")
        label = {"label": f"{LABEL_PROJECT}={self.project}"}
        nets = {n["Name"] for n in self.client.api.networks(filters=label)}
        wanted_nets = {f"{self.project}-{n}" for n in self.config["networks"]}
        if not nets <= wanted_nets:
            out.append(f"networks outside the config: {sorted(nets - wanted_nets)}")
        vols = {
            v["Name"] for v in (self.client.api.volumes(filters=label) or {}).get("Volumes") or []
        }
        wanted_vols = {f"{self.project}-{v}" for v in self.config["volumes"]}
        if vols != wanted_vols:
            out.append(f"volumes {sorted(vols)}, config has {sorted(wanted_vols)}")
        return out

    def hard_checks(self) -> None:
        """Checks whose failure is a breach at once (no settling helps)."""
        if not self.daemon.alive():
            raise Breach(f"the daemon exited ({self.daemon.proc and self.daemon.proc.returncode})")
        self.log_checker.check(self.daemon.logs, self.config)
        for volume in self.config["volumes"] if self.markers else ():
            marker = self.volume_dir(volume) / MARKER
            if not marker.is_file() or marker.read_text() != f"{volume}\n":
                raise Breach(f"volume {volume}: marker {marker} gone")

    def settle(self, noticed: Callable[[], bool]) -> float:
        """Seconds until the fault was noticed and every invariant holds twice in a row."""
        began = time.monotonic()
        deadline = began + self.settle_timeout
        good_since: float | None = None
        last: list[str] = []
        while time.monotonic() < deadline:
            if not self.daemon.alive():
                raise Breach(f"the daemon exited\n{self.daemon.tail()}")
            last = ["fault not yet noticed"] if not noticed() else self.problems()
            if not last:
                if good_since is None:
                    good_since = time.monotonic()
                elif time.monotonic() - good_since >= 0.5:
                    self.hard_checks()
                    return good_since - began
            else:
                good_since = None
            time.sleep(0.2)
        raise Breach(f"not settled after {self.settle_timeout}s: {last}\n{self.daemon.tail()}")

    def check_resources(self, index: int, warmup: int) -> tuple[float, int]:
        rss, fds = self.daemon.resources()
        if index == warmup:
            self.rss_bound = max(r["rss_mib"] for r in self.records) * 1.5 + 20
            self.fd_bound = max(r["fds"] for r in self.records) + 64
        if self.rss_bound is not None and rss > self.rss_bound:
            raise Breach(f"daemon RSS {rss:.1f} MiB over the bound {self.rss_bound:.1f} MiB")
        if self.fd_bound is not None and fds > self.fd_bound:
            raise Breach(f"daemon has {fds} open descriptors, over the bound {self.fd_bound}")
        return rss, fds

    # -- faults -----------------------------------------------------------------------

    def pick(self) -> str:
        names = [name for name, _ in FAULTS]
        weights = [weight for _, weight in FAULTS]
        while True:
            fault = self.rng.choices(names, weights)[0]
            if fault == "op-start" and not self.stopped:
                continue
            if fault == "reload-add" and self.extras >= MAX_EXTRAS:
                continue
            if fault == "reload-remove" and not self.extra_names():
                continue
            return fault

    def extra_names(self) -> list[str]:
        return sorted(n for n in self.config["services"] if n.startswith("extra"))

    def running_target(self, http_only: bool = False) -> str:
        names = [n for n in self.long_running() if n not in self.stopped]
        if http_only:
            names = [n for n in names if "http" in self.config["services"][n].get("health", {})]
        return self.rng.choice(sorted(names))

    def leaf_target(self, running: bool) -> str | None:
        """A long-running service nothing depends on (an operator stop has no knock-on)."""
        services = self.config["services"]
        needed = {d for s in services.values() for d in (s.get("depends_on") or {})}
        leaves = [
            n
            for n in self.long_running()
            if n not in needed and ((n not in self.stopped) if running else (n in self.stopped))
        ]
        return self.rng.choice(sorted(leaves)) if leaves else None

    def inject(self, fault: str) -> tuple[str, Callable[[], bool]]:
        """Do the fault; return its target and a predicate telling it has been noticed."""
        if fault in ("kill", "oom", "rm", "stop", "health500", "hang"):
            return self._container_fault(fault)
        if fault == "daemon-kill":
            self.daemon.kill()
            # An operator's stop lives in the daemon's memory: a new daemon runs everything.
            self.stopped.clear()
            self.daemon.start()
            return "supervisor", lambda: self.status() is not None
        if fault == "sighup-storm":
            for _ in range(10):
                os.kill(self.daemon.pid, signal.SIGHUP)
                time.sleep(0.02)
            return "supervisor", self._last_reload_ok
        if fault.startswith("reload-"):
            return self._reload_fault(fault)
        if fault.startswith("op-"):
            return self._operator_fault(fault[3:])
        if fault == "dockerd-restart":
            self.engine.stop()
            self.engine.start()
            return "dockerd", lambda: True
        raise ValueError(fault)

    def _container_fault(self, fault: str) -> tuple[str, Callable[[], bool]]:
        target = self.running_target(http_only=fault in ("health500", "hang"))
        before = self.started_at(target)
        assert before is not None, target
        try:
            ctr = self.client.containers.get(before[0])
        except docker.errors.NotFound:
            return target, lambda: True  # already being replaced: settle all the same
        if fault == "kill":
            ctr.kill()
        elif fault == "oom":
            self.client.api.update_container(before[0], mem_limit="32m", memswap_limit="32m")
            ctr.exec_run(["/stand-in-ctl", "oom"])
        elif fault == "rm":
            ctr.remove(force=True)
        elif fault == "stop":
            ctr.stop(timeout=1)
        else:
            ctr.exec_run(["/stand-in-ctl", "fail" if fault == "health500" else "hang"])
        return target, lambda: self.started_at(target) not in (None, before)

    def _reload_fault(self, fault: str) -> tuple[str, Callable[[], bool]]:
        services = self.config["services"]
        if fault == "reload-add":
            self.extras += 1
            target = f"extra{self.extras}"
            services[target] = extra_service()
        elif fault == "reload-change":
            target = self.rng.choice(["worker", *self.extra_names()])
            env = services[target]["environment"]
            env["GENERATION"] = str(int(env["GENERATION"]) + 1)
        else:
            target = self.rng.choice(self.extra_names())
            del services[target]
            self.stopped.discard(target)
        self.write_config()
        result = self.api.request("POST", "/v1/reload", accept=(200, 422), timeout=300)
        if not result["ok"]:
            raise Breach(f"reload refused: {result}")
        return target, lambda: True

    def _operator_fault(self, action: str) -> tuple[str, Callable[[], bool]]:
        target = self.leaf_target(running=action != "start") or "web"
        if action == "stop":
            self.stopped.add(target)
        else:
            self.stopped.discard(target)
        before = self.started_at(target)
        self.api.request("POST", f"/v1/services/{target}/{action}", accept=(202,))
        if action == "restart":
            return target, lambda: self.started_at(target) not in (None, before)
        return target, lambda: True

    def _last_reload_ok(self) -> bool:
        status = self.status()
        if status is None:
            return False
        last = status["daemon"].get("last_reload")
        return bool(last and last["ok"])

    # -- the run ----------------------------------------------------------------------

    def run(self, faults: int, budget: float, partial: Path) -> dict[str, Any]:
        self.daemon.start()
        first = self.settle(lambda: True)
        print(f"stack up in {first:.1f}s", flush=True)
        for volume in self.config["volumes"]:
            (self.volume_dir(volume) / MARKER).write_text(f"{volume}\n")
        self.markers = True
        warmup = min(20, max(1, faults // 10))
        began = time.monotonic()
        breach: str | None = None
        for index in range(1, faults + 1):
            if time.monotonic() - began > budget:
                print(f"time budget of {budget:.0f}s spent after {index - 1} faults", flush=True)
                break
            fault = self.pick()
            at = time.monotonic()
            try:
                target, noticed = self.inject(fault)
                recovery = self.settle(noticed)
                rss, fds = self.daemon.resources()
                self.records.append(
                    {
                        "fault": fault,
                        "target": target,
                        "recovery": round(recovery, 3),
                        "rss_mib": round(rss, 1),
                        "fds": fds,
                        "t": round(at - began, 1),
                    }
                )
                self.check_resources(index, warmup)
            except Breach as exc:
                breach = f"fault {index} ({fault}): {exc}"
                print(f"BREACH {breach}", flush=True)
                break
            if index % 10 == 0 or index == faults:
                write_results(
                    self.summary(faults, None, time.monotonic() - began), partial, REPO_ROOT
                )
                print(
                    f"{index}/{faults} faults survived, {time.monotonic() - began:.0f}s, "
                    f"last {fault} on {target} recovered in {recovery:.2f}s, "
                    f"RSS {rss:.1f} MiB, {fds} fds",
                    flush=True,
                )
        return self.summary(faults, breach, time.monotonic() - began)

    def summary(self, asked: int, breach: str | None, seconds: float) -> dict[str, Any]:
        recoveries = sorted(r["recovery"] for r in self.records)
        by_fault: dict[str, list[float]] = {}
        for r in self.records:
            by_fault.setdefault(r["fault"], []).append(r["recovery"])
        return {
            "faults_asked": asked,
            "faults_survived": len(self.records),
            "breach": breach,
            "seconds": round(seconds, 1),
            "recovery_p50": _quantile(recoveries, 0.5),
            "recovery_p99": _quantile(recoveries, 0.99),
            "recovery_max": recoveries[-1] if recoveries else None,
            "by_fault": {
                f: {"n": len(v), "p50": _quantile(sorted(v), 0.5), "max": max(v)}
                for f, v in sorted(by_fault.items())
            },
            "container_starts_checked": self.log_checker.starts,
            "job_reruns_allowed": self.log_checker.reruns,
            "rss_bound_mib": self.rss_bound,
            "fd_bound": self.fd_bound,
            "rss_over_time": [
                (r["t"], r["rss_mib"], r["fds"])
                for r in self.records[:: max(1, len(self.records) // 50)]
            ],
            "daemon_incarnations": self.daemon.incarnation,
        }

    def close(self) -> None:
        self.daemon.stop()
        self.client.close()


def body_is_long_running(body: dict[str, Any]) -> bool:
    return body.get("type") != "job"


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))]


@contextlib.contextmanager
def soak_session(seed: int, settle_timeout: float) -> Iterator[Soak]:
    with private_engine(IMAGE) as engine, tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        project = f"soak-{secrets.token_hex(3)}"
        soak = Soak(engine, Path(tmp), project, random.Random(seed), settle_timeout)
        try:
            yield soak
        finally:
            soak.close()
            kept = Path(tempfile.gettempdir()) / f"{project}-logs"
            shutil.copytree(tmp, kept, ignore=shutil.ignore_patterns("*.sock"))
            print(f"daemon logs and config kept in {kept}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--faults", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--settle-timeout", type=float, default=90.0)
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument(
        "--budget", type=float, default=float("inf"), help="stop injecting after this many seconds"
    )
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    print(f"soak: {args.faults} faults, seed {seed}", flush=True)
    with soak_session(seed, args.settle_timeout) as soak:
        partial = Path(tempfile.gettempdir()) / "soak-partial.json"
        result = soak.run(args.faults, args.budget, partial)
    result["seed"] = seed
    print(json.dumps({k: v for k, v in result.items() if k != "rss_over_time"}, indent=1))
    if result["recovery_p50"] is not None:
        print(
            f"survived {result['faults_survived']}/{args.faults}; recovery p50 "
            f"{result['recovery_p50']:.2f}s p99 {result['recovery_p99']:.2f}s"
        )
    write_results(result, args.json, REPO_ROOT)
    return 1 if result["breach"] else 0


if __name__ == "__main__":
    sys.exit(main())
