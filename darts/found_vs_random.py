"""Found cells against random cells of the same space, at the same final-training budget.

    python -m darts.found_vs_random --dir multirun/found_vs_random/NAME [--seeds 0,1,2] [--random 5] [OVERRIDE ...]

Runs, each as a Hydra multirun of the project's own scripts (so every run has its run directory,
resolved config, checkpoint and TensorBoard events as any other):

1. ``train_search.py -m experiment=found_vs_random seed=SEEDS`` into ``DIR/search``;
2. ``train_final.py -m experiment=found_vs_random genotype=DIR/search/0,...,random:0,...`` into
   ``DIR/final``: the found cells and ``--random`` cells drawn uniformly from the same space
   (``genotype=random:K``), every one with the same final-training settings and seed;
3. :mod:`darts.report` on ``DIR``: a row for the searched cells and one for the random ones, and
   ``report.png``.

Extra ``OVERRIDE``s go to both scripts (smoke runs: ``dataset=synthetic search.epochs=1 ...``).
``make found-vs-random`` runs it with the defaults.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from darts.report import write_report
from darts.sweep import search_then_train


def main(argv: list[str]) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", required=True, type=Path, help="the comparison's sweep directory")
    parser.add_argument("--seeds", default="0,1,2", help="search seeds, comma-separated")
    parser.add_argument("--random", type=int, default=5, help="random cells to train")
    parser.add_argument("--experiment", default="found_vs_random")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both scripts")
    args = parser.parse_args(argv)
    seeds = [seed.strip() for seed in args.seeds.split(",") if seed.strip()]
    if not seeds or not all(seed.isdigit() for seed in seeds) or args.random < 0:
        raise SystemExit("error: --seeds needs integers like 0,1,2 and --random a count >= 0")
    root = args.dir.resolve()
    common = [f"experiment={args.experiment}", *args.overrides]
    search_then_train(root, common, [f"seed={','.join(seeds)}"], len(seeds), [f"random:{k}" for k in range(args.random)])
    md_path, _ = write_report(root)
    print(md_path.read_text())
    return md_path


if __name__ == "__main__":
    main(sys.argv[1:])
