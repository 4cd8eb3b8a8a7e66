"""The NAS-Bench-201 macro network (search and final alike): a 3x3 conv stem to C channels and BN;
three stages of N cells at C, 2C and 4C channels, separated by a residual reduction block (a ResNet
basic block of stride 2); a final BN + ReLU, global average pooling and a linear classifier. This
module holds the shared macro parts and the final network of one discrete cell."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from darts.errors import DartsError
from darts.fastpath import CellCheckpointing
from darts.kernels import dense_grad
from darts.ops import ReLUConvBN, build_op
from darts.spaces.base import positive_int
from darts.spaces.nb201.genotype import NB201_NODES, NB201Genotype
from darts.spaces.shared_edges import SharedEdgesCell

class ResidualReduction(nn.Module):
    """The benchmark's ResNetBasicblock at stride 2, between stages.

    conv_a: ReLU-conv3x3(stride 2)-BN, C_in -> C_out; conv_b: ReLU-conv3x3-BN, C_out -> C_out;
    shortcut: AvgPool2d(2, 2) then a 1x1 conv C_in -> C_out (no BN).
    (N, C_in, H, W) -> (N, C_out, H/2, W/2).
    """

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, 2, 1, affine)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, affine)
        self.downsample = nn.Sequential(nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
                                        nn.Conv2d(C_in, C_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def stage_plan(C: int, N: int) -> list[tuple[int, bool]]:
    """(channels, is_reduction) per layer: N cells at C, a reduction to 2C, N cells, one to 4C, N cells."""
    return ([(C, False)] * N + [(2 * C, True)] + [(2 * C, False)] * N
            + [(4 * C, True)] + [(4 * C, False)] * N)


class NB201Cell(SharedEdgesCell, nn.Module):
    """The discrete cell: each edge its chosen op (affine BN); ``none`` edges add nothing.
    (N, C, H, W) -> (N, C, H, W). Fast path (``shared_cell_edges``): edges that read one node and
    start with the same activation, or hold the same parameter-free op, share one computation of it
    (:class:`darts.spaces.shared_edges.SharedEdgesCell`)."""

    def __init__(self, genotype: NB201Genotype, C: int):
        super().__init__()
        self.op_names = genotype.edge_ops()
        # Every edge gets a module (``none`` is a parameterless Zero) so that state-dict keys name
        # edges by their position whatever the genotype.
        self.ops = nn.ModuleList(build_op(op, C, 1, affine=True) for op in self.op_names)
        sources = [source for target in range(1, NB201_NODES) for source in range(target)]
        self.plan_sharing(self.ops, self.op_names, sources)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        edge = 0
        memo = self.edge_memo()   # this pass's shared activations and op outputs (fast path)
        for target in range(1, NB201_NODES):
            total = None
            for source in range(target):
                if self.op_names[edge] != "none":
                    out = self.sharing.run(edge, self.ops[edge], nodes[source], memo)
                    total = out if total is None else total + out
                edge += 1
            nodes.append(torch.zeros_like(x) if total is None else total)
        return nodes[-1]


class NB201Network(CellCheckpointing, nn.Module):
    """The benchmark's evaluation network for one cell: stem (conv3x3 + BN to C), 3 stages of N
    cells (C, 2C, 4C) joined by residual reductions, BN + ReLU, global pooling, linear.

    Forward (x of shape (N, in_channels, H, W)), as NetworkCIFAR: training mode
    ``(logits, None)`` (no auxiliary head), eval mode ``logits``, each (N, num_classes).
    The benchmark trains without drop path: ``set_drop_path_prob`` accepts only 0.
    """

    def __init__(self, C: int, num_classes: int, N: int, genotype: NB201Genotype, in_channels: int = 3):
        super().__init__()
        if not isinstance(genotype, NB201Genotype):
            raise DartsError(f"NB201Network needs an NB201 genotype (a '|op~0|+|...|' string), "
                             f"got a {type(genotype).__name__}")
        for name, value in (("C", C), ("num_classes", num_classes), ("N", N), ("in_channels", in_channels)):
            positive_int(f"NB201 {name}", value)
        self.genotype = genotype
        self.config = {"C": C, "num_classes": num_classes, "N": N, "in_channels": in_channels}
        self.drop_path_prob = 0.0
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = nn.ModuleList()
        C_prev = C
        for C_curr, reduction in stage_plan(C, N):
            self.cells.append(ResidualReduction(C_prev, C_curr) if reduction else NB201Cell(genotype, C_curr))
            C_prev = C_curr
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    network_name = "nb201"

    def set_drop_path_prob(self, drop_path_prob: float) -> None:
        if drop_path_prob:
            raise DartsError(f"NB201Network has no drop path; set train.drop_path_prob=0 (got {drop_path_prob})")

    def forward(self, x: torch.Tensor):
        h = self.stem(x)
        recompute = self.recomputes_cells()
        for cell in self.cells:
            h = checkpoint(cell, h, use_reentrant=False) if recompute else cell(h)
        logits = self.classifier(self.global_pooling(dense_grad(self.lastact(h))).flatten(1))
        if self.training:
            return logits, None
        return logits
