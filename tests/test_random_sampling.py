"""Plain random sampling: selection, seeded distinct draws, resume, the held-out split, bad input."""
import pytest

import darts.data
from darts.checkpoint import CHECKPOINT_NAME
from darts.errors import DartsError
from darts.genotypes import genotype_from_dict, parse_genotype
from darts.search import run_search
from darts.strategies import random_sampling
from darts.strategies.random_sampling import RandomSamplingRun
from helpers import compose_config, read_json


def sampling_config(*overrides):
    return compose_config("search", ["experiment=smoke", "strategy=random_sampling", "search.epochs=1",
                                     "dataset.num_train=32", "deterministic=true", "strategy.num_candidates=3",
                                     *overrides])


def without_timings(candidates):
    return [{k: v for k, v in record.items() if not k.endswith("time_s")} for record in candidates]


def test_the_genotype_is_the_first_best_candidate_by_validation_accuracy(tmp_path, monkeypatch):
    # Scripted accuracies: candidates 1 and 3 tie for the best, so the earlier one (1) must win.
    accuracies = iter([40.0, 75.0, 50.0, 75.0])
    real_evaluate = random_sampling.evaluate

    def scripted_evaluate(*args, **kwargs):
        return {**real_evaluate(*args, **kwargs), "top1": next(accuracies)}

    monkeypatch.setattr(random_sampling, "evaluate", scripted_evaluate)
    run_dir = tmp_path / "run"
    results = run_search(sampling_config("strategy.num_candidates=4"), run_dir)

    candidates = results["candidates"]
    assert [record["val_acc"] for record in candidates] == [40.0, 75.0, 50.0, 75.0]
    assert results["best_candidate"] == 1 and results["alpha_eval_acc"] == 75.0
    assert results["genotype"] == candidates[1]["genotype"]
    assert parse_genotype((run_dir / "genotype.json").read_text()) == genotype_from_dict(candidates[1]["genotype"])
    assert all(record["params_m"] > 0 for record in candidates)
    assert sorted(p.name for p in (run_dir / "genotypes").iterdir()) == [f"candidate_{i:03d}.json" for i in range(4)]
    assert read_json(run_dir / "genotypes" / "candidate_002.json")["val_acc"] == 50.0
    assert (run_dir / "config_resolved.yaml").is_file() and any((run_dir / "tb").glob("events.out.tfevents*"))


def test_candidates_are_distinct_draws_reproducible_from_the_seed(tmp_path):
    first = run_search(sampling_config(), tmp_path / "first")
    again = run_search(sampling_config(), tmp_path / "again")
    other_seed = run_search(sampling_config("seed=1"), tmp_path / "other")

    strings = [record["genotype_string"] for record in first["candidates"]]
    assert len(set(strings)) == len(strings) == 3
    assert without_timings(again["candidates"]) == without_timings(first["candidates"])
    assert [record["genotype_string"] for record in other_seed["candidates"]] != strings


class Interrupted(Exception):
    pass


def test_resume_after_an_interruption_ends_like_an_uninterrupted_run(tmp_path, monkeypatch):
    full = run_search(sampling_config(), tmp_path / "full")

    # Kill a second run right after the checkpoint of its second candidate.
    original_end = RandomSamplingRun.end_of_candidate

    def end_then_die(self, record):
        original_end(self, record)
        if record["candidate"] == 1:
            raise Interrupted

    monkeypatch.setattr(RandomSamplingRun, "end_of_candidate", end_then_die)
    with pytest.raises(Interrupted):
        run_search(sampling_config(), tmp_path / "cut")
    monkeypatch.setattr(RandomSamplingRun, "end_of_candidate", original_end)
    assert (tmp_path / "cut" / CHECKPOINT_NAME).is_file() and not (tmp_path / "cut" / "results.json").exists()

    with pytest.raises(DartsError, match="splits the data differently"):
        run_search(sampling_config("resume=true", "search.train_portion=0.75"), tmp_path / "cut")
    trained = []
    original_train = RandomSamplingRun.train_candidate

    def counting_train(self, index, genotype):
        trained.append(index)
        return original_train(self, index, genotype)

    monkeypatch.setattr(RandomSamplingRun, "train_candidate", counting_train)
    resumed = run_search(sampling_config("resume=true"), tmp_path / "cut")
    assert trained == [2], "a resumed run trains only the candidates it had not finished"
    assert without_timings(resumed["candidates"]) == without_timings(full["candidates"])
    assert resumed["genotype"] == full["genotype"]


def test_the_test_split_is_never_loaded(tmp_path, monkeypatch):
    loaded = []
    real_load = darts.data._load

    def recording_load(cfg, split, *args, **kwargs):
        loaded.append(split)
        return real_load(cfg, split, *args, **kwargs)

    monkeypatch.setattr(darts.data, "_load", recording_load)
    results = run_search(sampling_config("strategy.num_candidates=1"), tmp_path / "run")
    assert loaded == ["train"]
    assert not [key for key in results if "test" in key]


@pytest.mark.parametrize("overrides, message", [
    (["strategy.num_candidates=0"], "strategy.num_candidates must be a positive integer"),
    (["strategy.train.network=nb201"], "cannot train genotypes of the darts space; valid choices: auto, cifar"),
    (["strategy.train.network=resnet"], "unknown strategy.train.network 'resnet'; valid choices"),
    (["space.primitives=[none]"], "needs an op other than 'none'"),
    (["space=nb201", "space.N=1", "space.primitives=[skip_connect]"], "too small for strategy.num_candidates=3"),
    (["space=nb201", "space.N=1", "strategy.train.auxiliary=true"],
     "strategy.train: the nb201 network has no auxiliary"),
])
def test_bad_configuration_raises_a_readable_error(tmp_path, overrides, message):
    with pytest.raises(DartsError, match=message):
        run_search(sampling_config(*overrides), tmp_path / "run")
    assert not (tmp_path / "run" / "results.json").exists()
