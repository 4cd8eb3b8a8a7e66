"""Final training's lr schedule with AutoDL-Projects' linear warm-up (train.schedule.warmup_epochs): the
lr of every step against their get_lr worked by hand, warmup_epochs=0 exactly torch's schedulers as
before, and a run cut inside the warm-up and again at its boundary that resumes to the uninterrupted end."""
import math
import signal

import pytest
import torch
from omegaconf import OmegaConf

from darts import export
from darts.engine import run_final
from darts.engine.final import FinalTraining
from darts.engine.training import WarmupSchedule, build_schedule
from darts.errors import DartsError
from darts.preemption import Preempted
from helpers import compose_config, run_task

BASE_LR, LR_MIN = 0.1, 0.001


def sgd(lr=BASE_LR):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)


def lr_per_step(schedule, optimizer, epochs, steps, warmup):
    """The lr each step runs with, stepped as final training steps it (warm_up before each step of a
    warm-up epoch, step() at each epoch's end)."""
    seen = []
    for epoch in range(epochs):
        for step in range(steps):
            if epoch < warmup:
                schedule.warm_up(epoch, step, steps)
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()   # no gradients: changes nothing, keeps torch's order check quiet
        schedule.step()
    return seen


def test_warmup_then_cosine_as_autodl_computes_it():
    # 6 epochs of 4 steps, 2 warm-up: lr = (e / 2 + (i / 4) / 2) * 0.1 in epochs 0-1; then their cosine with
    # T_max = 6 - 2 = 4 from epoch 2 (last_epoch = e - 2) while e < 4, and eta_min from epoch 4 on (their
    # `current_epoch >= max_epochs` branch, max_epochs = their `epochs` = 4).
    optimizer = sgd()
    schedule = build_schedule(optimizer, OmegaConf.create(dict(name="cosine", lr_min=LR_MIN, warmup_epochs=2)), 6,
                              warms_up_per_step=True)
    assert isinstance(schedule, WarmupSchedule)
    warmup = [0.0, 0.0125, 0.025, 0.0375, 0.05, 0.0625, 0.075, 0.0875]
    cosine = [0.1] * 4 + [LR_MIN + (BASE_LR - LR_MIN) * (1 + math.cos(math.pi / 4)) / 2] * 4
    expected = warmup + cosine + [LR_MIN] * 8
    assert lr_per_step(schedule, optimizer, 6, 4, 2) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_warmup_then_exponential_as_autodl_computes_it():
    optimizer = sgd()
    schedule = build_schedule(optimizer, OmegaConf.create(dict(name="exponential", gamma=0.5, warmup_epochs=1)), 4,
                              warms_up_per_step=True)
    # Epoch 0: (i / 2) * 0.1; then 0.1 * 0.5 ** (e - 1), no cut-off (their ExponentialLR has none).
    assert lr_per_step(schedule, optimizer, 4, 2, 1) == pytest.approx([0.0, 0.05, 0.1, 0.1, 0.05, 0.05,
                                                                       0.025, 0.025], rel=1e-12)


@pytest.mark.parametrize("schedule_cfg, reference", [
    (dict(name="cosine", lr_min=LR_MIN, gamma=0.97), lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=7, eta_min=LR_MIN)),
    (dict(name="exponential", lr_min=LR_MIN, gamma=0.97), lambda opt: torch.optim.lr_scheduler.StepLR(
        opt, step_size=1, gamma=0.97)),
])
@pytest.mark.parametrize("warmup_key", [{}, {"warmup_epochs": 0}])
def test_no_warmup_is_torchs_scheduler_exactly_as_before(schedule_cfg, reference, warmup_key):
    optimizer, reference_optimizer = sgd(), sgd()
    schedule = build_schedule(optimizer, OmegaConf.create({**schedule_cfg, **warmup_key}), 7)
    expected = reference(reference_optimizer)
    assert type(schedule) is type(expected)
    seen, wanted = [], []
    for _ in range(7):
        seen.append(optimizer.param_groups[0]["lr"])
        wanted.append(reference_optimizer.param_groups[0]["lr"])
        optimizer.step(), reference_optimizer.step()
        schedule.step()
        expected.step()
    assert seen == wanted   # bit for bit


@pytest.mark.parametrize("warmup", [7, -1, 1.5, "two"])
def test_bad_warmup_is_one_readable_error(warmup):
    with pytest.raises(DartsError, match="warmup_epochs must be an integer from 0 to train.epochs - 1 = 6"):
        build_schedule(sgd(), OmegaConf.create(dict(name="cosine", lr_min=0.0, warmup_epochs=warmup)), 7,
                       warms_up_per_step=True)
    # A trainer that steps its schedule per epoch only (random sampling's candidates) refuses any warm-up.
    with pytest.raises(DartsError, match="steps its schedule once per epoch: set warmup_epochs: 0"):
        build_schedule(sgd(), OmegaConf.create(dict(name="cosine", lr_min=0.0, warmup_epochs=2)), 7)


# -- in final training ------------------------------------------------------------------------------
def final_config(epochs, warmup, steps, *overrides):
    return compose_config("final", ["experiment=smoke", "deterministic=true", f"train.epochs={epochs}",
                                    f"train.max_steps_per_epoch={steps}", "train.eval_every=0",
                                    f"train.schedule.warmup_epochs={warmup}", "train.schedule.lr_min=0.0",
                                    "train.optimizer.lr=0.1", *overrides])


def test_final_training_runs_each_step_at_the_warmup_lr(tmp_path):
    seen = []

    class RecordsLr(FinalTraining):
        def train_step(self, batch, epoch):
            metrics = super().train_step(batch, epoch)
            seen.append(self.optimizer.param_groups[0]["lr"])
            return metrics

    results = run_task(final_config(5, 2, 2), tmp_path, RecordsLr)
    # 5 epochs of 2 steps, 2 warm-up: (e / 2 + (i / 2) / 2) * 0.1 in epochs 0-1; epoch 2 starts the cosine
    # (T_max 3) at 0.1; epochs 3-4 reach E - W = 3: their eta_min, 0.
    expected = [0.0, 0.025, 0.05, 0.075] + [0.1] * 2 + [0.0] * 4
    assert seen == pytest.approx(expected, rel=1e-12, abs=0)
    assert [record["lr"] for record in results["history"]] == pytest.approx([0.0, 0.05, 0.1, 0.0, 0.0])


class Interrupted(Exception):
    pass


def test_a_run_cut_inside_the_warmup_and_at_its_boundary_resumes_to_the_uninterrupted_end(tmp_path):
    # 4 epochs of 2 steps, 1 warm-up: lr (i / 2) * 0.1 in epoch 0, then the cosine (T_max 3) 0.1, 0.075, and 0.
    config = lambda *overrides: final_config(4, 1, 2, *overrides)
    full = run_final(config(), tmp_path / "full")
    assert [h["lr"] for h in full["history"]] == pytest.approx([0.0, 0.1, 0.075, 0.0])
    calls = []

    class SignalledInWarmup(FinalTraining):
        """A stop signal during epoch 0's first step: checkpointed at epoch 0 step 1, mid warm-up."""

        def train_step(self, batch, epoch):
            calls.append(1)
            if len(calls) == 1:
                signal.raise_signal(signal.SIGUSR1)
            return super().train_step(batch, epoch)

    class DiesAfterWarmup(FinalTraining):
        """Killed as epoch 1 (the first after the warm-up) starts, after epoch 0's checkpoint."""

        def start_epoch(self, epoch):
            if epoch == 1:
                raise Interrupted
            return super().start_epoch(epoch)

    with pytest.raises(Preempted, match="at epoch 0 step 1"):
        run_task(config(), tmp_path / "cut", SignalledInWarmup)
    with pytest.raises(Interrupted):
        run_task(config("resume=true"), tmp_path / "cut", DiesAfterWarmup)
    resumed = run_final(config("resume=true"), tmp_path / "cut")
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    assert [h["lr"] for h in resumed["history"]] == [h["lr"] for h in full["history"]]
    assert resumed["test_loss"] == full["test_loss"]
    a = export.load(tmp_path / "full" / "model.pt").state_dict()
    b = export.load(tmp_path / "cut" / "model.pt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
