"""The chaos soak's CI variant: 60 random faults (fixed seed) on a private engine, every
invariant checked after each settle (bench/soak.py; the long run is 1,000 faults)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SEED = 11
FAULTS = 60

pytestmark = pytest.mark.docker


@pytest.mark.timeout(330)
def test_sixty_random_faults_break_no_invariant(stand_in_image: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "bench" / "soak.py"),
            "--faults",
            str(FAULTS),
            "--seed",
            str(SEED),
            "--settle-timeout",
            "60",
            "--json",
            str(tmp_path / "soak.json"),
        ],
        capture_output=True,
        text=True,
        timeout=320,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert f"survived {FAULTS}/{FAULTS}" in output, output[-3000:]
