"""Running the project's own scripts as Hydra multiruns from a comparison driver
(:mod:`darts.found_vs_random`, :mod:`darts.pareto`): each job gets its run directory, resolved
config, checkpoint and TensorBoard events as any other run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_sweep(script: str, overrides: list[str]) -> None:
    """One multirun of ``script``; a failed sweep stops the comparison with its exit status."""
    command = [sys.executable, str(REPO_ROOT / script), "-m", *overrides]
    print("+", " ".join(command), flush=True)
    status = subprocess.run(command, cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT))).returncode
    if status != 0:
        raise SystemExit(f"error: {script} exited {status}; the runs so far are in their directories")


def job_directories(sweep_dir: Path, count: int) -> list[str]:
    """The run directories of a sweep's ``count`` jobs: Hydra numbers them in the order of the swept values."""
    return [str(sweep_dir / str(job)) for job in range(count)]
