"""Run every step benchmark and write one table (markdown and JSON) naming the machine: ``make bench``.

    python bench/run_all.py --out outputs/bench/NAME [--original ~/src/darts/cnn] [--device cpu|cuda] [--steps N]
                            [any option of the scripts, e.g. --C 4 --layers 3 --threads 2]

Each benchmark runs in its own interpreter (so each peak-memory figure is its own process's):
the search step of both orders and the final training step, on the fast path and on the eager
float32 baseline, and, with ``--original`` (a checkout of the DARTS authors' ``cnn/`` folder), the
original code's search step of both orders in the same run. Writes ``bench.md`` and ``bench.json``
(the machine and every script's result) into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from darts.startup import choose_omp_wait_policy  # noqa: E402

if __name__ == "__main__":
    # Before torch loads: every benchmark inherits the OpenMP wait policy a run would choose (darts/startup.py).
    choose_omp_wait_policy()

import torch  # noqa: E402

from darts.machine import machine_description  # noqa: E402
from table import bench_table  # noqa: E402

BENCH = Path(__file__).resolve().parent


def planned_runs(args) -> list[list[str]]:
    """The command line of every benchmark, in the table's order."""
    timing = ["--device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup), "--json"]
    runs = []
    for order in (1, 2):
        search = ["search_step.py", "--order", str(order), "--batch", str(args.search_batch), *timing]
        if args.original:
            runs.append(["original_step.py", "--original", str(args.original), "--order", str(order),
                         "--batch", str(args.search_batch), *timing])
        runs += [search + ["--baseline"], search]
    final = ["final_step.py", "--batch", str(args.final_batch), *timing]
    runs += [final + ["--baseline"], final]
    return [[*run, *args.extra] for run in runs]


def run_one(command: list[str]) -> dict:
    """One benchmark's result (its last output line, JSON); SystemExit naming it if it failed."""
    print("+ bench/" + " ".join(command), flush=True)
    done = subprocess.run([sys.executable, str(BENCH / command[0]), *command[1:]], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: bench/{command[0]} failed:\n{done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, with the step counts of the device filled in; unknown ones in ``extra``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--original", type=Path, default=None, help="the original DARTS code's cnn/ folder")
    parser.add_argument("--device", default="cpu")
    # A CPU step takes seconds; a GPU step milliseconds, and its first steps compile (fast path).
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 4 on a CPU, 20 on a GPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 on a CPU, 3 on a GPU)")
    parser.add_argument("--search-batch", type=int, default=None,
                        help="default 32 on a CPU, the paper's 64 on a GPU")
    parser.add_argument("--final-batch", type=int, default=96)
    # Any other option goes to every script (--C 4 --layers 3 for a smoke run).
    args, args.extra = parser.parse_known_args(argv)
    on_gpu = torch.device(args.device).type == "cuda"
    args.steps = args.steps if args.steps is not None else (20 if on_gpu else 4)
    args.warmup = args.warmup if args.warmup is not None else (3 if on_gpu else 1)
    args.search_batch = args.search_batch if args.search_batch is not None else (64 if on_gpu else 32)
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse(argv)
    # Before the benchmarks: the load average then says whether another process shared the cores.
    machine = machine_description(torch.device(args.device))   # names the GPU on cuda
    results = [run_one(command) for command in planned_runs(args)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    table = bench_table(results, machine)
    (args.out / "bench.md").write_text(table)
    print(table)
    return args.out / "bench.md"


if __name__ == "__main__":
    main()
