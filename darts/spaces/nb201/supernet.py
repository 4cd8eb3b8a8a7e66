"""The NAS-Bench-201 search network: one cell of 6 mixed edges shared by 3 stages, weighted by the
architecture weights it is given."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from darts.fastpath import CellCheckpointing
from darts.kernels import dense_grad
from darts.spaces.mixed import ArchWeights, EdgeWeights, run_edge
from darts.spaces.nb201.genotype import NB201_EDGES, NB201_NODES
from darts.spaces.nb201.network import ResidualReduction, stage_plan


class NB201SearchCell(nn.Module):
    """Every one of the 6 edges a mixed op: edge e is ``mixed_op(C, 1, edge_ops[e])``, its own op list
    (``primitives`` on every edge unless the space has per-edge lists).

    forward: x (N, C, H, W), EdgeWeights of (6, ops) -> (N, C, H, W), node 3. A node whose every
    incoming edge is switched off is zeros.
    """

    def __init__(self, C: int, edge_ops: Sequence[Sequence[str]], mixed_op: Callable[..., nn.Module]):
        super().__init__()
        self.edges = nn.ModuleList(mixed_op(C, 1, list(edge_ops[edge])) for edge in range(len(NB201_EDGES)))

    def forward(self, x: torch.Tensor, edge_weights: EdgeWeights) -> torch.Tensor:
        nodes = [x]
        edge = 0
        for target in range(1, NB201_NODES):
            total = None
            for source in range(target):
                out = run_edge(self.edges[edge], nodes[source], edge_weights, edge)
                if out is not None:
                    total = out if total is None else total + out
                edge += 1
            nodes.append(torch.zeros_like(x) if total is None else total)
        return nodes[-1]


class NB201SuperNet(CellCheckpointing, nn.Module):
    """Stem (conv3x3 + BN to C), 3 stages of N search cells (C, 2C, 4C) joined by residual reductions,
    BN + ReLU, global pooling, linear. Every cell reads the one ``normal`` weight matrix.
    ``edge_primitives``: the 6 edges' own op lists (each as long as the weight rows); None = ``primitives``
    on every edge.

    forward(x, arch): x (N, in_channels, H, W), arch {"normal": EdgeWeights of (6, ops)}
    -> logits (N, num_classes).
    """

    def __init__(self, C: int, num_classes: int, N: int, primitives: Sequence[str], in_channels: int,
                 mixed_op: Callable[..., nn.Module], edge_primitives: Sequence[Sequence[str]] | None = None):
        super().__init__()
        self.primitives = list(primitives)
        edge_ops = [self.primitives] * len(NB201_EDGES) if edge_primitives is None else edge_primitives
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = nn.ModuleList()
        C_prev = C
        for C_curr, reduction in stage_plan(C, N):
            if reduction:
                self.cells.append(ResidualReduction(C_prev, C_curr))
            else:
                self.cells.append(NB201SearchCell(C_curr, edge_ops, mixed_op))
            C_prev = C_curr
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x: torch.Tensor, arch: ArchWeights) -> torch.Tensor:
        cell_weights = arch["normal"]
        recompute = self.recomputes_cells()
        h = self.stem(x)
        for cell in self.cells:
            if isinstance(cell, ResidualReduction):
                h = cell(h)
            elif recompute:
                h = checkpoint(cell, h, cell_weights, use_reentrant=False)
            else:
                h = cell(h, cell_weights)
        return self.classifier(self.global_pooling(dense_grad(self.lastact(h))).flatten(1))
