"""The DARTS supernet: cells of mixed operations, weighted by the architecture weights it is given.

Two options give GDAS's supernets (D-X-Y/AutoDL-Projects, xautodl/models/cell_searchs/
search_model_gdas_nasnet.py and search_model_gdas_frc_nasnet.py): ``last_activation`` (their
``lastact``, BN + ReLU before the global pooling) and ``fixed_reduction`` (GDAS-FRC: every reduction
layer is :class:`~darts.spaces.darts_cnn.fixed_reduction.FixedReductionCell`, searched by no
architecture weight)."""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from darts.errors import DartsError
from darts.fastpath import CellCheckpointing
from darts.kernels import concat_channels, dense_grad
from darts.spaces.darts_cnn.fixed_reduction import FixedReductionCell, input_preprocessing
from darts.spaces.mixed import ArchWeights, EdgeWeights, MixedOp, run_edge


class SearchCell(nn.Module):
    """A cell whose every edge is a mixed op; outputs the concat of the last ``multiplier`` nodes.

    forward: s0 (N, C_prev_prev, H0, W0), s1 (N, C_prev, H, W), EdgeWeights of (edges, ops)
    -> (N, multiplier * C, H', W'), H' = H / 2 in a reduction cell.

    Edge e is ``mixed_op(C, stride, ops)`` with ``ops = edge_primitives[e]`` (its own op list, in
    the order of its weight columns) or, without per-edge lists, ``primitives``.
    """

    def __init__(self, steps: int, multiplier: int, C_prev_prev: int, C_prev: int, C: int,
                 reduction: bool, reduction_prev: bool, primitives: Sequence[str],
                 mixed_op: Callable[..., nn.Module] = MixedOp,
                 edge_primitives: Sequence[Sequence[str]] | None = None):
        super().__init__()
        self.reduction = reduction
        self.steps = steps
        self.multiplier = multiplier
        self.preprocess0, self.preprocess1 = input_preprocessing(C_prev_prev, C_prev, C, reduction_prev, affine=False)
        self.edges = nn.ModuleList()
        for node in range(steps):
            for source in range(node + 2):
                stride = 2 if reduction and source < 2 else 1
                ops = primitives if edge_primitives is None else list(edge_primitives[len(self.edges)])
                self.edges.append(mixed_op(C, stride, ops))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, edge_weights: EdgeWeights) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for step in range(self.steps):
            node = None
            for j, h in enumerate(states):
                out = run_edge(self.edges[offset + j], h, edge_weights, offset + j)
                if out is not None:
                    node = out if node is None else node + out
            if node is None:
                raise ValueError(f"node {step} of a cell has every incoming edge switched off")
            offset += len(states)
            states.append(node)
        return concat_channels(states[-self.multiplier:])


SUPERNET_STEMS = ("cifar", "imagenet")


class SuperNet(CellCheckpointing, nn.Module):
    """Stem, ``layers`` search cells (reductions at 1/3 and 2/3 of the depth), pooling, classifier.

    forward(x, arch): x (N, in_channels, H, W), arch {"normal": EdgeWeights, "reduce": EdgeWeights}
    -> logits (N, num_classes).

    ``edge_primitives`` = {cell type: one op list per edge} gives each edge of the normal and the
    reduction cells its own ops (RobustDARTS's S1); None = ``primitives`` on every edge.
    ``last_activation``: BN + ReLU between the last cell and the pooling (GDAS's ``lastact``).
    ``fixed_reduction``: the reduction layers are :class:`FixedReductionCell` (GDAS-FRC); ``arch``
    then needs no ``reduce`` entry.
    ``stem``: ``cifar`` (one 3x3 conv, as the CIFAR supernet) or ``imagenet``, PC-DARTS's ImageNet
    supernet (yuhuixu1993/PC-DARTS ``model_search_imagenet.py`` lines 112-125: three stride-2 3x3
    convs, 224 -> 28, the first cell reading a reduced s0), for searching on ImageNet directly.
    """

    def __init__(self, C: int, num_classes: int, layers: int, steps: int = 4, multiplier: int = 4,
                 stem_multiplier: int = 3, primitives: Sequence[str] = (), in_channels: int = 3,
                 mixed_op: Callable[..., nn.Module] = MixedOp, stem_stride: int = 1,
                 edge_primitives: Mapping[str, Sequence[Sequence[str]]] | None = None,
                 last_activation: bool = False, fixed_reduction: bool = False, stem: str = "cifar"):
        super().__init__()
        self.primitives = list(primitives)
        self.steps = steps
        self.config = dict(C=C, num_classes=num_classes, layers=layers, steps=steps, multiplier=multiplier,
                           stem_multiplier=stem_multiplier, primitives=self.primitives, in_channels=in_channels,
                           stem_stride=stem_stride)
        if edge_primitives is not None:  # recorded only when set: the shared-list config stays as it was
            self.config["edge_primitives"] = {cell: [list(ops) for ops in rows]
                                              for cell, rows in edge_primitives.items()}
        for option, value in (("last_activation", last_activation), ("fixed_reduction", fixed_reduction)):
            if value:
                self.config[option] = True
        if stem not in SUPERNET_STEMS:
            raise DartsError(f"unknown space.stem {stem!r}; valid choices: {', '.join(SUPERNET_STEMS)}")
        if stem != "cifar":
            self.config["stem"] = stem
        C_curr = stem_multiplier * C
        if stem == "imagenet":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr // 2, 3, stride=2, padding=1, bias=False),
                                      nn.BatchNorm2d(C_curr // 2), nn.ReLU(inplace=False),
                                      nn.Conv2d(C_curr // 2, C_curr, 3, stride=2, padding=1, bias=False),
                                      nn.BatchNorm2d(C_curr))
            self.stem1 = nn.Sequential(nn.ReLU(inplace=False),
                                       nn.Conv2d(C_curr, C_curr, 3, stride=2, padding=1, bias=False),
                                       nn.BatchNorm2d(C_curr))
        else:
            # stem_stride=2 halves the resolution up front: a CPU-budget option; the published supernet uses 1.
            self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, stride=stem_stride, padding=1, bias=False),
                                      nn.BatchNorm2d(C_curr))
            self.stem1 = None
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = stem == "imagenet"   # s0 of the first cell is twice s1's resolution there
        for layer in range(layers):
            reduction = layer in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell_ops = None if edge_primitives is None else edge_primitives["reduce" if reduction else "normal"]
            if reduction and fixed_reduction:
                cell = FixedReductionCell(C_prev_prev, C_prev, C_curr, reduction_prev)
            else:
                cell = SearchCell(steps, multiplier, C_prev_prev, C_prev, C_curr, reduction, reduction_prev,
                                  self.primitives, mixed_op, cell_ops)
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=False)) if last_activation else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x: torch.Tensor, arch: ArchWeights) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        if self.stem1 is not None:
            s1 = self.stem1(s0)
        recompute = self.recomputes_cells()
        for cell in self.cells:
            # A fixed cell takes no weights; a search cell its type's.
            inputs = (s0, s1) if isinstance(cell, FixedReductionCell) else (
                s0, s1, arch["reduce" if cell.reduction else "normal"])
            if recompute:
                s0, s1 = s1, checkpoint(cell, *inputs, use_reentrant=False)
            else:
                s0, s1 = s1, cell(*inputs)
        if self.lastact is not None:
            s1 = self.lastact(s1)
        return self.classifier(self.global_pooling(dense_grad(s1)).flatten(1))
