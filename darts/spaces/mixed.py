"""What a supernet is made of and is given: per-edge weights and the mixed operation.

A supernet is a function of its input and of the architecture weights it is handed,
``supernet(x, arch)`` with ``arch = {cell type: EdgeWeights}``; it owns no architecture
parameters. A strategy turns its parameters into these weights (softmax, a Gumbel one-hot, a
Dirichlet sample, a sampled cell) and passes them in.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from darts.fastpath import FastPathOptions
from darts.kernels import subsampled_halves, weighted_sum
from darts.ops import Identity, activation_signature, build_op, is_pool


class EdgeWeights(NamedTuple):
    """Per-forward weights of one cell type.

    weights: (edges, ops) mixing weights.
    active: for sampling strategies, the single op index to run on each edge (a Python list, so
        choosing it never syncs the device); None = run all. An entry of None switches its edge
        off: the edge contributes nothing to its node (a sampled DARTS cell keeps two edges per node).
    edge_scales: (edges,) multipliers of each edge's output (PC-DARTS edge normalisation); None =
        every edge counts once.
    skip_dropout: the dropout rate on every stride-1 ``skip_connect`` (Identity) output of this
        forward, in training mode only (P-DARTS's operation-level dropout); 0 = none.

    Copy one with ``_replace(...)`` to change a field, so that the fields a caller does not know of
    carry over.
    """

    weights: torch.Tensor
    active: list[int | None] | None = None
    edge_scales: torch.Tensor | None = None
    skip_dropout: float = 0.0


ArchWeights = dict[str, EdgeWeights]


def run_edge(edge: nn.Module, h: torch.Tensor, edge_weights: EdgeWeights, index: int) -> torch.Tensor | None:
    """Edge ``index`` of a cell applied to its input ``h`` under ``edge_weights``; None for an edge
    that is switched off (it adds nothing to its node). A non-zero ``skip_dropout`` reaches the edge
    as the keyword ``skip_dropout`` (an edge module that has no skip dropout need not take it, as long
    as no strategy hands it one)."""
    weights, active, scales, skip_dropout = edge_weights
    extra = {"skip_dropout": skip_dropout} if skip_dropout else {}
    if active is None:
        out = edge(h, weights[index], **extra)
    elif active[index] is None:
        return None
    else:
        out = edge(h, weights[index], active[index], **extra)
    return out if scales is None else out * scales[index]


class MixedOp(nn.Module):
    """Weighted sum of every candidate op on one edge.

    forward: x (N, C, H, W), weights (ops,) [, active op index] [, skip_dropout rate] -> (N, C, H/stride,
    W/stride).

    ``none`` is never run: it outputs zeros, so its term and its gradient are exactly zero;
    skipping it saves a launch per edge. ``pool_bn`` puts the DARTS supernet's affine-free BN after
    each pool (the NAS-Bench-201 supernet has none there).

    Fast path (``configure_fast_path``: ``fused_mixed_ops``): ops that start with the same
    activation (:func:`darts.ops.activation_signature`) share one computation of it, stride-2 ops
    of such a group that read only the activation's subsampled halves share one subsampled copy,
    and the weighted outputs are summed by :func:`darts.kernels.weighted_sum`. Ops with another
    activation, or none, run as published.

    ``skip_dropout`` p > 0 (P-DARTS, chenxin061/pdarts model_search.py lines 23-24: an ``nn.Dropout``
    after every ``Identity`` op): in training mode the output of each stride-1 ``skip_connect`` goes
    through ``F.dropout(p)`` before its weight multiplies it. The ops that draw random numbers (this
    dropout, RobustDARTS's ``noise``) run in op order in the plain and the fused forward alike, so both
    draw the same values from the same RNG state.
    """

    def __init__(self, C: int, stride: int, primitives: Sequence[str], pool_bn: bool = True):
        super().__init__()
        self.primitives = tuple(primitives)
        self.stride = stride
        ops = []
        for name in self.primitives:
            op = build_op(name, C, stride, affine=False)
            if pool_bn and is_pool(name):
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            ops.append(op)
        self.ops = nn.ModuleList(ops)
        self.live = [k for k, name in enumerate(self.primitives) if name != "none"]
        groups: dict[str, list[int]] = {}
        for k in self.live:
            signature = activation_signature(self.ops[k])
            if signature is not None:
                groups.setdefault(signature, []).append(k)
        # Only a group of two or more saves anything; a lone op runs its own forward.
        self.activation_groups = [members for members in groups.values() if len(members) > 1]
        # The stride-1 skip_connect (a stride-2 one is a FactorizedReduce and takes no dropout, as theirs).
        self.skips = frozenset(k for k in self.live if isinstance(self.ops[k], Identity))
        self.fused = False

    def configure_fast_path(self, options: FastPathOptions) -> None:
        self.fused = options.fused_mixed_ops

    def output_shape_zero(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return torch.zeros_like(x)
        return x.new_zeros(x.shape[0], x.shape[1], (x.shape[2] + 1) // 2, (x.shape[3] + 1) // 2)

    def run_op(self, k: int, x: torch.Tensor, skip_dropout: float) -> torch.Tensor:
        """Op ``k`` on ``x``, its output dropped out at rate ``skip_dropout`` if it is the skip."""
        out = self.ops[k](x)
        if skip_dropout > 0 and self.training and k in self.skips:
            out = F.dropout(out, skip_dropout, training=True)
        return out

    def forward(self, x: torch.Tensor, weights: torch.Tensor, active: int | None = None,
                skip_dropout: float = 0.0) -> torch.Tensor:
        if active is not None:
            if active not in self.live:
                # Sampled `none`: zeros, but keep the weight in the graph for its gradient.
                return self.output_shape_zero(x) * weights[active]
            return self.run_op(active, x, skip_dropout) * weights[active]
        if self.fused and self.live:
            return self.fused_forward(x, weights, skip_dropout)
        total = None
        for k in self.live:
            term = self.run_op(k, x, skip_dropout) * weights[k]
            total = term if total is None else total + term
        if total is None:  # an op list of only `none`
            return self.output_shape_zero(x)
        return total

    def fused_forward(self, x: torch.Tensor, weights: torch.Tensor, skip_dropout: float = 0.0) -> torch.Tensor:
        outputs: dict[int, torch.Tensor] = {}
        for members in self.activation_groups:
            activated = self.ops[members[0]].activation(x)
            from_halves = [k for k in members if getattr(self.ops[k], "takes_halves", False)]
            halves = subsampled_halves(activated) if len(from_halves) > 1 else None
            for k in members:
                if halves is not None and k in from_halves:
                    outputs[k] = self.ops[k].forward_halves(*halves)
                else:
                    outputs[k] = self.ops[k].forward_activated(activated)
        # In op order, as the plain forward: the skip's dropout mask is drawn at the same RNG state.
        ordered = [outputs[k] if k in outputs else self.run_op(k, x, skip_dropout) for k in self.live]
        return weighted_sum(weights, tuple(self.live), ordered)

