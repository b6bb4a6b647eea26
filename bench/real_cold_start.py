"""Cold start of the real demo (config/demo.yaml): ovpn-supervisor vs its critical path vs
docker-compose 1.29.

Each round runs, one after the other (never at the same time, so they do not share the CPU),
every one on a fresh project (fresh volumes: PostgreSQL initialises its data every time):
  * critical path, by hand: the demo's schedule run with docker-py alone, in one loop: every
    container created and started the moment its depends_on conditions hold, readiness polled
    every 100 ms like our start-period probing (pg_isready through exec, HTTPS /health from the
    host, nginx's port). Its end is the longest dependency chain (postgres-ct ->
    certtransparency-migrate -> certtransparency -> signing -> frontend) at the pace of real
    PostgreSQL's and the apps' readiness, measured in the same run: the floor for any tool.
  * ours: `python -m supervisor run` on the demo config; up = the last long-running service
    logged healthy, from launch.
  * compose: `docker-compose up -d` on the same topology; healthchecks with what the images
    contain (pg_isready, python3 for HTTPS /health, nc -z for nginx), interval 100 ms; up = the
    engine's last `health_status: healthy` event.
Rerun: `.venv/bin/python bench/real_cold_start.py [--rounds 3]` after scripts/ensure-bench-tools
and scripts/build-demo-images.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import docker
import yaml
from cold_start import (
    COMPOSE_CONDITION,
    COMPOSE_LABEL,
    OUR_LABEL,
    HealthEvents,
    _deps,
    _env,
    _is_job,
    long_running,
    median,
    run,
    spread,
    wait_logged_healthy,
)
from common import compile_package, free_port, machine, remove_by_label, write_results

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO = REPO_ROOT / "config" / "demo.yaml"
GENERATE_SECRETS = REPO_ROOT / "config" / "production" / "generate-secrets"
RESULTS_DIR = REPO_ROOT / "bench" / "results"
POLL = 0.1
PATH_SERVICES = (
    "postgres-ct",
    "certtransparency-migrate",
    "certtransparency",
    "signing",
    "frontend",
)
APP_PORTS = {"certtransparency": 8800, "signing": 8500, "frontend": 8600}
UNVERIFIED = ssl._create_unverified_context()
# The HTTPS healthcheck compose runs inside the app containers (no curl there).
PY_HEALTH = (
    "import ssl,urllib.request;urllib.request.urlopen('https://127.0.0.1:{port}/health',"
    "context=ssl._create_unverified_context(),timeout=2)"
)


@dataclass
class Run:
    tool: str
    round: int
    up: float | None = None
    stop: float | None = None
    steps: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def demo_in(workdir: Path, project: str) -> tuple[dict[str, Any], Path]:
    """The demo config renamed to `project`, nginx on a free port, secrets generated beside it."""
    config: dict[str, Any] = yaml.safe_load(DEMO.read_text())
    config["project"] = project
    config["api"] = {"listen": f"127.0.0.1:{free_port()}"}
    config["services"]["nginx"]["ports"] = [f"127.0.0.1:{free_port()}:8443"]
    folder = workdir / project
    folder.mkdir()
    env = {"PATH": "/usr/bin:/bin", "OIDC_CLIENT_SECRET": "x", "CA_KEY_PASSPHRASE": "x"}
    subprocess.run([str(GENERATE_SECRETS), str(folder)], env=env, capture_output=True, check=True)
    path = folder / "supervisor.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config, folder


# -- the critical path, by hand -------------------------------------------------------------------


class ByHand:
    """Containers of the demo made with docker-py alone, as bare as the engine allows."""

    def __init__(self, api: docker.APIClient, config: dict[str, Any], folder: Path) -> None:
        self.api, self.config, self.folder = api, config, folder
        self.project = config["project"]
        self.labels = {OUR_LABEL: self.project}

    def setup(self) -> None:
        for name, net in self.config["networks"].items():
            self.api.create_network(
                f"{self.project}-{name}", internal=bool(net.get("internal")), labels=self.labels
            )
        for name in self.config["volumes"]:
            self.api.create_volume(f"{self.project}-{name}", labels=self.labels)

    def start(self, name: str) -> str:
        s = self.config["services"][name]
        nets = [f"{self.project}-{n}" for n in s.get("networks", [])]
        binds = [
            f"{self.project}-{v}" if not v.startswith("/") else v for v in s.get("volumes", [])
        ]
        binds += [
            f"{self.folder / 'secrets' / sec}:/run/secrets/{sec}:ro" for sec in s.get("secrets", [])
        ]
        ports: dict[int | str, Any] = {}
        for p in s.get("ports", []):
            host_ip, host_port, container_port = p.split(":")
            ports[int(container_port)] = (host_ip, int(host_port))
        cid: str = self.api.create_container(
            s["image"],
            command=s.get("command"),
            name=f"{self.project}-{name}",
            environment=_env(s),
            labels=self.labels,
            host_config=self.api.create_host_config(binds=binds, port_bindings=ports),
            networking_config=self.api.create_networking_config(
                # types-docker has this as one endpoint; docker-py takes {network: endpoint}
                {nets[0]: self.api.create_endpoint_config(aliases=[name])}  # type: ignore[arg-type]
            ),
        )["Id"]
        for net in nets[1:]:
            self.api.connect_container_to_network(cid, net, aliases=[name])
        self.api.start(cid)
        return cid

    def ready(self, name: str, cid: str) -> bool:
        """Whether `name` meets the condition its dependents wait for (exit 0 or healthy)."""
        s = self.config["services"][name]
        if not _is_job(s):
            return self._healthy(s, cid)
        state = self.api.inspect_container(cid)["State"]
        if not state["Running"] and state["ExitCode"] != 0:
            raise RuntimeError(f"{name} exited {state['ExitCode']}")
        return not state["Running"]

    def _healthy(self, s: dict[str, Any], cid: str) -> bool:
        health = s["health"]
        if "exec" in health:
            ex = self.api.exec_create(cid, health["exec"])
            self.api.exec_start(ex["Id"])
            return bool(self.api.exec_inspect(ex["Id"])["ExitCode"] == 0)
        nets = self.api.inspect_container(cid)["NetworkSettings"]["Networks"]
        ip = next(n["IPAddress"] for n in nets.values() if n["IPAddress"])
        if "tcp" in health:
            with (
                contextlib.suppress(OSError),
                socket.create_connection((ip, health["tcp"]["port"]), timeout=1),
            ):
                return True
            return False
        url = f"https://{ip}:{health['http']['port']}{health['http']['path']}"
        try:
            with urllib.request.urlopen(url, context=UNVERIFIED, timeout=1) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False


def run_by_hand(workdir: Path, rnd: int, cap: float) -> Run:
    """The demo's schedule with nothing but the engine: every container started the moment its
    conditions hold, readiness polled every 100 ms, in one loop."""
    api = docker.APIClient()
    project = f"bench-{secrets.token_hex(4)}"
    config, folder = demo_in(workdir, project)
    services = config["services"]
    result = Run("critical path, by hand", rnd)
    hand = ByHand(api, config, folder)
    started: dict[str, str] = {}
    ready: dict[str, float] = {}
    wanted = set(long_running(config))
    try:
        t0 = time.time()
        hand.setup()
        while not wanted <= set(ready) and time.time() - t0 < cap:
            for name in services:
                deps = _deps(services[name])
                if name not in started and all(
                    d in (started if c == "started" else ready) for d, c in deps.items()
                ):
                    started[name] = hand.start(name)
            for name, cid in started.items():
                if name not in ready and hand.ready(name, cid):
                    ready[name] = round(time.time() - t0, 3)
            time.sleep(POLL)
        result.steps = dict(sorted(ready.items(), key=lambda item: item[1]))
        if wanted <= set(ready):
            result.up = max(ready[s] for s in wanted)
        else:
            result.notes.append(f"not ready within {cap:g}s: {sorted(wanted - set(ready))}")
    except RuntimeError as exc:
        result.notes.append(str(exc))
    finally:
        remove_by_label(api, f"{OUR_LABEL}={project}")
        api.close()
    return result


# -- ours -----------------------------------------------------------------------------------------


def run_ours(workdir: Path, rnd: int, cap: float) -> Run:
    project = f"bench-{secrets.token_hex(4)}"
    config, folder = demo_in(workdir, project)
    config_path = folder / "supervisor.yaml"
    log_path = folder / "daemon.log"
    result = Run("ovpn-supervisor", rnd)
    argv = [sys.executable, "-m", "supervisor"]
    with log_path.open("wb") as log_file:
        t0 = time.time()
        proc = subprocess.Popen(
            [*argv, "run", "--config", str(config_path), "--log-format", "json"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=REPO_ROOT,
        )
        try:
            wanted = set(long_running(config))
            healthy_at = wait_logged_healthy(log_path, proc, wanted, t0 + cap)
            if set(healthy_at) >= wanted:
                result.up = max(healthy_at.values()) - t0
                result.steps = {s: round(t - t0, 3) for s, t in sorted(healthy_at.items())}
            else:
                result.notes.append(f"not all healthy within {cap:g}s: {sorted(healthy_at)}")
            began = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
            result.stop = time.perf_counter() - began
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    run([*argv, "down", "--config", str(config_path), "--volumes"], cwd=REPO_ROOT)
    remove_by_label(docker.APIClient(), f"{OUR_LABEL}={project}")
    return result


# -- docker-compose -------------------------------------------------------------------------------


def compose_file(config: dict[str, Any], folder: Path, interval: str) -> dict[str, Any]:
    """The demo as a compose-spec file with healthchecks the images can run."""
    defaults = config["defaults"]
    services: dict[str, Any] = {}
    for name, s in config["services"].items():
        out: dict[str, Any] = {"image": s["image"], "environment": _env(s)}
        for key in ("command", "volumes", "networks", "ports", "secrets"):
            if s.get(key):
                out[key] = s[key]
        deps = _deps(s)
        if deps:
            out["depends_on"] = {d: {"condition": COMPOSE_CONDITION[c]} for d, c in deps.items()}
        stop = {**defaults["stop"], **(s.get("stop") or {})}
        out["stop_signal"], out["stop_grace_period"] = stop["signal"], stop["timeout"]
        health = s.get("health")
        if health and not _is_job(s):
            timing = {**defaults["health"], **health}
            if "exec" in health:
                test = ["CMD", *health["exec"]]
            elif "tcp" in health:
                test = ["CMD", "nc", "-z", "127.0.0.1", str(health["tcp"]["port"])]
            else:
                test = ["CMD", "python3", "-c", PY_HEALTH.format(port=health["http"]["port"])]
            out["healthcheck"] = {
                "test": test,
                "interval": interval,
                "timeout": timing["timeout"],
                "retries": int(timing["retries"]),
                "start_period": timing["start_period"],
            }
        services[name] = out
    return {
        "services": services,
        "networks": {
            n: {"internal": bool(v.get("internal"))} for n, v in config["networks"].items()
        },
        "volumes": {v: {} for v in config["volumes"]},
        "secrets": {n: {"file": str(folder / v["file"])} for n, v in config["secrets"].items()},
    }


def run_compose(workdir: Path, rnd: int, interval: str, cap: float) -> Run:
    project = f"bench-{secrets.token_hex(4)}"
    config, folder = demo_in(workdir, project)
    path = folder / "docker-compose.yml"
    path.write_text(yaml.safe_dump(compose_file(config, folder, interval), sort_keys=False))
    wanted = set(long_running(config))
    result = Run(f"docker-compose ({interval})", rnd)
    base = ["docker-compose", "-p", project, "-f", str(path)]
    events = HealthEvents(project)
    try:
        t0 = time.time()
        up = subprocess.Popen([*base, "up", "-d", "--no-color"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)  # fmt: skip
        while time.time() - t0 < cap and not set(events.first) >= wanted:
            if up.poll() not in (None, 0):
                result.notes.append(f"up -d exit {up.returncode}: {up.communicate()[0][-300:]}")
                break
            time.sleep(0.05)
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                up.wait(timeout=30)
        healthy = dict(events.first)
        if set(healthy) >= wanted:
            result.up = max(healthy[s] for s in wanted) - t0
            result.steps = {s: round(healthy[s] - t0, 3) for s in sorted(wanted)}
        else:
            result.notes.append(f"capped at {cap:g}s; healthy: {sorted(set(healthy) & wanted)}")
        began = time.perf_counter()
        run([*base, "stop"])
        result.stop = time.perf_counter() - began
        run([*base, "down", "-v", "--remove-orphans"])
    finally:
        events.close()
        remove_by_label(docker.APIClient(), f"{COMPOSE_LABEL}={project}")
    return result


# -- report ---------------------------------------------------------------------------------------


def summarize(runs: list[Run]) -> tuple[str, dict[str, Any]]:
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.tool, []).append(r)
    floor = median([r.up for r in groups.get("critical path, by hand", []) if r.up is not None])
    lines = [f"{'tool':30} {'n':>2} {'up s, median [min-max]':>24} {'/path':>6} {'stop s':>18}"]
    summary: dict[str, Any] = {}
    for tool, rs in groups.items():
        ups = [r.up for r in rs if r.up is not None]
        stops = [r.stop for r in rs if r.stop is not None]
        up_med = median(ups)
        ratio = up_med / floor if up_med and floor else None
        lines.append(
            f"{tool:30} {len(rs):>2} {spread(ups):>24} "
            f"{(f'{ratio:6.2f}' if ratio else '     —')} {spread(stops):>18}"
        )
        summary[tool] = {"up_median": up_med, "up_all": ups, "ratio_to_path": ratio,
                         "stop_median": median(stops)}  # fmt: skip
    hand = [r for r in groups.get("critical path, by hand", []) if r.up is not None]
    if hand:
        lines += ["", "critical path by hand, each service ready (median s from the start):"]
        for step in hand[0].steps:
            values = [r.steps[step] for r in hand if step in r.steps]
            lines.append(f"  {step:40} {spread(values)}")
    notes = [f"  round {r.round} {r.tool}: {n}" for r in runs for n in r.notes]
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines), {"summary": summary}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compose-interval", default="100ms")
    parser.add_argument("--cap", type=float, default=120.0, help="give up on a run after this")
    parser.add_argument("--json", type=Path, help="default bench/results/real_cold_start-latest")
    args = parser.parse_args()
    if shutil.which("docker-compose") is None:
        print("docker-compose not found: run scripts/ensure-bench-tools", file=sys.stderr)
        return 2
    api = docker.APIClient()
    for image in ("ovpn-demo/postgres:15", "ovpn-demo/app:1", "ovpn-demo/nginx:1.22"):
        api.inspect_image(image)  # type: ignore[no-untyped-call]  # run scripts/build-demo-images
    compile_package(REPO_ROOT)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-real-") as tmp:
        workdir = Path(tmp)
        for rnd in range(1, args.rounds + 1):
            order = ["hand", "ours", "compose"] if rnd % 2 else ["compose", "ours", "hand"]
            for tool in order:
                if tool == "hand":
                    r = run_by_hand(workdir, rnd, args.cap)
                elif tool == "ours":
                    r = run_ours(workdir, rnd, args.cap)
                else:
                    r = run_compose(workdir, rnd, args.compose_interval, args.cap)
                runs.append(r)
                up = f"{r.up:.2f} s" if r.up is not None else "—"
                print(f"round {rnd}: {r.tool}: up {up} {r.steps} {r.notes}", file=sys.stderr,
                      flush=True)  # fmt: skip
    table, data = summarize(runs)
    print(table)
    data["machine"] = machine(api, compose=True)
    data["args"] = {k: str(v) for k, v in vars(args).items()}
    data["runs"] = [asdict(r) for r in runs]
    write_results(data, args.json or RESULTS_DIR / "real_cold_start-latest.json", REPO_ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
