"""What exec probes at the start pace cost a container start beside them (issue 16).

    .venv/bin/python bench/exec_load.py [--rounds 5] [--pace 0.1]

Times the engine's `start` of a created stand-in (request to return, docker-py), on one user
network and on two, each with nothing else going on and with an exec probe (`true`: exec
create + start + inspect, what an exec health probe costs the engine) running in another
stand-in every `--pace` seconds, as a database gets probed while it warms up. Also times one
exec alone. The case for `engine_turns`: an exec probe at the start pace waits behind a longer
chain's start. Everything is labelled `io.ovpn-supervisor.project=bench-<hex>` and removed
afterwards. Results: table on stdout, JSON in bench/results/exec_load-latest.json.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import docker
from common import machine, remove_by_label, write_results

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "bench" / "results" / "exec_load-latest.json"
IMAGE = "ovpn-stand-in:latest"
LABEL = "io.ovpn-supervisor.project"


class Bench:
    def __init__(self, api: docker.APIClient, project: str) -> None:
        self.api = api
        self.project = project
        self.made = 0
        self.networks = [
            api.create_network(f"{project}-{n}", labels={LABEL: project})["Id"] for n in "ab"
        ]

    def create(self, networks: int) -> str:
        """A stand-in on the first `networks` networks, created, not started."""
        self.made += 1
        first, *more = self.networks[:networks]
        cid: str = self.api.create_container(
            IMAGE,
            name=f"{self.project}-{self.made}",
            labels={LABEL: self.project},
            host_config=self.api.create_host_config(network_mode=first),
        )["Id"]
        for network in more:
            self.api.connect_container_to_network(cid, network)
        return cid

    def start_time(self, networks: int, pace: float | None) -> float:
        """One start's duration; with an exec every `pace` s in another container meanwhile."""
        stop = threading.Event()
        prober = None
        if pace is not None:
            busy = self.create(1)
            self.api.start(busy)
            prober = threading.Thread(target=self.probe, args=(busy, pace, stop))
            prober.start()
            stop.wait(3 * pace)  # the probes under way first
        cid = self.create(networks)
        began = time.perf_counter()
        self.api.start(cid)
        took = time.perf_counter() - began
        stop.set()
        if prober is not None:
            prober.join()
        return took

    def probe(self, cid: str, pace: float, stop: threading.Event) -> None:
        api = docker.APIClient(timeout=60)  # its own connection, as the daemon's worker threads
        while not stop.is_set():
            began = time.perf_counter()
            self.exec_once(api, cid)
            stop.wait(max(0.0, pace - (time.perf_counter() - began)))
        api.close()

    @staticmethod
    def exec_once(api: docker.APIClient, cid: str) -> float:
        began = time.perf_counter()
        exec_id = api.exec_create(cid, ["true"])["Id"]
        api.exec_start(exec_id)
        api.exec_inspect(exec_id)
        return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pace", type=float, default=0.1, help="seconds between exec probes")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    api = docker.APIClient(timeout=120)
    project = f"bench-{secrets.token_hex(4)}"
    cases = {"alone": None, "exec probes beside": args.pace}
    starts: dict[str, list[float]] = {}
    try:
        bench = Bench(api, project)
        # Interleaved round by round, so a change in the machine's load hits every case alike.
        for _ in range(args.rounds):
            for networks in (1, 2):
                for case, pace in cases.items():
                    key = f"{networks} network{'s' if networks > 1 else ''}, {case}"
                    starts.setdefault(key, []).append(bench.start_time(networks, pace))
        idle = bench.create(1)
        api.start(idle)
        execs = [bench.exec_once(api, idle) for _ in range(10)]
    finally:
        remove_by_label(api, f"{LABEL}={project}")
    print(f"{'start of a created stand-in':40} median [min-max] s")
    for key, values in starts.items():
        print(f"{key:40} {statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]")
    print(f"{'one exec (create+start+inspect)':40} {statistics.median(execs):.3f}")
    data: dict[str, Any] = {
        "args": vars(args) | {"json": str(args.json)},
        "starts_s": starts,
        "start_medians_s": {k: statistics.median(v) for k, v in starts.items()},
        "exec_s": execs,
        "exec_median_s": statistics.median(execs),
        "machine": machine(api),
    }
    write_results(data, args.json, REPO_ROOT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
