"""A Pareto sweep: searches over a cost weight or a budget, each found cell trained, then the
accuracy-against-cost table and plots.

    python -m darts.pareto --dir multirun/pareto/NAME [--sweep resource.weight=0,0.5,2] [OVERRIDE ...]

1. ``train_search.py -m experiment=EXPERIMENT SWEEP`` into ``DIR/search`` (one search per value;
   ``--sweep`` may name any override list Hydra sweeps, e.g. ``resource.max_params=1e5,2e5``);
2. ``train_final.py -m experiment=EXPERIMENT genotype=DIR/search/0,...`` into ``DIR/final``, every
   found cell with the same final-training settings and seed;
3. :mod:`darts.report` on ``DIR``: the table (test top-1, params, MACs, latency of each trained
   network, labelled by its search's setting, with the Pareto fronts it is on) and ``pareto_*.png``.

``make pareto`` runs it with the defaults (experiment=pareto_fashion_mnist); extra ``OVERRIDE``s
go to both scripts (smoke runs: ``dataset=synthetic search.epochs=1 ...``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from darts.report import write_report
from darts.sweep import search_then_train


def sweep_size(sweep: str) -> int:
    """How many jobs a Hydra sweep override makes (``key=a,b,c``: 3)."""
    key, equals, values = sweep.partition("=")
    if not equals or not key or not values:
        raise SystemExit(f"error: --sweep needs KEY=V1,V2,..., got {sweep!r}")
    return len(values.split(","))


def main(argv: list[str]) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", required=True, type=Path, help="the sweep's directory")
    parser.add_argument("--sweep", default="resource.weight=0,0.5,2", help="the swept override (KEY=V1,V2,...)")
    parser.add_argument("--experiment", default="pareto_fashion_mnist")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both scripts")
    args = parser.parse_args(argv)
    count = sweep_size(args.sweep)
    root = args.dir.resolve()
    common = [f"experiment={args.experiment}", *args.overrides]
    search_then_train(root, common, [args.sweep], count)
    md_path, _ = write_report(root)
    print(md_path.read_text())
    return md_path


if __name__ == "__main__":
    main(sys.argv[1:])
