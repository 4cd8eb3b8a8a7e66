"""GDAS (Dong & Yang, 2019): one sampled op per edge, Gumbel-softmax gradients.

Every forward draws Gumbel noise g for each edge and takes the op
k = argmax(log_softmax(alpha) + g). Only that op runs; its output is scaled by
the straight-through weight ``hard - soft.detach() + soft`` with
``soft = softmax((log_softmax(alpha) + g) / tau)``: the value is exactly 1,
the gradient is the Gumbel-softmax one. tau falls linearly from ``tau_max`` to
``tau_min`` over the search (10 -> 0.1 as published). Alphas and weights are
trained by DARTS's first-order loop, each forward with a fresh sample.

Differences from the published code, on purpose:
- the loop does the alpha step before the weight step (the engine's order for
  every gradient strategy); GDAS's code does the weight step first;
- GDAS's code adds the non-sampled edges' straight-through weights (value 0)
  to the node as scalars, which hands those alphas a gradient of the summed
  upstream gradient; here only the sampled op's weight enters the graph.

Sampling without device syncs: the noise comes from a CPU ``torch.Generator``
owned by the strategy (checkpointed, so a resumed run draws the same ops), and
the argmax is taken on the CPU from a host copy of the alphas. That copy is the
one device sync per step (a few hundred floats), taken at the start of
``step()``; the weight step of the same step therefore picks its ops from the
alphas before that step's alpha update (one Adam step of lr 3e-4 stale), while
its soft weights and gradients use the current alphas.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from darts.errors import DartsError
from darts.runtime import Runtime
from darts.strategies.base import Batch, GeneratorState, register_strategy
from darts.strategies.darts import DARTS
from darts.supernet import EdgeWeights

def cell_type_of(model: nn.Module, alphas: torch.Tensor) -> str:
    """The cell type whose alpha matrix ``alphas`` is (by identity: the supernet passes its own parameter)."""
    for cell, cell_alphas in model.cell_alphas().items():
        if alphas is cell_alphas:
            return cell
    raise DartsError("edge weighting called with a tensor that is none of the supernet's alpha matrices")


def seed_from_global_rng() -> int:
    """A seed for a strategy-owned generator, drawn from the global RNG that the run's seed set."""
    return int(torch.randint(0, 2 ** 62, (), dtype=torch.int64))


def one_hot_rows(indices: list[int | None], num_ops: int) -> torch.Tensor:
    """(edges, ops) float32 on the CPU: a 1 at each edge's op, an all-zero row where the index is None."""
    rows = torch.zeros(len(indices), num_ops)
    for edge, op in enumerate(indices):
        if op is not None:
            rows[edge, op] = 1.0
    return rows


@register_strategy("gdas")
class GDAS(DARTS):
    """tau_max, tau_min: the temperature's linear schedule over the epochs.
    arch_start_epoch: epochs of weight-only training (with sampled ops) before alphas move."""

    def __init__(self, tau_max: float = 10.0, tau_min: float = 0.1, arch_start_epoch: int = 0):
        super().__init__(order=1, arch_start_epoch=arch_start_epoch)
        if not 0 < tau_min <= tau_max:
            raise DartsError(f"strategy.tau_min and tau_max need 0 < tau_min <= tau_max, got {tau_min}, {tau_max}")
        self.tau_max, self.tau_min = float(tau_max), float(tau_min)
        self.tau = self.tau_max
        self.generator = torch.Generator()
        self.pending: dict[str, tuple[torch.Tensor, list[int]]] = {}
        self.host_alphas: torch.Tensor | None = None

    def setup(self, model: nn.Module, optim_cfg, epochs: int, steps_per_epoch: int, runtime: Runtime) -> None:
        super().setup(model, optim_cfg, epochs, steps_per_epoch, runtime)
        # Eager, never compiled: the sampled op list decides which kernels run, so a compiled
        # model would recompile for every new architecture.
        self.forward = model
        self.epochs = epochs
        self.generator.manual_seed(seed_from_global_rng())
        model.edge_weighting = self.gumbel_weighting

    def checkpointables(self) -> dict:
        return {**super().checkpointables(), "gumbel_generator": GeneratorState(self.generator)}

    def start_epoch(self, epoch: int) -> None:
        progress = epoch / (self.epochs - 1) if self.epochs > 1 else 0.0
        # Written as a blend so the last epoch gets exactly tau_min.
        self.tau = (1.0 - progress) * self.tau_max + progress * self.tau_min

    # -- sampling ------------------------------------------------------------------------
    def step(self, train_batch: Batch, alpha_batches: Iterator[Batch], epoch: int) -> dict[str, torch.Tensor]:
        # The step's one device sync: every cell type's alphas in one small host copy.
        self.host_alphas = self.stacked_alphas()
        try:
            return super().step(train_batch, alpha_batches, epoch)
        finally:
            self.host_alphas = None

    def stacked_alphas(self) -> torch.Tensor:
        """(cell types, edges, ops) float32 host copy of the alphas, in ``cell_alphas()`` order."""
        return torch.stack(list(self.model.cell_alphas().values())).detach().float().cpu()

    def draw(self) -> None:
        """Gumbel noise (cell types, edges, ops) and each edge's sampled op for the next forward."""
        host = self.host_alphas
        if host is None:  # a forward outside step(): one extra host copy
            host = self.stacked_alphas()
        gumbels = -torch.empty(host.shape).exponential_(generator=self.generator).log()
        # argmax((log_softmax + g) / tau) does not depend on tau.
        chosen = (host.log_softmax(-1) + gumbels).argmax(-1).tolist()
        self.pending = {cell: (gumbels[i], chosen[i]) for i, cell in enumerate(self.model.cell_alphas())}

    def loss(self, batch: Batch, float32: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if self.model.training:
            self.draw()  # a fresh architecture for every training forward
        return super().loss(batch, float32)

    def gumbel_weighting(self, alphas: torch.Tensor) -> EdgeWeights:
        """alphas (edges, ops) -> the straight-through one-hot weights and the sampled op per edge.

        Without a pending draw (evaluation, or a forward not run by this strategy) the
        supernet runs the most likely op per edge, the argmax of alpha (one host copy)."""
        cell = cell_type_of(self.model, alphas)
        num_ops = alphas.shape[-1]
        pending = self.pending.pop(cell, None)
        if pending is None:
            chosen = alphas.detach().argmax(-1).tolist()
            return EdgeWeights(one_hot_rows(chosen, num_ops).to(alphas.device, alphas.dtype), chosen)
        gumbels, chosen = pending
        gumbels = gumbels.to(alphas.device, alphas.dtype, non_blocking=True)
        soft = torch.softmax((F.log_softmax(alphas, -1) + gumbels) / self.tau, dim=-1)
        hard = one_hot_rows(chosen, num_ops).to(alphas.device, alphas.dtype, non_blocking=True)
        return EdgeWeights(hard - soft.detach() + soft, chosen)

    # arch_weights(): softmax(alpha), the distribution GDAS samples from at tau = 1;
    # genotype(): the published rule on softmax(alpha), as GDAS derives its cells.
