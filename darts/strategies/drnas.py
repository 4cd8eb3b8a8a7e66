"""DrNAS (Chen et al., 2021): a Dirichlet distribution over each edge's ops.

The alphas parameterise a Dirichlet with concentration ``elu(alpha) + 1`` (so
always positive); every training forward mixes the ops with a reparameterised
sample of it (``Dirichlet.rsample``), so the loss gradient reaches the
concentration through the sample (implicit reparameterisation). Alphas and
weights are trained by DARTS's first-order loop. Evaluation forwards and the
derived cell use the Dirichlet mean, ``concentration / concentration.sum()``.

Sampling uses the global torch RNG (``Dirichlet.rsample`` takes no generator);
the engine's checkpoint holds that RNG state, so a resumed run draws the same
samples. Not implemented from the DrNAS paper: its optional regulariser on the
concentration and the progressive partial-channel/op-pruning schedule it uses
on the DARTS space.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Dirichlet

from darts.runtime import Runtime
from darts.spaces.base import SearchSpace
from darts.spaces.mixed import ArchWeights, EdgeWeights
from darts.strategies.base import STRATEGIES
from darts.strategies.darts import DARTS


def dirichlet_concentration(alphas: torch.Tensor) -> torch.Tensor:
    """(edges, ops) -> (edges, ops), every entry > 0."""
    return F.elu(alphas) + 1.0


def dirichlet_mean(alphas: torch.Tensor) -> torch.Tensor:
    """(edges, ops) -> (edges, ops) rows on the simplex: the mean of Dirichlet(elu(alpha) + 1)."""
    concentration = dirichlet_concentration(alphas)
    return concentration / concentration.sum(-1, keepdim=True)


@STRATEGIES.register("drnas")
class DrNAS(DARTS):
    """arch_start_epoch: epochs of weight-only training (with sampled mixtures) before alphas move."""

    name = "drnas"

    def __init__(self, arch_start_epoch: int = 0):
        super().__init__(order=1, arch_start_epoch=arch_start_epoch)

    def setup(self, space: SearchSpace, model: nn.Module, optim_cfg, epochs: int, steps_per_epoch: int,
              runtime: Runtime) -> None:
        super().setup(space, model, optim_cfg, epochs, steps_per_epoch, runtime)
        # Eager: Dirichlet sampling is a custom autograd function without a compiled kernel, which
        # would split the compiled graph at every cell type; left for a measured GPU follow-up.
        self.forward = model

    def forward_weights(self) -> ArchWeights:
        """A reparameterised Dirichlet sample per edge, for every training forward."""
        weights = {}
        for cell, alphas in self.arch.alphas().items():
            # validate_args=False: the argument check would read the tensor back to the host.
            sample = Dirichlet(dirichlet_concentration(alphas.float()), validate_args=False).rsample()
            weights[cell] = EdgeWeights(sample.to(alphas.dtype))
        return self.constrained(weights)

    def expected_weights(self) -> ArchWeights:
        """The Dirichlet mean: deterministic, differentiable in the alphas."""
        return self.constrained({cell: EdgeWeights(dirichlet_mean(alphas)) for cell, alphas in self.arch.alphas().items()})

    def eval_arch_weights(self) -> ArchWeights:
        """Evaluation mixes with the Dirichlet mean: deterministic."""
        with torch.no_grad():
            return self.expected_weights()

    def mixing_weights(self) -> dict[str, torch.Tensor]:
        """The Dirichlet mean (float64, CPU); the space's rule derives the cell from it."""
        return {cell: dirichlet_mean(alphas.detach().double().cpu()) for cell, alphas in self.arch.alphas().items()}
