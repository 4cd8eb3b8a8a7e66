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


def search_then_train(root: Path, common: list[str], search_sweep: list[str], jobs: int,
                      other_genotypes: list[str] = ()) -> None:
    """A search multirun (``common`` + ``search_sweep``, ``jobs`` jobs) into ``root/search``, then one
    final-training multirun into ``root/final`` of every cell it found and ``other_genotypes``, all
    with the same ``common`` overrides."""
    run_sweep("train_search.py", [*common, *search_sweep, f"hydra.sweep.dir={root / 'search'}"])
    # Hydra numbers a sweep's jobs in the order of its values: job i ran with value i.
    genotypes = [str(root / "search" / str(job)) for job in range(jobs)] + list(other_genotypes)
    run_sweep("train_final.py", [*common, f"genotype={','.join(genotypes)}", f"hydra.sweep.dir={root / 'final'}"])
