"""Plain random sampling: selection, seeded distinct draws, resume (between and inside candidates),
the held-out split, bad input."""
import os
import signal

import pytest
import torch

from darts.checkpoint import CHECKPOINT_NAME
from darts.data import DATASETS
from darts.errors import DartsError
from darts.preemption import Preempted
from darts.engine import run_search
from darts.engine.candidates import CandidateTraining
from darts.spaces import SPACES, DartsSpace, build_space
from darts.spaces.darts_cnn.genotype import Genotype
from helpers import compose_config, read_json, run_task


def sampling_config(*overrides):
    return compose_config("search", ["experiment=smoke", "strategy=random_sampling", "search.epochs=1",
                                     "dataset.num_train=32", "deterministic=true", "strategy.num_candidates=3",
                                     *overrides])


def without_timings(candidates):
    return [{k: v for k, v in record.items() if not k.endswith("time_s")} for record in candidates]


def scripted_accuracy_space(correct_counts, margins=None):
    """The darts space, but each network it builds answers its evaluation (eval mode) with scripted
    logits: the k-th network evaluated gets its first ``correct_counts[k]`` images right (class 0, the
    only label of a one-class dataset, by a logit margin ``margins[k]``, default 1) and the rest wrong
    (a second column wins by 1)."""
    counts = iter(zip(correct_counts, margins or [1.0] * len(correct_counts)))
    assigned = {}

    def scripted_logits(network, inputs, logits):
        if network.training:
            return None
        if network not in assigned:
            assigned[network] = next(counts)
        correct, margin = assigned[network]
        scripted = torch.zeros(logits.shape[0], 2, device=logits.device)
        scripted[:correct, 0] = margin
        scripted[correct:, 1] = 1.0
        return scripted

    class ScriptedAccuracySpace(DartsSpace):
        def build_network(self, genotype, train_cfg, num_classes, in_channels):
            network = super().build_network(genotype, train_cfg, num_classes, in_channels)
            network.register_forward_hook(scripted_logits)
            return network

    return ScriptedAccuracySpace


def test_the_genotype_is_the_first_best_candidate_by_validation_accuracy(tmp_path):
    # Scripted accuracies on the 16 alpha-split images: candidates 1 and 3 tie for the best
    # (12 of 16 right), so the earlier one (1) must win.
    run_dir = tmp_path / "run"
    with SPACES.temporarily("scripted", scripted_accuracy_space([4, 12, 8, 12])):
        results = run_search(sampling_config("strategy.num_candidates=4", "space.name=scripted",
                                             "dataset.num_classes=1"), run_dir)

    candidates = results["candidates"]
    assert [record["val_acc"] for record in candidates] == [25.0, 75.0, 50.0, 75.0]
    assert results["best_candidate"] == 1 and results["alpha_eval_acc"] == 75.0
    assert results["genotype"] == candidates[1]["genotype"]
    space = build_space(sampling_config().space)
    assert space.parse_genotype((run_dir / "genotype.json").read_text()) == Genotype.from_dict(candidates[1]["genotype"])
    assert all(record["params_m"] > 0 for record in candidates)
    assert sorted(p.name for p in (run_dir / "genotypes").iterdir()) == [f"candidate_{i:03d}.json" for i in range(4)]
    assert read_json(run_dir / "genotypes" / "candidate_002.json")["val_acc"] == 50.0
    assert (run_dir / "config_resolved.yaml").is_file() and any((run_dir / "tb").glob("events.out.tfevents*"))


@pytest.mark.parametrize("metric, winner", [("accuracy", 0), ("loss", 1)])
def test_the_selection_metric_decides_between_more_right_and_more_confident(tmp_path, metric, winner):
    # Candidate 0: 12 of 16 right by a hair (mean loss 0.85); candidate 1: 8 right with confidence (0.66).
    with SPACES.temporarily("scripted", scripted_accuracy_space([12, 8], margins=[0.01, 10.0])):
        results = run_search(sampling_config("strategy.num_candidates=2", "space.name=scripted",
                                             "dataset.num_classes=1", f"selection.metric={metric}"), tmp_path / "run")
    losses = [record["val_loss"] for record in results["candidates"]]
    assert [record["val_acc"] for record in results["candidates"]] == [75.0, 50.0] and losses[0] > losses[1]
    assert results["best_candidate"] == winner


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


def counting(trained, stop_at_epoch=None, signal_at_step=None):
    """A CandidateTraining that records the run epochs it starts (and the steps it takes), raises
    Interrupted as epoch ``stop_at_epoch`` starts, or sends SIGTERM during its ``signal_at_step``-th step."""
    steps = []

    class Counting(CandidateTraining):
        def start_epoch(self, epoch):
            if epoch == stop_at_epoch:
                raise Interrupted
            trained.append(epoch)
            return super().start_epoch(epoch)

        def train_step(self, batch, epoch):
            steps.append(epoch)
            if len(steps) == signal_at_step:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().train_step(batch, epoch)

    return Counting, steps


def test_resume_after_an_interruption_trains_only_the_unfinished_candidates(tmp_path):
    full = run_search(sampling_config(), tmp_path / "full")

    # One epoch a candidate: run epoch k is candidate k. Killed right after the checkpoint of its
    # second candidate, as the third starts.
    trained = []
    dies, _ = counting(trained, stop_at_epoch=2)
    with pytest.raises(Interrupted):
        run_task(sampling_config(), tmp_path / "cut", dies)
    assert trained == [0, 1]
    assert (tmp_path / "cut" / CHECKPOINT_NAME).is_file() and not (tmp_path / "cut" / "results.json").exists()

    with pytest.raises(DartsError, match="splits the data differently"):
        run_search(sampling_config("resume=true", "search.train_portion=0.75"), tmp_path / "cut")
    trained.clear()
    resumed = run_task(sampling_config("resume=true"), tmp_path / "cut", counting(trained)[0])
    assert trained == [2], "a resumed run trains only the candidates it had not finished"
    assert without_timings(resumed["candidates"]) == without_timings(full["candidates"])
    assert resumed["genotype"] == full["genotype"]


def test_a_stop_signal_inside_a_candidate_resumes_inside_it(tmp_path):
    # Two candidates of two epochs of two steps: run epochs 0-1 are candidate 0, 2-3 candidate 1.
    options = ("strategy.num_candidates=2", "strategy.train.epochs=2", "dataset.num_train=64")
    full = run_search(sampling_config(*options), tmp_path / "full")

    trained = []
    signalling, steps = counting(trained, signal_at_step=5)     # candidate 1's first step
    with pytest.raises(Preempted, match="SIGTERM at epoch 2 step 1"):
        run_task(sampling_config(*options), tmp_path / "cut", signalling)
    state = torch.load(tmp_path / "cut" / CHECKPOINT_NAME, weights_only=False)
    assert state["epoch"] == 1 and (state["interrupted"]["epoch"], state["interrupted"]["step"]) == (2, 1)
    assert len(state["task"]["candidates"]) == 1       # candidate 0 finished, candidate 1 in training

    trained.clear()
    counted, steps = counting(trained)
    resumed = run_task(sampling_config(*options, "resume=auto"), tmp_path / "cut", counted)
    assert trained == [2, 3] and steps == [2, 3, 3], "the resumed run goes on from candidate 1's second step"
    assert without_timings(resumed["candidates"]) == without_timings(full["candidates"])
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    assert resumed["genotype"] == full["genotype"]


def test_the_test_split_is_never_loaded(tmp_path):
    loaded = []

    def recording(cfg, split, view):
        loaded.append(split)
        return DATASETS.get("synthetic")(cfg, split, view)

    with DATASETS.temporarily("recording", recording):
        results = run_search(sampling_config("strategy.num_candidates=1", "dataset.name=recording"), tmp_path / "run")
    assert loaded == ["train"]
    assert not [key for key in results if "test" in key]


@pytest.mark.parametrize("overrides, message", [
    (["strategy.num_candidates=0"], "strategy.num_candidates must be a positive integer"),
    (["strategy.train.network=nb201"], "cannot train genotypes of the darts space; valid choices: auto, cifar"),
    (["strategy.train.network=resnet"], "strategy.train.network.*'resnet'.*valid choices"),
    (["space.primitives=[none]"], "needs an op other than 'none'"),
    (["space=nb201", "space.N=1", "space.primitives=[skip_connect]"], "too small for strategy.num_candidates=3"),
    (["space=nb201", "space.N=1", "strategy.train.auxiliary=true"],
     "strategy.train: the nb201 network has no auxiliary"),
])
def test_bad_configuration_raises_a_readable_error(tmp_path, overrides, message):
    with pytest.raises(DartsError, match=message):
        run_search(sampling_config(*overrides), tmp_path / "run")
    assert not (tmp_path / "run" / "results.json").exists()
