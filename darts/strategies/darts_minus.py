"""DARTS- (Chu et al., ICLR 2021): an auxiliary skip path on every edge, its weight decayed to zero.

Every mixed op becomes ``sum_o softmax(alpha)_o * o(x) + beta * aux(x)``: ``skip_connect`` stays among
the candidate ops with its own alpha, and ``aux`` is outside the softmax: the identity on stride-1
edges, ``FactorizedReduce(C, C, affine=False)`` (weights of its own) on stride-2 edges. ``beta`` is
not learned; it follows the authors' ``DecayScheduler`` (``src/utils.py``), stepped at the start of
every epoch (``src/search/train_search.py``). The search is DARTS's (first order as published), and
the derivation ignores the auxiliary path: ``mixing_weights()`` is softmax(alpha), (edges, ops).

How beta reaches the supernet: the supernet is a function of the weights it is given, so beta rides
in them. The strategy builds the supernet with :class:`AuxiliarySkipMixedOp` edges, whose weight row
has one entry more than there are ops (the last is beta), and every forward's weights are
``[softmax(alpha) | beta]``, (edges, ops + 1). Evaluation forwards run with the same beta as that
epoch's training, as theirs do (their ``infer`` runs the same ``MixedOp.forward``, aux path included,
at the scheduler's current rate).

Schedules (``decay``), with beta0 = ``--skip_beta``, T_start/T_stop/T_max = ``--decay_start_epoch``,
``--decay_stop_epoch``, ``--decay_max_epoch``, as ``DecayScheduler.step`` computes them:
``linear`` beta0 (T_max - e) / (T_max - T_start); ``cosine`` beta0 (1 + cos(pi e / (T_max - T_start))) / 2;
``slow_cosine`` beta0 cos(pi e / (2 (T_max - T_start))); ``none`` beta0 throughout (their default
``--decay None``). Before T_start beta is beta0; after T_stop it stays at its T_stop value (theirs keeps
the last computed rate). Published (``scripts/run_darts_minus.sh``): linear, beta0 = 1, T_max = T_stop
= 50 = the search's epochs, so beta goes 1 -> 0.02 over epochs 0..49. Here T_max defaults to the
search's epochs and T_stop to T_max.

Differences, on purpose: beta is computed from the epoch, not carried from the last step (the same
numbers for T_start <= T_stop, which is required here, and nothing to checkpoint); their ablation
``--auxiliary_operation conv1`` (a learned 1x1 conv initialised to the identity) is not implemented.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import torch
import torch.nn as nn

from darts.errors import DartsError
from darts.ops import FactorizedReduce
from darts.runtime import Runtime
from darts.spaces.base import SearchSpace
from darts.spaces.mixed import ArchWeights, MixedOp
from darts.strategies.base import STRATEGIES
from darts.strategies.darts import DARTS

DECAYS = ("linear", "cosine", "slow_cosine", "none")


def auxiliary_path(C: int, stride: int) -> nn.Module:
    """(N, C, H, W) -> (N, C, ceil(H/stride), ceil(W/stride)): DARTS-'s auxiliary skip."""
    return nn.Identity() if stride == 1 else FactorizedReduce(C, C, affine=False)


class AuxiliarySkipMixedOp(MixedOp):
    """A mixed op plus ``beta * aux(x)``.

    forward: x (N, C, H, W), weights (ops + 1,): the ops' weights then beta [, active op index]
    -> (N, C, H/stride, W/stride) = MixedOp(x, weights[:-1]) + weights[-1] * aux(x).
    """

    def __init__(self, C: int, stride: int, primitives: Sequence[str], pool_bn: bool = True):
        # Built before the candidate ops, as their MixedOp does, so a reduction edge's weights are
        # drawn in the same order.
        auxiliary = auxiliary_path(C, stride)
        super().__init__(C, stride, primitives, pool_bn=pool_bn)
        self.auxiliary = auxiliary

    def forward(self, x: torch.Tensor, weights: torch.Tensor, active: int | None = None) -> torch.Tensor:
        return super().forward(x, weights[:-1], active) + weights[-1] * self.auxiliary(x)


def beta_schedule(epoch: int, decay: str, beta0: float, t_max: int, t_start: int, t_stop: int) -> float:
    """beta at the start of ``epoch`` (``DecayScheduler.step(epoch)``; see the module docstring)."""
    if decay == "none" or epoch < t_start:
        return beta0
    e = min(epoch, t_stop)
    span = t_max - t_start
    if decay == "linear":
        return beta0 * (t_max - e) / span
    if decay == "cosine":
        return beta0 * (1.0 + math.cos(math.pi * e / span)) / 2.0
    return beta0 * math.cos((math.pi / 2.0) * e / span)


@STRATEGIES.register("darts_minus")
class DARTSMinus(DARTS):
    """DARTS with a decaying auxiliary skip on every edge (see the module docstring).

    beta0: the auxiliary path's weight at the start (``--skip_beta``, 1 published).
    decay: ``linear`` (published) | ``cosine`` | ``slow_cosine`` | ``none``.
    decay_start_epoch, decay_stop_epoch, decay_max_epoch: T_start (0), T_stop (None: T_max) and
        T_max (None: the search's epochs; 50 published).
    order, hessian, arch_start_epoch: as for DARTS.
    """

    name = "darts_minus"

    def __init__(self, beta0: float = 1.0, decay: str = "linear", decay_start_epoch: int = 0,
                 decay_stop_epoch: int | None = None, decay_max_epoch: int | None = None, order: int = 1,
                 hessian: str = "finite_difference", arch_start_epoch: int = 0):
        super().__init__(order=order, hessian=hessian, arch_start_epoch=arch_start_epoch)
        if decay not in DECAYS:
            raise DartsError(f"unknown strategy.decay {decay!r}; valid choices: {', '.join(DECAYS)}")
        self.beta0, self.decay = float(beta0), decay
        self.decay_start_epoch = decay_start_epoch
        self.decay_stop_epoch, self.decay_max_epoch = decay_stop_epoch, decay_max_epoch
        self.beta = self.beta0

    def build_supernet(self, space: SearchSpace, num_classes: int, in_channels: int) -> nn.Module:
        # The space's pool rule (no BN after pools in NAS-Bench-201) holds for these edges too.
        mixed_op = functools.partial(AuxiliarySkipMixedOp, pool_bn=space.pool_bn)
        return space.build_supernet(num_classes, in_channels, mixed_op=mixed_op)

    def setup(self, space: SearchSpace, model: nn.Module, optim_cfg, epochs: int, steps_per_epoch: int,
              runtime: Runtime) -> None:
        super().setup(space, model, optim_cfg, epochs, steps_per_epoch, runtime)
        self.t_start = self.decay_start_epoch
        self.t_max = epochs if self.decay_max_epoch is None else self.decay_max_epoch
        self.t_stop = self.t_max if self.decay_stop_epoch is None else self.decay_stop_epoch
        if not 0 <= self.t_start <= self.t_stop or self.t_max <= self.t_start:
            raise DartsError(f"strategy darts_minus needs 0 <= decay_start_epoch <= decay_stop_epoch and "
                             f"decay_start_epoch < decay_max_epoch, got {self.t_start}, {self.t_stop}, {self.t_max}")

    def start_epoch(self, epoch: int) -> None:
        self.beta = beta_schedule(epoch, self.decay, self.beta0, self.t_max, self.t_start, self.t_stop)

    def learning_rates(self) -> dict[str, float]:
        return {**super().learning_rates(), "darts_minus/beta": self.beta}

    def forward_weights(self) -> ArchWeights:
        """DARTS's weights (softmax(alpha), after any constraint) with beta as one more column:
        (edges, ops + 1) per cell."""
        weights = {}
        for cell, edge_weights in super().forward_weights().items():
            rows = edge_weights.weights
            beta = rows.new_full((rows.shape[0], 1), self.beta)
            weights[cell] = edge_weights._replace(weights=torch.cat([rows, beta], dim=-1))
        return weights

    # mixing_weights() and genotype() come from DARTS: softmax(alpha) only, the auxiliary path ignored.
