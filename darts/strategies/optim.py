"""The search's weight optimiser and its learning-rate schedule, both from ``optim.weights``.

The schedule is cosine annealing from ``lr`` to ``lr_min`` over the search, stepped either once per
epoch, as the original DARTS code does (``cnn/train_search.py``: ``scheduler.step()`` each epoch), or
once per weight step (``schedule_every: step``), as AutoDL-Projects does for its NAS-Bench-201
searches (``exps/NAS-Bench-201-algos/*.py``: ``w_scheduler.update(None, 1.0 * step / len(loader))``
before every iteration, i.e. the cosine of the fractional epoch).
"""
from __future__ import annotations

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
        horizon = epochs if self.every == "epoch" else epochs * steps_per_epoch
        self.cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=horizon, eta_min=w_cfg.lr_min)

    def after_step(self) -> None:
        if self.every == "step":
            self.cosine.step()

    def after_epoch(self) -> None:
        if self.every == "epoch":
            self.cosine.step()

    def state_dict(self) -> dict:
        return self.cosine.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.cosine.load_state_dict(state)
