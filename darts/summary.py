"""Print what a search and a final training produced: ``python -m darts.summary SEARCH_DIR FINAL_DIR``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from darts.machine import machine_description, machine_line
from darts.tracking import format_seconds


def _results(run_dir: Path) -> dict:
    path = run_dir / "results.json"
    if not path.is_file():
        raise SystemExit(f"error: {path} is missing: did that run finish?")
    return json.loads(path.read_text())


def search_images_per_s(search_dir: Path, search: dict) -> float | None:
    """Weight-split images the search trained on per second of its wall time (its evaluations and
    alpha steps included), from the run's saved config; None without it."""
    config = search_dir / ".hydra" / "config.yaml"
    if not config.is_file() or not search.get("wall_time_s"):
        return None
    batch = OmegaConf.load(config).search.batch_size
    return search["epochs_run"] * search["steps_per_epoch"] * batch / search["wall_time_s"]


def peak_memory(results: dict) -> str:
    """'812 MB (process resident set)', '1,204 MB (GPU, allocated)', or '—' for a run that predates the record."""
    peak = results.get("peak_memory_mb")
    if peak is None:
        return "—"
    where = "GPU, allocated" if str(results.get("device", "")).startswith("cuda") else "process resident set"
    return f"{peak:,.0f} MB ({where})"


def summarise(search_dir: Path, final_dir: Path) -> str:
    search, final = _results(search_dir), _results(final_dir)
    rate = search_images_per_s(search_dir, search)
    # The machine the runs recorded (an older run without one: this machine, now).
    machine = search.get("machine") or machine_description()
    lines = [
        "== demo summary ==",
        f"machine:              {machine_line(machine)}",
        f"genotype:             {search['genotype_string']}",
        f"search:               {format_seconds(search['wall_time_s'])} wall time "
        f"({search['wall_time_s']:.0f} s), {search['epochs_run']} epochs"
        + (f", {rate:.0f} weight images/s" if rate else "")
        + f", alpha-split accuracy {search.get('alpha_eval_acc') or 0:.2f} %",
        f"final training:       {format_seconds(final['wall_time_s'])} wall time ({final['wall_time_s']:.0f} s), "
        f"{final['epochs']} epochs, {final['images_per_s']:.0f} images/s",
        f"test accuracy:        top-1 {final['test_top1']:.2f} %, top-5 {final['test_top5']:.2f} %",
        f"parameters:           {final['params_m']:.3f} M (without the auxiliary head), "
        f"{final['multiply_adds'] / 1e6:.1f} M multiply-adds",
        f"peak memory:          {peak_memory(search)} search, {peak_memory(final)} final training",
        f"total wall time:      {format_seconds(search['wall_time_s'] + final['wall_time_s'])}",
        f"run directories:      {search_dir}  {final_dir}",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python -m darts.summary SEARCH_DIR FINAL_DIR")
    print(summarise(Path(argv[0]), Path(argv[1])))


if __name__ == "__main__":
    main(sys.argv[1:])
