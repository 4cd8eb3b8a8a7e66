"""Tuning: a job's objective over several seeds (darts/tuning.py), the validation hold-out it selects
on, and the Optuna example preset end to end at smoke size."""
import json
import statistics

import pytest
import torch
from omegaconf import OmegaConf

from darts.data import build_train_data
from darts.errors import DartsError
from darts.tuning import run_tuned
from helpers import compose_config, read_json, run_script

SMOKE = ["dataset=synthetic", "dataset.num_train=64", "dataset.num_test=32", "train.C=4", "train.layers=3",
         "train.batch_size=16", "train.max_steps_per_epoch=2", "train.eval_batch_size=32"]


def test_the_objective_is_the_mean_over_the_seeds_each_run_in_its_own_directory(tmp_path):
    cfg = OmegaConf.create({"seed": 9, "tune": {"metric": "score", "seeds": [3, 5]}})
    calls = []

    def run(seed_cfg, run_dir):
        calls.append((seed_cfg.seed, run_dir))
        return {"score": 10.0 * seed_cfg.seed, "name": "x", "test_top1": 80.0 + seed_cfg.seed}

    assert run_tuned(cfg, tmp_path, run) == 40.0
    assert calls == [(3, tmp_path / "seed_3"), (5, tmp_path / "seed_5")]
    summary = read_json(tmp_path / "results.json")
    assert summary["kind"] == "tune" and summary["values"] == [30.0, 50.0]
    assert summary["std"] == pytest.approx(statistics.stdev([30.0, 50.0]))
    assert summary["test_top1_mean"] == 84.0   # reported beside the objective
    assert run_tuned(OmegaConf.create({"seed": 0, "tune": None}), tmp_path / "once", lambda c, d: {}) is None


@pytest.mark.parametrize("tune, message", [({"metric": "", "seeds": [0]}, "tune.metric"),
                                           ({"metric": "score", "seeds": []}, "tune.seeds"),
                                           ({"metric": "nope", "seeds": [0]}, "'nope' is not a number")])
def test_a_bad_tune_node_is_one_clear_error(tmp_path, tune, message):
    cfg = OmegaConf.create({"seed": 0, "tune": tune})
    with pytest.raises(DartsError, match=message):
        run_tuned(cfg, tmp_path, lambda c, d: {"score": 1.0})


def test_valid_portion_holds_out_a_seeded_part_of_the_training_split():
    cfg = compose_config("final", ["dataset=synthetic", "dataset.num_train=100"]).dataset
    data = build_train_data(cfg, 10, seed=0, device="cpu", valid_portion=0.2)
    again = build_train_data(cfg, 10, seed=0, device="cpu", valid_portion=0.2)
    assert len(data.valid_indices) == 20 and torch.equal(data.valid_indices, again.valid_indices)
    assert sum(len(y) for _, y in data.valid_batches.epoch(0)) == 20
    trained = sum(len(y) for _, y in data.train_batches.epoch(0))
    assert trained == 80   # 8 full batches of the 80 kept images
    assert build_train_data(cfg, 10, seed=0, device="cpu").valid_batches is None


def test_optuna_example_runs_two_trials_and_the_report_reads_their_objectives(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_script("train_final.py", "-m", "experiment=optuna_final", *SMOKE, "hydra.sweeper.n_trials=2",
                        "tune.seeds=[0,1]", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stdout + result.stderr
    trials = [read_json(sweep / str(job) / "results.json") for job in range(2)]
    for trial in trials:
        seeds = [read_json(f"{run}/results.json") for run in trial["runs"]]
        assert [r["seed"] for r in seeds] == [0, 1] and all(r["test_top1"] is not None for r in seeds)
        assert trial["mean"] == pytest.approx(statistics.mean(r["valid_top1"] for r in seeds))
    best = json.loads(json.dumps(OmegaConf.to_container(OmegaConf.load(sweep / "optimization_results.yaml"))))
    assert best["best_value"] == pytest.approx(max(trial["mean"] for trial in trials))
    from darts.report import write_report
    md_path, _ = write_report(sweep)
    assert "valid_top1" in md_path.read_text() and "(test_top1 " in md_path.read_text()
