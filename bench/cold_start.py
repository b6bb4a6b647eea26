"""Cold start of the demo stack: ovpn-supervisor vs its critical path vs docker-compose v1.

Each round runs, one after the other (never at the same time, so they do not share the CPU):
  * the per-hop Docker cost: `create` + `start` of the stand-in, through the API and the CLI;
  * ours, fast:     `python -m supervisor run` on the stand-in demo
                    (tests/fixtures/standin-demo.yaml, 1 s readiness delays);
  * compose, fast:  the same topology in a compose file, healthcheck interval --compose-interval;
  * ours, 30 s:     the same with `defaults.health.interval: 30s`;
  * compose, 30 s:  healthcheck interval 30s (no start_interval in compose 1.29 / engine 20.10),
                    capped at --slow-cap seconds.
The order of ours/compose alternates between rounds. "Up" is from launching the tool until every
long-running service is healthy: for ours the `state changed ... new: healthy` timestamps in its
JSON log, for compose the engine's `health_status: healthy` events. Stop: ours SIGTERM until the
daemon exits, compose `docker-compose stop`; then removal (`supervisor down --volumes`,
`docker-compose down -v`). Rerun: `.venv/bin/python bench/cold_start.py [--rounds N]`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import docker
import yaml
from common import (
    compile_package,
    free_port,
    iso_to_epoch,
    machine,
    read_log,
    remove_by_label,
    wait_exit,
    write_results,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO_ROOT / "tests" / "fixtures" / "standin-demo.yaml"  # the stand-in topology
RESULTS_DIR = REPO_ROOT / "bench" / "results"
IMAGE = "ovpn-stand-in:latest"
OUR_LABEL = "io.ovpn-supervisor.project"
COMPOSE_LABEL = "com.docker.compose.project"
# Conditions of our config and their compose spellings.
COMPOSE_CONDITION = {
    "healthy": "service_healthy",
    "completed": "service_completed_successfully",
    "started": "service_started",
}


# -- the topology and its critical path -------------------------------------------------------


def load_demo() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(DEMO_CONFIG.read_text())
    return config


def _deps(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {str(d): "started" for d in deps}
    return {
        str(k): str(v if isinstance(v, str) else (v or {}).get("condition", "started"))
        for k, v in deps.items()
    }


def _is_job(service: dict[str, Any]) -> bool:
    return service.get("type") == "job"


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def work_time(service: dict[str, Any]) -> float:
    """What the stand-in spends before its condition can hold: readiness delay or job run time."""
    env = _env(service)
    key = "STANDIN_RUN_TIME" if _is_job(service) else "STANDIN_READY_DELAY"
    return float(env.get(key, "0"))


def long_running(config: dict[str, Any]) -> list[str]:
    return [n for n, s in config["services"].items() if not _is_job(s)]


@dataclass
class CriticalPath:
    seconds: float
    path: list[str]
    hops: int


def critical_path(config: dict[str, Any], hop: float) -> CriticalPath:
    """Earliest time every long-running service can be healthy, if each container costs `hop`.

    A service starts once all its dependencies meet their conditions; `started` holds `hop` after
    its start, `healthy`/`completed` `hop + work_time` after it. Nothing else (probing, event
    latency, setup of networks and volumes, the interpreter) is counted.
    """
    services = config["services"]
    start: dict[str, float] = {}
    via: dict[str, str | None] = {}

    def ready_at(name: str, condition: str) -> float:
        begin = start_of(name) + hop
        return begin if condition == "started" else begin + work_time(services[name])

    def start_of(name: str) -> float:
        if name not in start:
            deps = _deps(services[name])
            best, best_dep = 0.0, None
            for dep, condition in deps.items():
                t = ready_at(dep, condition)
                if t > best:
                    best, best_dep = t, dep
            start[name], via[name] = best, best_dep
        return start[name]

    end, last = max((ready_at(n, "healthy"), n) for n in long_running(config))
    path = [last]
    while (prev := via[path[-1]]) is not None:
        path.append(prev)
    return CriticalPath(end, path[::-1], len(path))


# -- helpers ------------------------------------------------------------------------------------


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)


# -- per-hop Docker cost ------------------------------------------------------------------------


@dataclass
class HopCost:
    api: list[float] = field(default_factory=list)  # create + start through docker-py
    cli: list[float] = field(default_factory=list)  # `docker create` + `docker start` processes


def measure_hop(api: docker.APIClient, samples: int) -> HopCost:
    """Create and start the stand-in on a fresh network, as each hop of the path must."""
    project = f"bench-{secrets.token_hex(4)}-hop"
    labels = {OUR_LABEL: project}
    net = api.create_network(project, labels=labels)["Id"]
    cost = HopCost()
    endpoints: Any = {project: api.create_endpoint_config()}
    try:
        for i in range(samples):
            began = time.perf_counter()
            cid = api.create_container(
                IMAGE,
                name=f"{project}-api{i}",
                environment={"STANDIN_READY_DELAY": "1"},
                labels=labels,
                host_config=api.create_host_config(restart_policy={"Name": "no"}),
                networking_config=api.create_networking_config(endpoints),
            )["Id"]
            api.start(cid)
            cost.api.append(time.perf_counter() - began)
            began = time.perf_counter()
            created = run(
                [
                    "docker", "create", "--name", f"{project}-cli{i}", "--network", project,
                    "--label", f"{OUR_LABEL}={project}", "-e", "STANDIN_READY_DELAY=1", IMAGE,
                ]
            )  # fmt: skip
            started = run(["docker", "start", created.stdout.strip()])
            if created.returncode == 0 and started.returncode == 0:
                cost.cli.append(time.perf_counter() - began)
    finally:
        remove_by_label(api, f"{OUR_LABEL}={project}")
        with contextlib.suppress(docker.errors.APIError):
            api.remove_network(net)
    return cost


# -- ours ---------------------------------------------------------------------------------------


@dataclass
class Run:
    tool: str
    variant: str
    round: int
    up: float | None = None  # launch -> last long-running service healthy
    healthy: int = 0
    returned: float | None = None  # compose: `up -d` returned; ours: first log line
    stop: float | None = None
    remove: float | None = None
    notes: list[str] = field(default_factory=list)
    timeline: dict[str, dict[str, float]] = field(default_factory=dict)


def our_config(project: str, slow: bool) -> dict[str, Any]:
    config = load_demo()
    config["project"] = project
    config["services"]["nginx"]["ports"] = [f"127.0.0.1:{free_port()}:8443"]
    if slow:
        config["defaults"]["health"]["interval"] = "30s"
    return config


def our_timeline(records: list[dict[str, Any]], t0: float) -> dict[str, dict[str, float]]:
    """Per service: seconds after launch of the moments that matter for the critical path."""
    out: dict[str, dict[str, float]] = {}
    for r in records:
        service, at = r.get("service"), r.get("timestamp")
        if not service or not at:
            continue
        t = round(iso_to_epoch(at) - t0, 3)
        marks = out.setdefault(service, {})
        event = r.get("event")
        if event == "state changed":
            reason = r.get("reason", "")
            if r.get("new") == "pending" and reason == "starting container":
                marks.setdefault("deps_met", t)
            elif r.get("new") in ("starting", "running") and "container started" in reason:
                marks.setdefault("up", t)
            elif r.get("new") in ("healthy", "completed"):
                marks.setdefault("ready", t)
        elif event == "container created":
            marks.setdefault("created", t)
    return out


def wait_logged_healthy(
    log_path: Path, proc: subprocess.Popen[bytes], wanted: set[str], deadline: float
) -> dict[str, float]:
    """Follow the daemon's log until every wanted service was logged healthy (or the deadline)."""
    healthy_at: dict[str, float] = {}
    while time.time() < deadline and proc.poll() is None:
        for r in read_log(log_path):
            logged_healthy = r.get("event") == "state changed" and r.get("new") == "healthy"
            if logged_healthy and r.get("service") in wanted:
                healthy_at.setdefault(r["service"], iso_to_epoch(r["timestamp"]))
        if set(healthy_at) >= wanted:
            break
        time.sleep(0.05)
    return healthy_at


def run_ours(workdir: Path, rnd: int, slow: bool, cap: float) -> Run:
    project = f"bench-{secrets.token_hex(4)}"
    config = our_config(project, slow)
    config_path = workdir / f"{project}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    log_path = workdir / f"{project}.log"
    wanted = set(long_running(config))
    result = Run("ovpn-supervisor", "30s" if slow else "fast", rnd)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "supervisor", "run", "--config", str(config_path)]
    with log_path.open("wb") as log_file:
        t0 = time.time()
        proc = subprocess.Popen(
            [*argv, "--log-format", "json"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO_ROOT,
        )
        try:
            healthy_at = wait_logged_healthy(log_path, proc, wanted, t0 + cap)
            result.healthy = len(healthy_at)
            if set(healthy_at) >= wanted:
                result.up = max(healthy_at.values()) - t0
            else:
                result.notes.append(f"not all healthy within {cap:g}s: {sorted(healthy_at)}")
            if proc.poll() is not None:
                result.notes.append(f"daemon exited early with {proc.returncode}")
            time.sleep(1.0)  # let the stack settle before timing the stop
            began = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            code = wait_exit(proc, timeout=120)
            result.stop = time.perf_counter() - began
            if code != 0:
                result.notes.append(f"daemon exit code {code}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    records = read_log(log_path)
    first = next((r for r in records if r.get("event") == "starting"), None)
    if first:
        result.returned = iso_to_epoch(first["timestamp"]) - t0
    result.timeline = our_timeline(records, t0)
    began = time.perf_counter()
    down = run([*argv[:3], "down", "--config", str(config_path), "--volumes"], cwd=REPO_ROOT)
    result.remove = time.perf_counter() - began
    if down.returncode != 0:
        result.notes.append(f"down failed: {down.stderr.strip()[-200:]}")
    remove_by_label(docker.APIClient(), f"{OUR_LABEL}={project}")
    return result


# -- docker-compose -----------------------------------------------------------------------------


def compose_file(config: dict[str, Any], interval: str, port: int) -> dict[str, Any]:
    """The same topology as a compose-spec file, with equivalent healthchecks and conditions."""
    health_defaults = config.get("defaults", {}).get("health", {})
    stop_defaults = config.get("defaults", {}).get("stop", {})
    services: dict[str, Any] = {}
    for name, s in config["services"].items():
        out: dict[str, Any] = {"image": s["image"], "environment": _env(s)}
        if s.get("volumes"):
            out["volumes"] = list(s["volumes"])
        if s.get("networks"):
            out["networks"] = list(s["networks"])
        if s.get("ports"):
            out["ports"] = [f"127.0.0.1:{port}:8443"]
        deps = _deps(s)
        if deps:
            out["depends_on"] = {d: {"condition": COMPOSE_CONDITION[c]} for d, c in deps.items()}
        stop = {**stop_defaults, **(s.get("stop") or {})}
        out["stop_signal"] = stop.get("signal", "SIGTERM")
        out["stop_grace_period"] = stop.get("timeout", "10s")
        health = s.get("health")
        if health and not _is_job(s):
            timing = {**health_defaults, **{k: v for k, v in health.items() if k in (
                "timeout", "retries", "start_period")}}  # fmt: skip
            if "exec" in health:
                test = ["CMD", *health["exec"]]
            elif "http" in health:
                http = health["http"]
                url = http.get("url") or f"http://127.0.0.1:{http['port']}{http.get('path', '/')}"
                test = ["CMD", "wget", "-q", "-O-", url]
            else:  # busybox nc has no -z: connect with empty stdin; refused -> exit 1
                test = ["CMD-SHELL", f"nc -w 1 127.0.0.1 {health['tcp']['port']} </dev/null"]
            out["healthcheck"] = {
                "test": test,
                "interval": interval,
                "timeout": timing.get("timeout", "2s"),
                "retries": int(timing.get("retries", 3)),
                "start_period": timing.get("start_period", "30s"),
            }
        services[name] = out
    return {
        "services": services,
        "networks": {n: {} for n in config.get("networks", {})},
        "volumes": {v: {} for v in config.get("volumes", {})},
    }


class HealthEvents:
    """Records each compose service's first `health_status: healthy` event, as the engine emits it.

    Streamed from before `up`: the engine keeps only its last 256 events, and the exec events of
    100 ms healthchecks push the early ones out long before the stack is up.
    """

    def __init__(self, project: str) -> None:
        self.first: dict[str, float] = {}
        self._client = docker.APIClient()
        self._stream = self._client.events(
            filters={
                "type": "container",
                "event": "health_status",
                "label": f"{COMPOSE_LABEL}={project}",
            },
            decode=True,
        )
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        with contextlib.suppress(Exception):  # the stream ends with an error when closed
            for e in self._stream:
                if str(e.get("Action", "")).startswith("health_status: healthy"):
                    attrs = (e.get("Actor") or {}).get("Attributes") or {}
                    service = attrs.get("com.docker.compose.service")
                    if service:
                        self.first.setdefault(service, e["timeNano"] / 1e9)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stream.close()
        self._thread.join(timeout=5)
        self._client.close()


def run_compose(workdir: Path, rnd: int, slow: bool, interval: str, cap: float) -> Run:
    api = docker.APIClient()
    config = load_demo()
    project = f"bench-{secrets.token_hex(4)}"
    path = workdir / f"{project}.compose.yaml"
    path.write_text(yaml.safe_dump(compose_file(config, "30s" if slow else interval, free_port())))
    wanted = set(long_running(config))
    result = Run("docker-compose", "30s" if slow else f"fast ({interval})", rnd)
    base = ["docker-compose", "-p", project, "-f", str(path)]
    events = HealthEvents(project)
    try:
        t0 = time.time()
        up = subprocess.Popen(
            [*base, "up", "-d", "--no-color"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        while time.time() - t0 < cap:
            if up.poll() is not None and result.returned is None:
                result.returned = time.time() - t0
                if up.returncode != 0:
                    result.notes.append(f"up -d exit {up.returncode}: {up.communicate()[0][-300:]}")
                    break
            if set(events.first) >= wanted and result.returned is not None:
                break
            time.sleep(0.05)
        if up.poll() is None:
            up.send_signal(signal.SIGINT)  # capped: compose is still waiting on a condition
            with contextlib.suppress(subprocess.TimeoutExpired):
                up.wait(timeout=30)
        healthy = dict(events.first)
        result.healthy = len(set(healthy) & wanted)
        result.timeline = {s: {"ready": round(t - t0, 3)} for s, t in healthy.items()}
        if set(healthy) >= wanted:
            result.up = max(healthy[s] for s in wanted) - t0
        else:
            result.notes.append(f"capped at {cap:g}s; healthy: {sorted(set(healthy) & wanted)}")
        began = time.perf_counter()
        stop = run([*base, "stop"])
        result.stop = time.perf_counter() - began
        if stop.returncode != 0:
            result.notes.append(f"stop failed: {stop.stdout[-200:]}{stop.stderr[-200:]}")
        began = time.perf_counter()
        down = run([*base, "down", "-v", "--remove-orphans"])
        result.remove = time.perf_counter() - began
        if down.returncode != 0:
            result.notes.append(f"down failed: {down.stderr[-200:]}")
    finally:
        events.close()
        remove_by_label(api, f"{COMPOSE_LABEL}={project}")
    return result


# -- report -------------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    if not values:
        return "—"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.2f}"
    return f"{med:.2f} [{min(values):.2f}-{max(values):.2f}]"


def summarize(
    runs: list[Run], hop: HopCost, config: dict[str, Any], cap: float
) -> tuple[str, dict[str, Any]]:
    hop_api, hop_cli = median(hop.api) or 0.0, median(hop.cli) or 0.0
    pure = critical_path(config, 0.0)
    with_docker = critical_path(config, hop_api)
    lines = [
        f"critical path: {' -> '.join(with_docker.path)} ({with_docker.hops} containers)",
        f"per-hop create+start, median [min-max] s: API {spread(hop.api)}  CLI {spread(hop.cli)}",
        f"lower bound: pure delays {pure.seconds:.2f} s; "
        f"with {with_docker.hops} x API hop {with_docker.seconds:.2f} s",
        "",
        f"{'configuration':34} {'n':>2} {'up s, median [min-max]':>24} {'/pure':>6} "
        f"{'/bound':>7} {'stop s':>18} {'remove s':>18}",
    ]
    groups: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.tool, r.variant), []).append(r)
    summary: dict[str, Any] = {}
    for (tool, variant), rs in groups.items():
        ups = [r.up for r in rs if r.up is not None]
        capped = len(rs) - len(ups)
        up_med = median(ups)
        label = f"{tool} {variant}"
        up_text = spread(ups) + (f" +{capped} capped>{cap:g}" if capped else "")
        ratio = f"{up_med / pure.seconds:6.2f}" if up_med else "     —"
        ratio_b = f"{up_med / with_docker.seconds:7.2f}" if up_med else "      —"
        stops = [r.stop for r in rs if r.stop is not None]
        removes = [r.remove for r in rs if r.remove is not None]
        lines.append(
            f"{label:34} {len(rs):>2} {up_text:>24} {ratio} {ratio_b} "
            f"{spread(stops):>18} {spread(removes):>18}"
        )
        summary[label] = {
            "runs": len(rs),
            "up_median": up_med,
            "up_all": ups,
            "capped": capped,
            "ratio_to_pure_delays": up_med / pure.seconds if up_med else None,
            "ratio_to_bound_with_docker": up_med / with_docker.seconds if up_med else None,
            "stop_median": median(stops),
            "stop_all": stops,
            "remove_median": median(removes),
        }
        if tool == "ovpn-supervisor":
            # The same, minus the interpreter's start-up (launch -> first log line).
            own = [r.up - r.returned for r in rs if r.up is not None and r.returned is not None]
            own_med = median(own)
            if own_med:
                lines.append(
                    f"{'  ... from its first log line':34} {len(own):>2} {spread(own):>24} "
                    f"{own_med / pure.seconds:6.2f} {own_med / with_docker.seconds:7.2f}"
                )
                summary[label]["up_from_first_log_line_median"] = own_med
    notes = [f"  round {r.round} {r.tool} {r.variant}: {n}" for r in runs for n in r.notes]
    if notes:
        lines += ["", "notes:", *notes]
    data = {
        "critical_path": with_docker.path,
        "hops": with_docker.hops,
        "bound_pure_delays": pure.seconds,
        "bound_with_docker": with_docker.seconds,
        "hop_api": hop.api,
        "hop_cli": hop.cli,
        "hop_api_median": hop_api,
        "hop_cli_median": hop_cli,
        "summary": summary,
    }
    return "\n".join(lines), data


def path_breakdown(runs: list[Run], config: dict[str, Any]) -> str:
    """Where ours spends its time along the critical path (medians over the fast runs)."""
    path = critical_path(config, 0.0).path
    fast = [r for r in runs if r.tool == "ovpn-supervisor" and r.variant == "fast" and r.up]
    if not fast:
        return ""
    cols: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        cols.setdefault(key, []).append(value)

    for r in fast:
        prev_ready = r.returned or 0.0
        add("interpreter+imports (launch -> first log line)", r.returned or 0.0)
        for name in path:
            t = r.timeline.get(name, {})
            if not {"deps_met", "up", "ready"} <= set(t):
                continue
            if name == path[0]:
                add("networks+volumes (first log line -> first start)", t["deps_met"] - prev_ready)
            else:
                add(f"{name}: dependency ready -> start requested", t["deps_met"] - prev_ready)
            add(f"{name}: create+start+inspect (docker)", t["up"] - t["deps_met"])
            work = work_time(config["services"][name])
            add(f"{name}: running -> ready, minus {work:g} s of work", t["ready"] - t["up"] - work)
            prev_ready = t["ready"]
    lines = ["", "ours, fast: where the time goes along the critical path (median s):"]
    lines += [f"  {k:60} {statistics.median(v):6.3f}" for k, v in cols.items()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hop-samples", type=int, default=5)
    parser.add_argument(
        "--compose-interval", default="100ms", help="compose healthcheck interval, fast variant"
    )
    parser.add_argument("--slow-cap", type=float, default=200.0, help="cap for 30 s variants")
    parser.add_argument("--no-slow", action="store_true", help="skip the 30 s-interval variants")
    parser.add_argument(
        "--json", type=Path, help="where to write the JSON (bench/results/cold_start-latest.json)"
    )
    args = parser.parse_args()

    if shutil.which("docker-compose") is None:
        print("docker-compose not found: run scripts/ensure-bench-tools", file=sys.stderr)
        return 2
    api = docker.APIClient()
    api.inspect_image(IMAGE)  # type: ignore[no-untyped-call]  # fails early when scripts/build-stand-in-image was not run
    config = load_demo()
    compile_package(REPO_ROOT)
    runs: list[Run] = []
    hop = HopCost()
    with tempfile.TemporaryDirectory(prefix="bench-cold-start-") as tmp:
        workdir = Path(tmp)
        for rnd in range(1, args.rounds + 1):
            h = measure_hop(api, args.hop_samples)
            hop.api += h.api
            hop.cli += h.cli
            variants = [False] if args.no_slow else [False, True]
            for slow in variants:
                cap = args.slow_cap if slow else 60.0
                order = ["ours", "compose"] if rnd % 2 else ["compose", "ours"]
                for tool in order:
                    if tool == "ours":
                        r = run_ours(workdir, rnd, slow, cap)
                    else:
                        r = run_compose(workdir, rnd, slow, args.compose_interval, cap)
                    runs.append(r)
                    up = f"{r.up:.2f} s" if r.up is not None else "capped"
                    print(
                        f"round {rnd}: {r.tool} {r.variant}: up {up}, stop {r.stop or 0:.2f} s"
                        + (f" ({'; '.join(r.notes)})" if r.notes else ""),
                        file=sys.stderr,
                        flush=True,
                    )
    table, data = summarize(runs, hop, config, args.slow_cap)
    table += path_breakdown(runs, config)
    print(table)
    data["machine"] = machine(api, compose=True)
    data["args"] = {k: str(v) for k, v in vars(args).items()}
    data["runs"] = [asdict(r) for r in runs]
    write_results(data, args.json or RESULTS_DIR / "cold_start-latest.json", REPO_ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
