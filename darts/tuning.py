"""One objective value per job, for hyperparameter sweepers (Hydra's Optuna sweeper).

A sweeper calls the script once per trial and reads the value its task function returns. With a
``tune`` node in the config (``tune.metric``: a key of results.json such as ``test_top1`` or
``alpha_eval_acc``; ``tune.seeds``: the seeds every trial runs), the job runs the search or the
final training once per seed, each a complete run of its own in ``JOB_DIR/seed_K`` (resumable,
with its results.json and TensorBoard events), and returns the mean of the metric over the seeds,
so that a trial is judged on several seeds, not on one lucky one. ``JOB_DIR/results.json`` records
every seed's value, their mean and standard deviation (``kind: tune``), which ``darts.report`` reads.
Without ``tune`` the script runs once, as always, and returns nothing.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Callable

from omegaconf import OmegaConf, open_dict

from darts.errors import DartsError
from darts.tracking import write_json

RunFunction = Callable[[object, Path], dict]


def check_tune(tune) -> tuple[str, list[int]]:
    metric, seeds = tune.get("metric"), list(tune.get("seeds") or [])
    if not isinstance(metric, str) or not metric:
        raise DartsError("tune.metric must name a results.json value, e.g. test_top1 (final) or alpha_eval_acc "
                         "(search)")
    if not seeds or not all(isinstance(seed, int) and not isinstance(seed, bool) for seed in seeds):
        raise DartsError(f"tune.seeds must be a non-empty list of integers, got {seeds!r}")
    return metric, seeds


def mean_of(results: list[dict], key: str) -> float | None:
    """The mean of ``key`` over runs that all report it as a number; None otherwise."""
    values = [r.get(key) for r in results]
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    return statistics.mean(values)


def run_tuned(cfg, run_dir: Path, run: RunFunction) -> float | None:
    """``run(cfg, run_dir)`` once without ``cfg.tune``; with it, once per seed, and the mean metric."""
    tune = cfg.get("tune")
    if not tune:
        run(cfg, run_dir)
        return None
    metric, seeds = check_tune(tune)
    values, runs, reported = [], [], []
    for seed in seeds:
        seed_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        with open_dict(seed_cfg):
            seed_cfg.seed = seed
        seed_dir = Path(run_dir) / f"seed_{seed}"
        results = run(seed_cfg, seed_dir)
        value = results.get(metric)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            known = ", ".join(key for key, v in results.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
            raise DartsError(f"tune.metric {metric!r} is not a number in {seed_dir}/results.json; numbers there: {known}")
        values.append(float(value))
        runs.append(str(seed_dir))
        reported.append(results)
    mean = statistics.mean(values)
    summary = {"kind": "tune", "metric": metric, "seeds": seeds, "values": values, "mean": mean,
               "std": statistics.stdev(values) if len(values) > 1 else 0.0, "runs": runs,
               "genotype_string": reported[0].get("genotype_string"),
               # Reported beside the objective, never what a sweeper sees (the test split chooses nothing).
               "test_top1_mean": mean_of(reported, "test_top1")}
    write_json(Path(run_dir) / "results.json", summary)
    return mean
