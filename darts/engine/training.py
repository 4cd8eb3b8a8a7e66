"""The pieces of training a discrete network: optimiser, schedule, one step, its cost.

Shared by final training and by the candidates of plain random sampling, which train the same way.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from darts.errors import DartsError
from darts.runtime import upcast

SCHEDULES = ("cosine", "exponential")


def build_optimizer(parameters, optimizer_cfg) -> torch.optim.SGD:
    """The final-training SGD (``train.optimizer``: lr, momentum, weight_decay, optional nesterov)."""
    return torch.optim.SGD(parameters, lr=optimizer_cfg.lr, momentum=optimizer_cfg.momentum,
                           weight_decay=optimizer_cfg.weight_decay, nesterov=bool(optimizer_cfg.get("nesterov", False)),
                           foreach=True)


def build_schedule(optimizer, schedule_cfg, epochs: int, warms_up_per_step: bool = False):
    """The lr schedule of ``train.schedule`` over ``epochs``, stepped once per epoch: ``cosine`` to
    ``lr_min`` or ``exponential`` (x ``gamma`` per epoch). With ``warmup_epochs`` W > 0, a
    :class:`WarmupSchedule`, for a trainer that calls its ``warm_up`` before each step of the first W
    epochs (``warms_up_per_step``: final training); W = 0 (the default) is torch's scheduler alone,
    as before there was a warm-up."""
    if schedule_cfg.name not in SCHEDULES:
        raise DartsError(f"unknown train.schedule.name {schedule_cfg.name!r}; valid choices: {', '.join(SCHEDULES)}")
    warmup_epochs = schedule_cfg.get("warmup_epochs") or 0
    if warmup_epochs:
        if not warms_up_per_step:
            raise DartsError("schedule.warmup_epochs is final training's (train.schedule); this trainer steps its "
                             "schedule once per epoch: set warmup_epochs: 0")
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or not 0 < warmup_epochs < epochs:
            raise DartsError(f"train.schedule.warmup_epochs must be an integer from 0 to train.epochs - 1 = "
                             f"{epochs - 1}, got {warmup_epochs!r}")
        return WarmupSchedule(optimizer, schedule_cfg, epochs, warmup_epochs)
    if schedule_cfg.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=schedule_cfg.lr_min)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=schedule_cfg.gamma)


class WarmupSchedule(torch.optim.lr_scheduler.LRScheduler):
    """A linear warm-up over the first W epochs, then the configured schedule, as AutoDL-Projects'
    schedulers compute it (xautodl/procedures/optimizers.py ``CosineAnnealingLR.get_lr`` lines 81-107,
    ``ExponentialLR.get_lr`` lines 152-165; stepped by exps/basic/basic-main.py ``scheduler.update(epoch,
    0.0)`` at each epoch's start, line 153, and xautodl/procedures/basic_main.py ``scheduler.update(None,
    i / len(loader))`` before each step, line 91). Of E epochs in all (their ``epochs + warmup``):

    * epoch e < W, step i of L: ``lr = (e / W + (i / L) / W) * base_lr`` (0 at the very first step);
    * cosine: ``lr_min + (base_lr - lr_min) * (1 + cos(pi * (e - W) / (E - W))) / 2`` while e < E - W,
      then ``lr_min``: their cosine runs over T_max = their ``epochs`` = E - W but gives ``eta_min``
      once the epoch (counted from 0, warm-up included) reaches ``epochs``, so its last W epochs sit at
      ``lr_min`` (0 in their NAS-CIFAR.config: 295 + 5 epochs, the last 5 at lr 0);
    * exponential: ``base_lr * gamma ** (e - W)``.

    ``last_epoch`` counts the finished epochs (``step()`` at each epoch's end); the lr within a warm-up
    epoch is a function of (epoch, step) alone, so a run resumed mid-epoch sets the same lr again.
    """

    def __init__(self, optimizer, schedule_cfg, epochs: int, warmup_epochs: int):
        self.name, self.epochs, self.warmup_epochs = schedule_cfg.name, epochs, warmup_epochs
        self.lr_min = float(schedule_cfg.get("lr_min") or 0.0)
        self.gamma = float(schedule_cfg.get("gamma") or 1.0)
        super().__init__(optimizer)

    def rate(self, base_lr: float, epoch: int, fraction: float = 0.0) -> float:
        """The lr of epoch ``epoch`` after ``fraction`` (step / steps per epoch) of its steps."""
        warmup, epochs = self.warmup_epochs, self.epochs
        if epoch < warmup:
            return (epoch / warmup + fraction / warmup) * base_lr
        if self.name == "exponential":
            return base_lr * self.gamma ** (epoch - warmup)
        if epoch >= epochs - warmup:
            return self.lr_min
        angle = math.pi * (epoch - warmup) / (epochs - warmup)   # their order of operations
        return self.lr_min + (base_lr - self.lr_min) * (1 + math.cos(angle)) / 2

    def get_lr(self) -> list[float]:
        return [self.rate(base_lr, self.last_epoch) for base_lr in self.base_lrs]

    def warm_up(self, epoch: int, step: int, steps_per_epoch: int) -> None:
        """Before step ``step`` (0-based) of warm-up epoch ``epoch``: its lr (AutoDL's per-iteration update)."""
        self._last_lr = [self.rate(base_lr, epoch, step / steps_per_epoch) for base_lr in self.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr


def train_step(forward, inputs: torch.Tensor, targets: torch.Tensor, optimizer, criterion, runtime, params,
               grad_clip: float | None = None, auxiliary_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """One optimiser step of a discrete network: forward under the runtime's autocast, the auxiliary
    head's loss weighted in when the network returns one, scaled backward, gradient-norm clipping of
    ``params`` (None: no clipping, NAS-Bench-201's recipe). Returns device tensors for the metric
    accumulator (``loss_sum``, ``correct``, ``count``); never synchronises with the device."""
    scaler = runtime.scaler
    with runtime.autocast():
        logits, logits_aux = forward(inputs)
    loss = criterion(upcast(logits), targets)
    if logits_aux is not None:
        loss = loss + auxiliary_weight * criterion(upcast(logits_aux), targets)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    runtime.dist.average_gradients(params)
    scaler.unscale_(optimizer)
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
    scaler.step(optimizer)
    scaler.update()
    count = torch.full((), float(targets.shape[0]), device=targets.device)  # a fill, not a copy: no sync
    return {"loss_sum": loss.detach() * count, "correct": (logits.detach().argmax(1) == targets).sum(), "count": count}
