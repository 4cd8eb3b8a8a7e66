"""The pieces of training a discrete network: optimiser, schedule, one step, its cost.

Shared by final training and by the candidates of plain random sampling, which train the same way.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from darts.errors import DartsError
from darts.runtime import upcast

SCHEDULES = ("cosine", "exponential")


def build_optimizer(parameters, optimizer_cfg) -> torch.optim.SGD:
    """The final-training SGD (``train.optimizer``: lr, momentum, weight_decay, optional nesterov)."""
    return torch.optim.SGD(parameters, lr=optimizer_cfg.lr, momentum=optimizer_cfg.momentum,
                           weight_decay=optimizer_cfg.weight_decay, nesterov=bool(optimizer_cfg.get("nesterov", False)),
                           foreach=True)


def build_schedule(optimizer, schedule_cfg, epochs: int):
    if schedule_cfg.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=schedule_cfg.lr_min)
    if schedule_cfg.name == "exponential":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=schedule_cfg.gamma)
    raise DartsError(f"unknown train.schedule.name {schedule_cfg.name!r}; valid choices: {', '.join(SCHEDULES)}")


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


def multiply_adds(model: nn.Module, input_shape: tuple[int, ...], device) -> int:
    """Exact multiply-adds of one eval-mode forward, counted by torch's FLOP counter (FLOPs / 2)."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    return counter.get_total_flops() // 2
