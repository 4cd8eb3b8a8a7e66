"""DrNAS (Chen et al., ICLR 2021): a Dirichlet distribution over each edge's ops, as the authors'
code runs it (xiangning-chen/DrNAS).

* Mixing weights: every training forward mixes an edge's ops with a reparameterised sample of
  Dirichlet(elu(alpha) + 1) (utils.py ``process_step_vector``, method ``dirichlet``:
  ``Dirichlet(F.elu(x) + 1).rsample()``), so the loss gradient reaches the concentration through the
  sample. Alphas start at ``1e-3 * randn`` (model_search.py ``_initialize_alphas``).
* Optimisation: DARTS's first-order loop (architect.py ``step`` with ``unrolled=False``: an alpha
  step on an alpha-split batch, then the weight step). The regulariser of their default
  ``--reg_type l2`` is the alphas' Adam weight decay (architect.py lines 17-22:
  ``weight_decay = args.reg_scale`` = 1e-3), i.e. ``optim.alphas.weight_decay``.
* Warm-up: alpha steps start at epoch ``warmup_epochs`` of each stage (DARTS-space/train_search.py
  line 182 and 201-space/train_search_progressive.py line 280: ``if epoch >= 10`` with the epoch
  counted within the stage; their single-stage 201-space/train_search.py line 264 has none).
* Partial channels: with ``partial_channels`` K > 1 each edge is PC-DARTS's partial-channel mixed
  op without edge normalisation (model_search.py ``MixedOp``: ops on the first C/K channels, the rest
  bypass, 2x2 max-pool on reduction edges, channel shuffle); K = 1 is the full mixed op.
* Progressive learning (``stages``, :mod:`darts.stages`): per stage its epochs, the ops each edge
  keeps (``keep_ops``: the top ones by alpha, utils.py ``prune``) and its K (``options.partial_channels``).
* Derivation: ``softmax(alpha)`` over each edge's (kept) ops (model_search.py ``genotype``:
  ``process_step_matrix(alphas, 'softmax', mask)``), then the space's rule: per node the two edges
  with the largest op weight, the argmax op on each (DARTS space, ``none`` not among their ops);
  per edge the argmax op (NAS-Bench-201).

Differs from their code: evaluation forwards (the alpha-split accuracy, logged only) mix with the
Dirichlet mean, deterministic, where their ``infer`` draws a sample. Sampling uses the global torch
RNG (``Dirichlet.rsample`` takes no generator), which the checkpoint holds, so a resumed run draws
the samples an uninterrupted one draws.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Dirichlet

from darts.errors import DartsError
from darts.runtime import Runtime
from darts.spaces.base import SearchSpace
from darts.spaces.mixed import ArchWeights, EdgeWeights
from darts.stages import StagedStrategy, parse_stages
from darts.strategies.base import STRATEGIES
from darts.strategies.darts import DARTS
from darts.strategies.pcdarts import PartialChannelMixedOp

STAGE_OPTIONS = ("partial_channels",)


def dirichlet_concentration(alphas: torch.Tensor) -> torch.Tensor:
    """(edges, ops) -> (edges, ops), every entry > 0."""
    return F.elu(alphas) + 1.0


def dirichlet_mean(alphas: torch.Tensor) -> torch.Tensor:
    """(edges, ops) -> (edges, ops) rows on the simplex: the mean of Dirichlet(elu(alpha) + 1)."""
    concentration = dirichlet_concentration(alphas)
    return concentration / concentration.sum(-1, keepdim=True)


def partial_channels_option(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DartsError(f"strategy.partial_channels must be a positive integer (1 = full channels), got {value!r}")
    return value


@STRATEGIES.register("drnas")
class DrNAS(DARTS, StagedStrategy):
    """partial_channels: K (1 = every channel through the ops); warmup_epochs: epochs at the start of
    each stage with weight steps only; stages: null (one stage) or [{epochs, keep_ops, options:
    {partial_channels}}, ...] (see :mod:`darts.stages`)."""

    name = "drnas"

    def __init__(self, partial_channels: int = 1, warmup_epochs: int = 0, stages=None):
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise DartsError(f"strategy.warmup_epochs must be an integer >= 0, got {warmup_epochs!r}")
        super().__init__(order=1, arch_start_epoch=warmup_epochs)
        self.partial_channels = partial_channels_option(partial_channels)
        self.warmup_epochs = warmup_epochs
        self.stages = parse_stages(stages, STAGE_OPTIONS)
        for stage in self.stages:
            partial_channels_option(stage.options.get("partial_channels", 1))

    def enter_stage(self, index: int, start_epoch: int) -> None:
        """The stage's K (the previous one where it names none); alphas move from its warm-up's end."""
        self.partial_channels = self.stages[index].options.get("partial_channels", self.partial_channels)
        self.arch_start_epoch = start_epoch + self.warmup_epochs

    def build_supernet(self, space: SearchSpace, num_classes: int, in_channels: int) -> nn.Module:
        if self.partial_channels == 1:
            return space.build_supernet(num_classes, in_channels)
        mixed_op = functools.partial(PartialChannelMixedOp, partial_channels=self.partial_channels,
                                     pool_bn=space.pool_bn)
        return space.build_supernet(num_classes, in_channels, mixed_op=mixed_op)

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

    # mixing_weights() is DARTS's softmax(alpha): what their genotype() and show_arch_parameters()
    # read, and what pruning ranks (the order of the alphas themselves, as their topk).
