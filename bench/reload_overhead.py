"""Reload overhead: one service of the nine-service demo changed, `ovpn-supervisor reload`, timed.

    .venv/bin/python bench/reload_overhead.py [--rounds 5]

One daemon runs the stand-in demo stack (tests/fixtures/standin-demo.yaml, renamed project, free ports). Once every
service is up, each round does, waiting for the whole stack to be up again between steps:
  * recreate:  a new environment variable on `signing`, then `python -m supervisor reload --json`;
  * reference: a bare stop (-t as the service's stop timeout) + rm + create + start of a stand-in
               like `signing` (same env, network, volume), through docker-py and through the CLI;
  * probe:     `signing`'s health interval changed (supervision only), then the same reload;
  * operator:  the recreate edit made where the file watcher sees it, and the reload CLI launched
               at once, as `vi supervisor.yaml && systemctl reload` would.
The order of recreate and reference alternates between rounds.

"Applied" is when the reload returns (supervisor/stack.py `apply`): the changed service's old
container was stopped and its new container created, started and inspected, and its state left
`pending` (for `signing`: `starting`, not yet healthy). The daemon's config path is a symlink into
another folder, so the first three edits are invisible to the watcher (it watches the link's folder)
and the CLI is the only trigger; the operator step replaces the link, which the watcher sees.

Times: `cli` launch of the reload CLI -> its return; `daemon` its `reload started` -> `reload
applied` log lines; `own` the service's `stopping container` -> `container started` log lines;
overhead = cli or daemon - own (target <= 200 ms) and - the docker-py reference. Touched =
containers whose Id or StartedAt changed, compared at the CLI's return and again once everything
is up again (target: exactly the changed one; zero for the probe change). Results go to
bench/results/reload_overhead-latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
import yaml
from common import free_port, iso_to_epoch, read_log, remove_by_label, stop_process, write_results

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO_ROOT / "tests" / "fixtures" / "standin-demo.yaml"  # the stand-in topology
RESULTS_DIR = REPO_ROOT / "bench" / "results"
IMAGE = "ovpn-stand-in:latest"
OUR_LABEL = "io.ovpn-supervisor.project"
REF_LABEL = "io.ovpn-supervisor.bench-reference"
SERVICE = "signing"
TARGET_OVERHEAD = 0.200
STEPS = ("stop", "rm", "create", "start")


# -- helpers ------------------------------------------------------------------------------------


def states(records: list[dict[str, Any]]) -> dict[str, str]:
    current: dict[str, str] = {}
    for r in records:
        if r.get("event") == "state changed":
            current[r["service"]] = r["new"]
    return current


def up_states(config: dict[str, Any]) -> dict[str, str]:
    return {
        name: "completed" if s.get("type") == "job" else "healthy"
        for name, s in config["services"].items()
    }


def wait_all_up(log: Path, proc: subprocess.Popen[bytes], want: dict[str, str], t: float) -> None:
    deadline = time.monotonic() + t
    while time.monotonic() < deadline:
        now = states(read_log(log))
        if all(now.get(k) == v for k, v in want.items()):
            return
        if proc.poll() is not None:
            raise SystemExit(f"daemon exited ({proc.returncode}); see {log}")
        time.sleep(0.05)
    raise SystemExit(f"stack not up within {t:g}s: {states(read_log(log))}; see {log}")


def identities(api: docker.APIClient, project: str) -> dict[str, tuple[str, str]]:
    """service -> (container Id, StartedAt) for every container of the project."""
    out = {}
    for c in api.containers(all=True, filters={"label": f"{OUR_LABEL}={project}"}):
        info = api.inspect_container(c["Id"])
        out[info["Config"]["Labels"]["io.ovpn-supervisor.service"]] = (
            info["Id"],
            info["State"]["StartedAt"],
        )
    return out


def touched(before: dict[str, tuple[str, str]], after: dict[str, tuple[str, str]]) -> list[str]:
    return sorted(n for n in set(before) | set(after) if before.get(n) != after.get(n))


def stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def ms(values: list[float]) -> str:
    if not values:
        return "—"
    med = statistics.median(values) * 1000
    if len(values) == 1:
        return f"{med:.0f}"
    return f"{med:.0f} [{min(values) * 1000:.0f}-{max(values) * 1000:.0f}]"


def run_text(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    return proc.stdout.strip() if proc.returncode == 0 else f"({proc.stderr.strip()[-100:]})"


# -- the daemon and its config -------------------------------------------------------------------


class Stack:
    """The demo stack under one daemon; its config is a symlink `link` -> a file in `store`."""

    def __init__(self, workdir: Path, project: str) -> None:
        self.project = project
        self.config: dict[str, Any] = yaml.safe_load(DEMO_CONFIG.read_text())
        self.config["project"] = project
        self.config["services"]["nginx"]["ports"] = [f"127.0.0.1:{free_port()}:8443"]
        token = workdir / "api.token"
        token.write_text(secrets.token_hex(16) + "\n")
        token.chmod(0o600)
        self.config["api"] = {"listen": f"127.0.0.1:{free_port()}", "token_file": str(token)}
        (workdir / "etc").mkdir()
        self.store = workdir / "store"
        self.store.mkdir()
        self.link = workdir / "etc" / "supervisor.yaml"
        self.target = self.store / "v0.yaml"
        self.version = 0
        self._write(self.target)
        self.link.symlink_to(self.target)
        self.log = workdir / "daemon.log"
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "run", "--config", str(self.link),
             "--log-format", "json", "--log-level", "debug"],
            stdout=self._log_file, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip

    def _write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(self.config, sort_keys=False))
        tmp.replace(path)

    def save_unseen(self) -> None:
        """Rewrite the link's target: the watcher (on the link's folder) does not see it."""
        self._write(self.target)

    def save_seen(self) -> None:
        """Point the link at a new file, renamed into the watched folder: the watcher sees it."""
        self.version += 1
        self.target = self.store / f"v{self.version}.yaml"
        self._write(self.target)
        tmp_link = self.link.with_name(".supervisor.yaml.new")
        tmp_link.symlink_to(self.target)
        tmp_link.replace(self.link)

    def records(self) -> list[dict[str, Any]]:
        return read_log(self.log)

    def wait_up(self, timeout: float) -> None:
        wait_all_up(self.log, self.proc, up_states(self.config), timeout)

    def reload(self) -> tuple[float, dict[str, Any]]:
        began = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "supervisor", "reload", "--json", "--config", str(self.link)],
            capture_output=True, text=True, cwd=REPO_ROOT, timeout=300, check=False,
        )  # fmt: skip
        took = time.perf_counter() - began
        try:
            result: dict[str, Any] = json.loads(proc.stdout)
        except json.JSONDecodeError:
            result = {"ok": False, "errors": [proc.stdout[-300:], proc.stderr[-300:]]}
        return took, result

    def close(self) -> None:
        stop_process(self.proc)
        self._log_file.close()
        subprocess.run(
            [sys.executable, "-m", "supervisor", "down", "--config", str(self.link), "--volumes"],
            cwd=REPO_ROOT, capture_output=True, timeout=300, check=False,
        )  # fmt: skip


# -- what one reload did, from the daemon's log -------------------------------------------------


def reload_window(records: list[dict[str, Any]], since: int) -> dict[str, Any]:
    """The daemon's view of the reloads logged from record `since` on (normally exactly one)."""
    new = records[since:]
    started = [r for r in new if r.get("event") == "reload started"]
    applied = [r for r in new if r.get("event") == "reload applied"]
    out: dict[str, Any] = {"reloads_started": len(started), "reloads_applied": len(applied)}
    if not started or not applied:
        return out
    t_start = iso_to_epoch(started[0]["timestamp"])
    # The applied line of the reload that recreated something (or the last one).
    main = next((r for r in applied if r.get("recreated")), applied[-1])
    t_applied = iso_to_epoch(main["timestamp"])
    out["daemon"] = t_applied - t_start
    out["recreated"] = [n for r in applied for n in r.get("recreated") or []]
    out["updated"] = [n for r in applied for n in r.get("updated") or []]
    marks: dict[str, float] = {}
    for r in new:
        if r.get("service") != SERVICE:
            continue
        t = iso_to_epoch(r["timestamp"]) - t_start
        event = r.get("event")
        if event in ("stopping container", "recreating container: config changed",
                     "container created", "container started"):  # fmt: skip
            marks.setdefault(event, t)
        elif event == "state changed":
            marks.setdefault(f"-> {r.get('new')}", t)
    marks["reload applied"] = t_applied - t_start
    out["marks"] = marks
    if "stopping container" in marks and "container started" in marks:
        out["own"] = marks["container started"] - marks["stopping container"]
    return out


# -- the reference: a bare stop + rm + create + start --------------------------------------------


class Reference:
    """A stand-in shaped like the service's container (env, network, volume), cycled bare."""

    def __init__(self, api: docker.APIClient, project: str, stop_timeout: int) -> None:
        self.api = api
        self.label = f"{REF_LABEL}={project}"
        info = api.inspect_container(f"{project}-{SERVICE}")
        self.env = info["Config"]["Env"]
        self.binds = [
            f"{m['Name']}:{m['Destination']}:{'rw' if m['RW'] else 'ro'}"
            for m in info["Mounts"]
            if m["Type"] == "volume"
        ]
        self.network = next(iter(info["NetworkSettings"]["Networks"]))
        self.name = f"{project}-reference"
        self.timeout = stop_timeout
        self.cid = self._create()
        api.start(self.cid)

    def _create(self) -> str:
        api = self.api
        endpoints: Any = {self.network: api.create_endpoint_config()}
        cid: str = api.create_container(
            IMAGE,
            name=self.name,
            environment=self.env,
            labels={REF_LABEL: self.label.split("=", 1)[1]},
            host_config=api.create_host_config(binds=self.binds, restart_policy={"Name": "no"}),
            networking_config=api.create_networking_config(endpoints),
        )["Id"]
        return cid

    def cycle_api(self) -> dict[str, float]:
        times: dict[str, float] = {}
        t = time.perf_counter()
        self.api.stop(self.cid, timeout=self.timeout)
        times["stop"], t = time.perf_counter() - t, time.perf_counter()
        self.api.remove_container(self.cid, force=True)
        times["rm"], t = time.perf_counter() - t, time.perf_counter()
        self.cid = self._create()
        times["create"], t = time.perf_counter() - t, time.perf_counter()
        self.api.start(self.cid)
        times["start"] = time.perf_counter() - t
        times["total"] = sum(times.values())
        return times

    def cycle_cli(self) -> dict[str, float]:
        def step(argv: list[str]) -> tuple[float, str]:
            t = time.perf_counter()
            proc = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120)
            return time.perf_counter() - t, proc.stdout.strip()

        times: dict[str, float] = {}
        times["stop"], _ = step(["docker", "stop", "-t", str(self.timeout), self.cid])
        times["rm"], _ = step(["docker", "rm", self.cid])
        argv = ["docker", "create", "--name", self.name, "--label", self.label,
                "--network", self.network, "--restart", "no"]  # fmt: skip
        for e in self.env:
            argv += ["-e", e]
        for b in self.binds:
            argv += ["-v", b]
        times["create"], self.cid = step([*argv, IMAGE])
        times["start"], _ = step(["docker", "start", self.cid])
        times["total"] = sum(times.values())
        return times

    def close(self) -> None:
        remove_by_label(self.api, self.label)


# -- one step of a round -------------------------------------------------------------------------


def reload_step(
    stack: Stack, api: docker.APIClient, kind: str, rnd: int, edit: Any, *, seen: bool = False
) -> dict[str, Any]:
    stack.wait_up(120)
    time.sleep(0.5)  # let the last probes and log lines of the previous step pass
    before = identities(api, stack.project)
    since = len(stack.records())
    edit()
    if seen:
        stack.save_seen()
    else:
        stack.save_unseen()
    cli, result = stack.reload()
    at_return = identities(api, stack.project)
    stack.wait_up(120)
    time.sleep(0.5)
    after_up = identities(api, stack.project)
    window = reload_window(stack.records(), since)
    step: dict[str, Any] = {
        "kind": kind,
        "round": rnd,
        "cli": cli,
        "ok": bool(result.get("ok")),
        "message": result.get("message"),
        "touched_at_return": touched(before, at_return),
        "touched_after_up": touched(before, after_up),
        **window,
    }
    if not step["ok"]:
        step["errors"] = result.get("errors")
    return step


def show(step: dict[str, Any]) -> str:
    parts = [f"round {step['round']} {step['kind']}:"]
    if "cli" in step:
        parts.append(f"cli {step['cli'] * 1000:.0f} ms")
    if "daemon" in step:
        parts.append(f"daemon {step['daemon'] * 1000:.0f} ms")
    if "own" in step:
        parts.append(f"own {step['own'] * 1000:.0f} ms")
    if "reloads_started" in step:
        parts.append(f"reloads {step['reloads_started']}")
    if "touched_after_up" in step:
        parts.append(f"touched {step['touched_after_up'] or '[]'}")
    if "api" in step:
        parts.append(f"ref api {step['api']['total'] * 1000:.0f} ms")
        parts.append(f"ref cli {step['cli_ref']['total'] * 1000:.0f} ms")
    if step.get("ok") is False:
        parts.append(f"FAILED {step.get('errors')}")
    return " ".join(parts)


# -- report -------------------------------------------------------------------------------------


def summarize(steps: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    by: dict[str, list[dict[str, Any]]] = {}
    for s in steps:
        by.setdefault(s["kind"], []).append(s)
    rec, ref, probe, oper = (by.get(k, []) for k in ("recreate", "reference", "probe", "operator"))
    ref_api = [s["api"]["total"] for s in ref]
    ref_cli = [s["cli_ref"]["total"] for s in ref]
    ref_api_med = statistics.median(ref_api) if ref_api else 0.0
    cli = [s["cli"] for s in rec]
    daemon = [s["daemon"] for s in rec if "daemon" in s]
    # Overhead per round against that round's own stop+start (paired), and against the reference.
    ovh_cli = [s["cli"] - s["own"] for s in rec if "own" in s]
    ovh_daemon = [s["daemon"] - s["own"] for s in rec if "own" in s and "daemon" in s]
    ovh_ref = [d - ref_api_med for d in daemon]
    data: dict[str, Any] = {
        "recreate": {
            "cli": stats(cli),
            "daemon": stats(daemon),
            "own_stop_to_started": stats([s["own"] for s in rec if "own" in s]),
            "overhead_cli_minus_own": stats(ovh_cli),
            "overhead_daemon_minus_own": stats(ovh_daemon),
            "overhead_daemon_minus_reference_api": stats(ovh_ref),
            "touched_after_up": [s["touched_after_up"] for s in rec],
        },
        "reference": {
            "api_total": stats(ref_api),
            "cli_total": stats(ref_cli),
            "supervisor_help_floor": stats([s["cli_floor"] for s in ref if "cli_floor" in s]),
            **{f"api_{k}": stats([s["api"][k] for s in ref]) for k in STEPS},
            **{f"cli_{k}": stats([s["cli_ref"][k] for s in ref]) for k in STEPS},
        },
        "probe": {
            "cli": stats([s["cli"] for s in probe]),
            "daemon": stats([s["daemon"] for s in probe if "daemon" in s]),
            "touched_after_up": [s["touched_after_up"] for s in probe],
            "updated": [s.get("updated") for s in probe],
        },
        "operator": {
            "cli": stats([s["cli"] for s in oper]),
            "reloads_started": [s.get("reloads_started") for s in oper],
            "cli_messages": [s.get("message") for s in oper],
            "touched_after_up": [s["touched_after_up"] for s in oper],
        },
    }
    target = TARGET_OVERHEAD * 1000

    def ratio(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000 / target:.2f}" if values else "—"

    def exact(runs: list[dict[str, Any]], want: list[str]) -> str:
        hits = sum(s["touched_at_return"] == want and s["touched_after_up"] == want for s in runs)
        return f"{hits}/{len(runs)}"

    lines = [
        f"one service ({SERVICE}) of nine changed; ms, median [min-max] over {len(rec)} rounds",
        f"  reload CLI launch -> return            {ms(cli):>20}",
        f"  daemon `reload started` -> `applied`   {ms(daemon):>20}",
        f"  own `stopping container` -> `started`  {ms([s['own'] for s in rec if 'own' in s]):>20}",
        f"  reference stop+rm+create+start, API    {ms(ref_api):>20}",
        f"  reference the same, docker CLI         {ms(ref_cli):>20}",
        f"overhead (target <= {target:.0f} ms)                              ratio",
        f"  CLI - own (paired per round)           {ms(ovh_cli):>20}  {ratio(ovh_cli):>6}",
        f"  daemon - own (paired per round)        {ms(ovh_daemon):>20}  {ratio(ovh_daemon):>6}",
        f"  daemon - reference (API, median)       {ms(ovh_ref):>20}  {ratio(ovh_ref):>6}",
        f"containers touched: recreate exactly [{SERVICE}] in {exact(rec, [SERVICE])} rounds; "
        f"probe change zero in {exact(probe, [])}; operator exactly [{SERVICE}] in "
        f"{exact(oper, [SERVICE])}",
        f"`python -m supervisor --help` (the CLI's start-up floor): "
        f"{ms([s['cli_floor'] for s in ref if 'cli_floor' in s])}",
        f"supervision-only change: CLI {ms([s['cli'] for s in probe])}, daemon "
        f"{ms([s['daemon'] for s in probe if 'daemon' in s])}",
        f"operator (edit seen by the watcher + CLI at once): CLI {ms([s['cli'] for s in oper])}, "
        f"reloads started per edit {[s.get('reloads_started') for s in oper]}, "
        f"CLI said {sorted({str(s.get('message')) for s in oper})}",
    ]
    # Where the daemon's time goes inside the reload (offsets from `reload started`).
    marks: dict[str, list[float]] = {}
    for s in rec:
        for k, v in (s.get("marks") or {}).items():
            marks.setdefault(k, []).append(v)
    lines.append(f"inside the reload, ms after `reload started` (median [min-max]), {SERVICE}:")
    for k, v in sorted(marks.items(), key=lambda kv: statistics.median(kv[1])):
        lines.append(f"  {k:40} {ms(v):>20}")
    lines.append("reference steps, ms (API | CLI):")
    for k in STEPS:
        api_ms, cli_ms = ms([s["api"][k] for s in ref]), ms([s["cli_ref"][k] for s in ref])
        lines.append(f"  {k:8} {api_ms:>16} | {cli_ms:>16}")
    bad = [show(s) for s in steps if s.get("ok") is False]
    if bad:
        lines += ["failures:", *bad]
    return "\n".join(lines), data


def reference_step(stack: Stack, reference: Reference, rnd: int) -> dict[str, Any]:
    """The bare Docker cycle, and the CLI's start-up floor (`python -m supervisor --help`)."""
    stack.wait_up(120)
    time.sleep(0.5)
    step = {"kind": "reference", "round": rnd, "api": reference.cycle_api()}
    step["cli_ref"] = reference.cycle_cli()
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "supervisor", "--help"],
        cwd=REPO_ROOT, capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    step["cli_floor"] = time.perf_counter() - began
    return step


def run_round(stack: Stack, api: docker.APIClient, reference: Reference, rnd: int) -> list[Any]:
    signing = stack.config["services"][SERVICE]

    def recreate() -> None:
        signing["environment"]["BENCH_ROUND"] = str(rnd)

    def probe() -> None:
        signing["health"]["interval"] = f"{10 + rnd}s"

    def operator_edit() -> None:
        signing["environment"]["BENCH_ROUND"] = f"{rnd}-operator"

    steps = []
    order = ["recreate", "reference"] if rnd % 2 else ["reference", "recreate"]
    for kind in [*order, "probe", "operator"]:
        if kind == "recreate":
            step = reload_step(stack, api, kind, rnd, recreate)
        elif kind == "reference":
            step = reference_step(stack, reference, rnd)
        elif kind == "probe":
            step = reload_step(stack, api, kind, rnd, probe)
        else:
            step = reload_step(stack, api, kind, rnd, operator_edit, seen=True)
        steps.append(step)
        print(show(step), file=sys.stderr, flush=True)
    return steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--json", type=Path, help="default bench/results/reload_overhead-latest.json"
    )
    parser.add_argument("--keep-log", type=Path, help="copy the daemon's JSON log here")
    args = parser.parse_args()
    api = docker.APIClient()
    api.inspect_image(IMAGE)  # type: ignore[no-untyped-call]  # fails early without the image
    project = f"bench-reload-{secrets.token_hex(4)}"
    steps: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-reload-") as tmp:
        stack = Stack(Path(tmp), project)
        reference: Reference | None = None
        try:
            began = time.monotonic()
            stack.wait_up(180)
            print(f"stack up in {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)
            stop_timeout = int(stack.config["defaults"]["stop"]["timeout"].rstrip("s"))
            reference = Reference(api, project, stop_timeout)
            for rnd in range(1, args.rounds + 1):
                steps += run_round(stack, api, reference, rnd)
        finally:
            if reference is not None:
                reference.close()
            stack.close()
            if args.keep_log:
                shutil.copyfile(stack.log, args.keep_log)
            remove_by_label(api, f"{OUR_LABEL}={project}")
            remove_by_label(api, f"{REF_LABEL}={project}")
    table, data = summarize(steps)
    print(table)
    data["machine"] = {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "docker": api.version().get("Version"),
        "python": platform.python_version(),
        "loadavg_at_start": load_before,
        "loadavg_at_end": os.getloadavg(),
    }
    # Others edit supervisor/ alongside: say which code was measured.
    git = ["git", "-C", str(REPO_ROOT)]
    data["code"] = {
        "head": run_text([*git, "rev-parse", "--short", "HEAD"]),
        "uncommitted": run_text([*git, "status", "--short", "--", "supervisor"]).splitlines(),
    }
    data["args"] = {k: str(v) for k, v in vars(args).items()}
    data["steps"] = steps
    write_results(data, args.json or RESULTS_DIR / "reload_overhead-latest.json", REPO_ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
