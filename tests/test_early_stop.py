"""Early stopping: each rule on constructed histories, against hand-worked epochs and an independent
replay of RobustDARTS's stateful tracker; end to end, a stopped search returns the named epoch's
genotype, resumes as stopped, and a search cut mid-way stops at the same epoch as an uninterrupted one."""
import math
import random

import pytest
from omegaconf import OmegaConf

from darts.early_stop import STOP_RULES, DartsES, DartsPlus, Plateau, build_stop_rule
from darts.engine import SEARCH_TASKS, Run, run_search
from darts.errors import DartsError
from darts.preemption import Preempted
from darts.strategies import build_strategy
from helpers import CONF_DIR, compose_config
from test_contracts import smoke_overrides, stopping_task


def history_of(**columns) -> list[dict]:
    """Records with ``epoch`` 0..n-1 and the given per-epoch values (None: key absent)."""
    length = len(next(iter(columns.values())))
    records = []
    for epoch in range(length):
        record = {"epoch": epoch, "genotype": f"g{epoch}"}
        record.update({key: values[epoch] for key, values in columns.items() if values[epoch] is not None})
        records.append(record)
    return records


def first_stop(rule, history: list[dict], epochs: int):
    """Replay a search: the rule sees each prefix of the history, as the engine calls it after each epoch."""
    for end in range(1, len(history) + 1):
        decision = rule.decide(history[:end], epochs)
        if decision:
            return decision
    return None


# -- plateau --------------------------------------------------------------------------------------------
def test_plateau_stops_after_patience_evaluations_without_improvement_and_returns_the_best_epoch():
    accuracy = [50.0, 60.0, 61.0, 60.5, 61.0, 60.0, 70.0]
    rule = Plateau(metric="accuracy", patience=3, min_delta=0.0)
    decision = first_stop(rule, history_of(alpha_eval_acc=accuracy), epochs=10)
    # Best 61.0 at epoch 2; epochs 3, 4 (61.0 is not better), 5 do not improve -> stop after epoch 5.
    assert (decision.epoch, decision.genotype_epoch) == (5, 2)
    assert Plateau(patience=3, restore_best=False).decide(history_of(alpha_eval_acc=accuracy[:6]), 10).genotype_epoch == 5


def test_plateau_min_delta_and_the_loss_metric():
    loss = [1.0, 0.9, 0.89, 0.88, 0.5]
    # With min_delta 0.05, 0.89 and 0.88 are not improvements on 0.9: stop after epoch 3 with patience 2.
    decision = first_stop(Plateau(metric="loss", patience=2, min_delta=0.05), history_of(alpha_eval_loss=loss), 10)
    assert (decision.epoch, decision.genotype_epoch) == (3, 1)
    assert first_stop(Plateau(metric="loss", patience=2), history_of(alpha_eval_loss=loss), 10) is None


def test_plateau_counts_evaluations_and_decides_only_at_an_evaluated_epoch():
    accuracy = [50.0, None, 40.0, None, 40.0, None]
    decision = first_stop(Plateau(patience=2), history_of(alpha_eval_acc=accuracy), epochs=10)
    assert (decision.epoch, decision.genotype_epoch) == (4, 0)


# -- DARTS-ES -------------------------------------------------------------------------------------------
class AuthorsTracker:
    """RobustDARTS's EVLocalAvg + early_stop (src/utils.py) as the search script calls them: update at
    every sampled epoch, early_stop at every sampled epoch but the last. Stateful, as theirs is."""

    def __init__(self, window=5, freq=2, epochs=50):
        self.window, self.freq, self.epochs = window, freq, epochs
        self.ev, self.local_avg, self.la_epochs, self.start = [], [], {}, 0

    def update(self, epoch, ev):
        self.ev.append(ev)
        half_up = math.ceil(self.window / 2)
        if len(self.ev) >= half_up and epoch < self.epochs - 1:
            if len(self.ev) < self.window:
                self.local_avg.append(sum(self.ev) / len(self.ev))
            else:
                window = self.ev[self.start:self.start + self.window]
                self.local_avg.append(sum(window) / self.window)
                self.start += 1
            self.la_epochs[epoch] = epoch - self.freq * (self.window // 2)
        elif len(self.ev) < half_up:
            self.la_epochs[epoch] = -1

    def early_stop(self, epoch, factor=1.3, start_epoch=10, delta=4):
        if self.la_epochs[epoch] - self.freq * delta >= start_epoch:
            if self.local_avg[-1] / self.local_avg[-1 - delta] > factor:
                return self.la_epochs[epoch] - self.freq * delta
        return None


def authors_stop(eigenvalues: dict[int, float], epochs: int):
    tracker = AuthorsTracker(epochs=epochs)
    for epoch in sorted(eigenvalues):
        tracker.update(epoch, eigenvalues[epoch])
        if epoch != epochs - 1:
            stop = tracker.early_stop(epoch)
            if stop is not None:
                return epoch, stop
    return None


def eigen_history(eigenvalues: dict[int, float], epochs: int) -> list[dict]:
    return history_of(eigenvalue=[eigenvalues.get(epoch) for epoch in range(epochs)])


def test_darts_es_hand_worked_jump_stops_at_epoch_22_and_returns_epoch_10():
    # 1.0 at every sample up to epoch 20, then 3.0: at epoch 22 the local average of the last 5
    # samples is (4 * 1 + 3) / 5 = 1.4, four averages earlier it was 1.0: 1.4 > 1.3.
    eigenvalues = {epoch: (1.0 if epoch <= 20 else 3.0) for epoch in range(0, 50, 2)}
    decision = first_stop(DartsES(), eigen_history(eigenvalues, 50), 50)
    assert (decision.epoch, decision.genotype_epoch) == (22, 10)


def test_darts_es_not_before_its_threshold():
    # A jump to 1.2: the local average rises by at most 1.2x, never above 1.3: no stop.
    eigenvalues = {epoch: (1.0 if epoch <= 20 else 1.2) for epoch in range(0, 50, 2)}
    assert first_stop(DartsES(), eigen_history(eigenvalues, 50), 50) is None
    # A jump before the earliest test (epoch 22) is not caught before epoch 22 either.
    early = {epoch: (1.0 if epoch <= 4 else 5.0) for epoch in range(0, 50, 2)}
    decision = first_stop(DartsES(), eigen_history(early, 50), 50)
    assert decision is None or decision.epoch >= 22


@pytest.mark.parametrize("seed", range(20))
def test_darts_es_equals_the_authors_tracker_on_random_trajectories(seed):
    rng = random.Random(seed)
    epochs = 50
    eigenvalues, value = {}, 0.1
    for epoch in list(range(0, epochs, 2)) + [epochs - 1]:
        # Drifts that stop in 6 of the 20 seeds, at epochs from 22 to 48, and run out in the rest.
        value *= math.exp(rng.uniform(-0.15, 0.17))
        eigenvalues[epoch] = value
    expected = authors_stop(eigenvalues, epochs)
    decision = first_stop(DartsES(), eigen_history(eigenvalues, epochs), epochs)
    assert (None if decision is None else (decision.epoch, decision.genotype_epoch)) == expected


def test_darts_es_ignores_samples_off_its_interval():
    eigenvalues = {epoch: (1.0 if epoch <= 20 else 3.0) for epoch in range(50)}   # measured every epoch
    decision = first_stop(DartsES(interval=2), eigen_history(eigenvalues, 50), 50)
    assert (decision.epoch, decision.genotype_epoch) == (22, 10)


# -- DARTS+ ---------------------------------------------------------------------------------------------
def test_darts_plus_stops_at_two_skip_connections_with_that_epochs_genotype():
    skips = [0, 1, 1, 2, 3]
    ranking = ["a", "b", "c", "d", "e"]
    decision = first_stop(DartsPlus(), history_of(normal_skip_connects=skips, alpha_ranking=ranking), 50)
    assert (decision.epoch, decision.genotype_epoch) == (3, 3)


def test_darts_plus_stops_when_the_ranking_is_stable_for_the_set_epochs():
    ranking = ["a", "b"] + ["c"] * 11
    history = history_of(normal_skip_connects=[0] * 13, alpha_ranking=ranking)
    # "c" from epoch 2: unchanged over 10 epochs at epoch 12.
    decision = first_stop(DartsPlus(max_skip_connects=None, stable_epochs=10), history, 50)
    assert (decision.epoch, decision.genotype_epoch) == (12, 12)
    assert first_stop(DartsPlus(max_skip_connects=None, stable_epochs=10), history[:12], 50) is None


def test_every_rule_config_builds_and_bad_options_are_readable():
    for name in STOP_RULES.names():
        cfg = OmegaConf.load(CONF_DIR / "early_stop" / f"{name}.yaml")
        resolved = OmegaConf.merge(OmegaConf.create({"selection": {"metric": "accuracy"}}), {"rule": cfg})
        rule = build_stop_rule(resolved.rule)
        assert rule.decide([{"epoch": 0, "genotype": "g", "normal_skip_connects": 0, "alpha_ranking": "x"}], 50) is None
    with pytest.raises(DartsError, match="valid choices: accuracy, loss"):
        Plateau(metric="top5")
    with pytest.raises(DartsError, match="bad option"):
        build_stop_rule(OmegaConf.create({"name": "plateau", "patiense": 3}))
    with pytest.raises(DartsError, match="valid choices"):
        build_stop_rule(OmegaConf.create({"name": "never"}))


# -- end to end -----------------------------------------------------------------------------------------
# Plateau with an unreachable min_delta: best at epoch 0, stop after epoch 2 of 5, genotype of epoch 0.
STOPPING = ["early_stop=plateau", "early_stop.patience=2", "early_stop.min_delta=1000", "search.epochs=5"]


def test_a_stopped_search_returns_the_named_epochs_genotype_resumes_as_stopped_and_resumes_to_the_same_stop(tmp_path):
    overrides = [*smoke_overrides("darts", "darts"), *STOPPING]
    cfg = compose_config("search", overrides)
    full = run_search(cfg, tmp_path / "full")
    assert (full["stopped_epoch"], full["epochs_run"], full["genotype_epoch"]) == (2, 3, 0)
    assert "has not improved" in full["stop_reason"]
    assert full["genotype_string"] == full["history"][0]["genotype"]
    assert full["history"][-1]["stop"]["genotype_epoch"] == 0

    # Resuming the finished, stopped run trains nothing more and reports the same.
    again = run_search(compose_config("search", [*overrides, "resume=true"]), tmp_path / "full")
    assert (again["epochs_run"], again["genotype_string"], again["stopped_epoch"]) == (3, full["genotype_string"], 2)
    assert [h["loss"] for h in again["history"]] == [h["loss"] for h in full["history"]]

    # Cut by a signal in epoch 1, then resumed: stops after the same epoch with the same result.
    strategy = build_strategy(cfg.strategy)
    task_class = stopping_task(SEARCH_TASKS.get(strategy.trains), stop_epoch=1, stop_after_steps=1)
    with pytest.raises(Preempted):
        Run(cfg, tmp_path / "cut", lambda run_cfg, context: task_class(run_cfg, context, strategy)).run()
    resumed = run_search(compose_config("search", [*overrides, "resume=true"]), tmp_path / "cut")
    assert (resumed["stopped_epoch"], resumed["genotype_string"]) == (full["stopped_epoch"], full["genotype_string"])
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    assert (tmp_path / "full" / "diagnostics.png").is_file() and (tmp_path / "full" / "best.pt").is_file()


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_the_published_rules_run_in_both_spaces(space, tmp_path):
    # darts_es measures at its interval (epochs 0, 2) and the last (3), and cannot stop this early.
    es = run_search(compose_config("search", [*smoke_overrides("darts", space), "search.epochs=4",
                                              "early_stop=darts_es"]), tmp_path / "es")
    assert [h["epoch"] for h in es["history"] if "eigenvalue" in h] == [0, 2, 3]
    assert es["stopped_epoch"] is None and es["epochs_run"] == 4
    # darts_plus with a cap of 0 skip connections stops after the first epoch, with its genotype.
    plus = run_search(compose_config("search", [*smoke_overrides("darts", space), "search.epochs=4",
                                                "early_stop=darts_plus", "early_stop.max_skip_connects=0"]),
                      tmp_path / "plus")
    assert (plus["stopped_epoch"], plus["genotype_epoch"], plus["epochs_run"]) == (0, 0, 1)
    assert plus["genotype_string"] == plus["history"][0]["genotype"]
