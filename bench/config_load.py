"""Config load time: `load_stack` on config/production/supervisor.yaml (secrets generated).

    .venv/bin/python bench/config_load.py [--rounds 200]

Copies config/ to a temporary folder, generates its secret files as an operator would, then
times `load_stack` (what `check`, start and reload run) and reports the median and p95 per
load, wall clock and CPU (the CPU figure holds still on a shared machine). No Docker.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

try:
    from supervisor.stack_file import load_stack
except ImportError:  # a tree from before the config/compose split, for the "before" figure
    from supervisor.compose import load_stack  # type: ignore[attr-defined,no-redef]

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "config"
        shutil.copytree(REPO / "config", folder, ignore=shutil.ignore_patterns("secrets"))
        subprocess.run(
            [str(folder / "production" / "generate-secrets"), str(folder / "production")],
            env={"PATH": "/usr/bin:/bin", "OIDC_CLIENT_SECRET": "from-the-idp"},
            capture_output=True,
            check=True,
        )
        config = folder / "production" / "supervisor.yaml"
        load_stack(config)  # warm: imports, page cache
        wall: list[float] = []
        cpu: list[float] = []
        for _ in range(args.rounds):
            start, start_cpu = time.perf_counter(), time.process_time()
            load_stack(config)
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    print(f"load_stack(config/production/supervisor.yaml), {args.rounds} loads:")
    for name, times in (("wall", wall), ("cpu", cpu)):
        times.sort()
        p95 = times[int(len(times) * 0.95) - 1]
        print(f"  {name}: median {statistics.median(times) * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms")


if __name__ == "__main__":
    main()
