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
its soft weights and gradients use the current alphas. Each forward's sample is
made by ``step()`` and passed to the supernet with the forward; nothing is left
on the model or between calls.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from darts.errors import DartsError
from darts.runtime import Runtime
from darts.spaces.base import SearchSpace
from darts.spaces.mixed import ArchWeights, EdgeWeights
from darts.strategies.base import STRATEGIES, Batch, GeneratorState, one_hot_rows, seed_from_global_rng
from darts.strategies.darts import DARTS

# One draw: per cell type, the Gumbel noise (edges, ops) and the op index chosen on each edge.
GumbelSample = dict[str, tuple[torch.Tensor, list[int]]]


@STRATEGIES.register("gdas")
class GDAS(DARTS):
    """tau_max, tau_min: the temperature's linear schedule over the epochs.
    arch_start_epoch: epochs of weight-only training (with sampled ops) before alphas move."""

    name = "gdas"

    def __init__(self, tau_max: float = 10.0, tau_min: float = 0.1, arch_start_epoch: int = 0):
        super().__init__(order=1, arch_start_epoch=arch_start_epoch)
        if not 0 < tau_min <= tau_max:
            raise DartsError(f"strategy.tau_min and tau_max need 0 < tau_min <= tau_max, got {tau_min}, {tau_max}")
        self.tau_max, self.tau_min = float(tau_max), float(tau_min)
        self.tau = self.tau_max
        self.generator = torch.Generator()

    def setup(self, space: SearchSpace, model: nn.Module, optim_cfg, epochs: int, steps_per_epoch: int,
              runtime: Runtime) -> None:
        super().setup(space, model, optim_cfg, epochs, steps_per_epoch, runtime)
        # Eager, never compiled: the sampled op list decides which kernels run, so a compiled
        # model would recompile for every new architecture.
        self.forward = model
        self.epochs = epochs
        self.generator.manual_seed(seed_from_global_rng())

    def checkpointables(self) -> dict:
        return {**super().checkpointables(), "gumbel_generator": GeneratorState(self.generator)}

    def start_epoch(self, epoch: int) -> None:
        progress = epoch / (self.epochs - 1) if self.epochs > 1 else 0.0
        # Written as a blend so the last epoch gets exactly tau_min.
        self.tau = (1.0 - progress) * self.tau_max + progress * self.tau_min

    # -- sampling ------------------------------------------------------------------------
    def step(self, train_batch: Batch, alpha_batches: Iterator[Batch], epoch: int) -> dict[str, torch.Tensor]:
        # The step's one device sync: every cell type's alphas in one small host copy.
        host = self.host_alphas()
        metrics = {}
        if epoch >= self.arch_start_epoch:
            alpha_batch = next(alpha_batches)
            metrics.update(self.alpha_step(train_batch, alpha_batch, arch=self.gumbel_weights(self.draw(host))))
        metrics.update(self.weight_step(train_batch, arch=self.gumbel_weights(self.draw(host))))
        return metrics

    def host_alphas(self) -> torch.Tensor:
        """(cell types, edges, ops) float32 host copy of the alphas, in cell-type order."""
        return torch.stack(list(self.arch.alphas().values())).detach().float().cpu()

    def draw(self, host: torch.Tensor) -> GumbelSample:
        """Gumbel noise for every edge and each edge's sampled op, from the host alphas."""
        gumbels = -torch.empty(host.shape).exponential_(generator=self.generator).log()
        # argmax((log_softmax + g) / tau) does not depend on tau.
        chosen = (host.log_softmax(-1) + gumbels).argmax(-1).tolist()
        return {cell: (gumbels[i], chosen[i]) for i, cell in enumerate(self.arch.cell_types)}

    def forward_weights(self) -> ArchWeights:
        """A fresh sample for a training forward that ``step()`` did not prepare (one host copy)."""
        return self.gumbel_weights(self.draw(self.host_alphas()))

    def gumbel_weights(self, sample: GumbelSample) -> ArchWeights:
        """The straight-through one-hot weights of ``sample`` from the current alphas, and its op per edge."""
        weights = {}
        for cell, alphas in self.arch.alphas().items():
            gumbels, chosen = sample[cell]
            gumbels = gumbels.to(alphas.device, alphas.dtype, non_blocking=True)
            soft = torch.softmax((F.log_softmax(alphas, -1) + gumbels) / self.tau, dim=-1)
            hard = one_hot_rows(chosen, alphas.shape[-1]).to(alphas.device, alphas.dtype, non_blocking=True)
            weights[cell] = EdgeWeights(hard - soft.detach() + soft, chosen)
        return self.constrained(weights)

    def expected_weights(self) -> ArchWeights:
        """softmax(alpha) on every op: the distribution the samples come from at tau = 1."""
        return self.constrained({cell: EdgeWeights(torch.softmax(alphas, dim=-1))
                                 for cell, alphas in self.arch.alphas().items()})

    def eval_arch_weights(self) -> ArchWeights:
        """Evaluation runs the most likely op per edge, the argmax of alpha (one host copy)."""
        weights = {}
        for cell, alphas in self.arch.alphas().items():
            chosen = alphas.detach().argmax(-1).tolist()
            weights[cell] = EdgeWeights(one_hot_rows(chosen, alphas.shape[-1]).to(alphas.device, alphas.dtype),
                                        chosen)
        return self.constrained(weights)

    # mixing_weights(): softmax(alpha), the distribution GDAS samples from at tau = 1;
    # genotype(): the space's rule on softmax(alpha), as GDAS derives its cells.
