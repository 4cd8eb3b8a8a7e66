"""GDAS-FRC's fixed reduction cell, and the two input convs every DARTS cell starts with.

Shared by the supernet (:mod:`darts.spaces.darts_cnn.supernet`, where the cell stands in the reduction
layers of GDAS-FRC's search) and the final networks (:mod:`darts.spaces.darts_cnn.network`, where a
genotype whose ``reduce`` is None trains it), so neither imports the other.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from darts.errors import DartsError
from darts.kernels import concat_channels
from darts.ops import FactorizedReduce, ReLUConvBN

# The grouped (1x3) and (3x1) convs of the cell's two conv branches.
FIXED_CELL_GROUPS = 8


def input_preprocessing(C_prev_prev: int, C_prev: int, C: int, reduction_prev: bool,
                        affine: bool) -> tuple[nn.Module, nn.Module]:
    """A cell's two input 1x1 convs to C channels; the first halves the resolution (a factorised
    reduce) when the previous cell was a reduction, so both inputs meet at one size."""
    if reduction_prev:
        first = FactorizedReduce(C_prev_prev, C, affine=affine)
    else:
        first = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=affine)
    return first, ReLUConvBN(C_prev, C, 1, 1, 0, affine=affine)


class FixedReductionCell(nn.Module):
    """GDAS-FRC's hand-designed reduction cell: AutoDL-Projects' ``GDAS_Reduction_Cell``
    (xautodl/models/cell_operations.py, lines 432-550) in the search, ``Transition`` of the authors'
    first code (D-X-Y/GDAS before its move into AutoDL-Projects, lib/nas/construct_utils.py lines
    99-152) in the final network, which builds it where a genotype has ``reduce=None``.

    forward: s0 (N, C_prev_prev, H0, W0), s1 (N, C_prev, H, W) -> (N, 4C, H/2, W/2): the concat of
    a factorised conv branch of each preprocessed input (ReLU, 1x3 conv stride (1, 2) and 3x1 conv
    stride (2, 1), both in 8 groups, BN, ReLU, 1x1 conv, BN) and a max pool + BN of each.

    Their convs carry ``bias=not affine``: the search's cell (``affine=False``) keeps the bias in the
    two branches (the first grouped conv's bias reaches the padded second conv, so it is not a no-op);
    the final network's (``affine=True``) has none, as ``Transition``. The 1x1 preprocess convs are
    this code's bias-free ones, whose bias a BN would cancel.
    """

    multiplier = 4
    reduction = True

    def __init__(self, C_prev_prev: int, C_prev: int, C: int, reduction_prev: bool, affine: bool = False):
        super().__init__()
        if C % FIXED_CELL_GROUPS:
            raise DartsError(f"the fixed reduction cell's grouped convs need a channel count divisible by "
                             f"{FIXED_CELL_GROUPS}, got {C}: choose a C (space.C or train.C) with 2 * C a multiple "
                             f"of {FIXED_CELL_GROUPS}")
        self.preprocess0, self.preprocess1 = input_preprocessing(C_prev_prev, C_prev, C, reduction_prev, affine)
        bias = not affine
        self.factorised = nn.ModuleList(nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, (1, 3), stride=(1, 2), padding=(0, 1), groups=FIXED_CELL_GROUPS, bias=bias),
            nn.Conv2d(C, C, (3, 1), stride=(2, 1), padding=(1, 0), groups=FIXED_CELL_GROUPS, bias=bias),
            nn.BatchNorm2d(C, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, 1, bias=bias),
            nn.BatchNorm2d(C, affine=affine)) for _ in range(2))
        self.pools = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1), nn.BatchNorm2d(C, affine=affine)) for _ in range(2))

    def branches(self, s0: torch.Tensor, s1: torch.Tensor) -> list[torch.Tensor]:
        """The four (N, C, H/2, W/2) outputs in concat order: conv of s0, conv of s1, pool of s0, pool of s1."""
        s0, s1 = self.preprocess0(s0), self.preprocess1(s1)
        return [self.factorised[0](s0), self.factorised[1](s1), self.pools[0](s0), self.pools[1](s1)]

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        return concat_channels(self.branches(s0, s1))
