"""PC-DARTS (Xu et al., 2020): partial channel connections and edge normalisation.

On every edge only 1/K of the channels go through the mixed op; the other
(K-1)/K bypass it (identity, or a 2x2 max-pool on a reduction edge), the two
parts are concatenated and channel-shuffled with K groups so that the next
edge sees a different slice. Because each edge now sees a random-ish subset of
channels, its op weights fluctuate; edge normalisation stabilises the choice
of edges with one extra parameter per edge (``betas_normal``/``betas_reduce``
among the strategy's architecture parameters), softmax-normalised over each node's incoming edges: a node
is ``sum_j softmax_node(beta)_j * mixedop_j``. Derivation multiplies each
edge's op softmax by that normalised beta before the published rule.

The optimisation is DARTS's (alpha step then weight step), with the alphas
and betas frozen for the first ``arch_start_epoch`` epochs (15 as published).
"""
from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from darts.errors import DartsError
from darts.spaces.base import SearchSpace
from darts.spaces.mixed import MixedOp
from darts.strategies.base import STRATEGIES
from darts.strategies.darts import DARTS


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, H, W): the ShuffleNet permutation, output channel i * groups + g =
    input channel g * (C / groups) + i, in the input's memory format."""
    n, c, h, w = x.shape
    shuffled = x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return shuffled.contiguous(memory_format=torch.channels_last)
    return shuffled


class PartialChannelMixedOp(nn.Module):
    """A mixed op on the first C/K channels; the rest bypass it, then a channel shuffle.

    forward: x (N, C, H, W), weights (ops,) [, active] [, skip_dropout] -> (N, C, H/stride, W/stride).
    ``self.mixed`` is a plain MixedOp over C/K channels, so ``active`` (one op
    per edge) works as for the full op.
    """

    def __init__(self, C: int, stride: int, primitives: Sequence[str], partial_channels: int = 4,
                 pool_bn: bool = True):
        super().__init__()
        if partial_channels < 1 or C % partial_channels:
            raise DartsError(f"strategy.partial_channels={partial_channels} must divide the cell's channel "
                             f"count {C}; choose a space.C that it divides (in every cell)")
        self.partial_channels = partial_channels
        self.stride = stride
        self.C_partial = C // partial_channels
        if stride == 2 and "skip_connect" in primitives and self.C_partial % 2:
            # A stride-2 skip_connect is a factorized reduce, which splits its channels in two halves.
            raise DartsError(f"strategy.partial_channels={partial_channels} leaves {self.C_partial} channels on "
                             f"a reduction edge; skip_connect there needs an even count: raise space.C")
        self.mixed = MixedOp(self.C_partial, stride, primitives, pool_bn=pool_bn)
        self.primitives = self.mixed.primitives
        self.ops = self.mixed.ops  # the candidate ops, as on MixedOp (tests hook them)
        self.live = self.mixed.live

    def output_shape_zero(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixed.output_shape_zero(x)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, active: int | None = None,
                skip_dropout: float = 0.0) -> torch.Tensor:
        through, bypass = x[:, :self.C_partial], x[:, self.C_partial:]
        # Skip dropout (P-DARTS) acts on the skip's output, the C/K channels through the ops; the bypass is no op.
        mixed = self.mixed(through, weights, active, skip_dropout)
        if self.stride == 2:
            # ceil_mode matches the ops' ceil(H/2) output on odd sizes (equal to floor on even ones).
            bypass = F.max_pool2d(bypass, 2, 2, ceil_mode=True)
        return channel_shuffle(torch.cat([mixed, bypass], dim=1), self.partial_channels)


@STRATEGIES.register("pcdarts")
class PCDARTS(DARTS):
    """DARTS on a partial-channel supernet with edge normalisation.

    partial_channels: K, the channel fraction 1/K that runs through the ops (4 published on CIFAR).
    arch_start_epoch: epochs before alphas and betas start to move (15 published).
    order, hessian: as for DARTS (the published PC-DARTS is first order).
    """

    name = "pcdarts"
    edge_normalization = True

    def __init__(self, partial_channels: int = 4, arch_start_epoch: int = 15, order: int = 1,
                 hessian: str = "finite_difference"):
        super().__init__(order=order, hessian=hessian, arch_start_epoch=arch_start_epoch)
        if not isinstance(partial_channels, int) or partial_channels < 1:
            raise DartsError(f"strategy.partial_channels must be a positive integer, got {partial_channels!r}")
        self.partial_channels = partial_channels

    def build_supernet(self, space: SearchSpace, num_classes: int, in_channels: int) -> nn.Module:
        mixed_op = functools.partial(PartialChannelMixedOp, partial_channels=self.partial_channels,
                                     pool_bn=space.pool_bn)
        return space.build_supernet(num_classes, in_channels, mixed_op=mixed_op)

    # forward_weights(), mixing_weights() and genotype() come from DARTS, which applies the normalised
    # betas: softmax(alpha) * softmax_per_node(beta), then the space's rule.
