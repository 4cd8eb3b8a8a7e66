"""The search's weight optimiser and its learning-rate schedule, both from ``optim.weights``.

The schedule is cosine annealing from ``lr`` to ``lr_min`` over the search, stepped once per
epoch (``schedule_every: epoch``) as the authors' code of DARTS (``cnn/train_search.py``:
``scheduler.step()`` each epoch) and of AutoDL-Projects (``xautodl/procedures/optimizers.py``:
``CosineAnnealingLR.get_lr`` reads the epoch only, the iteration only during warm-up) do, or once
per weight step (``schedule_every: step``: the cosine of the fractional epoch, a smoother schedule
no published preset here uses). ``warmup_epochs`` W > 0 first raises the rate linearly by epoch,
``lr * (epoch + 1) / W`` for epochs 0 .. W-1, then runs the cosine from its epoch-W value on, as
PC-DARTS's ImageNet search does (``train_search_imagenet.py`` lines 151-158: the cosine scheduler steps
every epoch, the first 5 epochs' rate is overwritten).
"""
from __future__ import annotations

import math

import torch

from darts.errors import DartsError

SCHEDULE_EVERY = ("epoch", "step")


def weight_optimizer(params: list[torch.Tensor], w_cfg) -> torch.optim.SGD:
    """SGD with ``lr``, ``momentum``, ``weight_decay`` and ``nesterov`` (default false) of ``w_cfg``."""
    return torch.optim.SGD(params, lr=w_cfg.lr, momentum=w_cfg.momentum, weight_decay=w_cfg.weight_decay,
                           nesterov=bool(w_cfg.get("nesterov", False)), foreach=True)


class WeightSchedule:
    """Cosine annealing of ``optimizer``'s lr to ``w_cfg.lr_min``, stepped per epoch or per step.

    The strategy calls :meth:`after_step` after every weight step and :meth:`after_epoch` at the end
    of every epoch; only the one the configuration names moves the rate. Its checkpoint state is the
    wrapped torch scheduler's.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, w_cfg, epochs: int, steps_per_epoch: int):
        self.every = w_cfg.get("schedule_every", "epoch")
        if self.every not in SCHEDULE_EVERY:
            raise DartsError(f"unknown optim.weights.schedule_every {self.every!r}; "
                             f"valid choices: {', '.join(SCHEDULE_EVERY)}")
        self.warmup = w_cfg.get("warmup_epochs", 0) or 0
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or not 0 <= self.warmup < epochs:
            raise DartsError(f"optim.weights.warmup_epochs must be an integer in [0, {epochs}) (search.epochs), "
                             f"got {self.warmup!r}")
        if self.warmup and self.every != "epoch":
            raise DartsError("optim.weights.warmup_epochs needs optim.weights.schedule_every=epoch")
        horizon = epochs if self.every == "epoch" else epochs * steps_per_epoch
        self.optimizer, self.base_lr, self.lr_min, self.epochs = optimizer, float(w_cfg.lr), float(w_cfg.lr_min), epochs
        self.cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=horizon, eta_min=w_cfg.lr_min)
        if self.warmup:
            self.set_rate(self.base_lr / self.warmup)

    def set_rate(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def after_step(self) -> None:
        if self.every == "step":
            self.cosine.step()

    def after_epoch(self) -> None:
        if self.every != "epoch":
            return
        self.cosine.step()
        epoch = self.cosine.last_epoch   # the epoch about to start
        if epoch < self.warmup:
            self.set_rate(self.base_lr * (epoch + 1) / self.warmup)
        elif epoch == self.warmup > 0:
            # torch's cosine is recursive in the current rate: restart it from its closed form here.
            cosine = (1 + math.cos(math.pi * epoch / self.epochs)) / 2
            self.set_rate(self.lr_min + (self.base_lr - self.lr_min) * cosine)

    def state_dict(self) -> dict:
        return self.cosine.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.cosine.load_state_dict(state)
