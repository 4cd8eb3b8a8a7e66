"""Carry a candidate op's weights into the same op built with more channels (DrNAS's K change).

When a partial-channel supernet lowers K (DrNAS: 6 -> 4), every op of an edge runs on C/K channels
instead of C/K_old. DrNAS widens each op in place (xiangning-chen/DrNAS net2wider.py
``InChannelWider``/``OutChannelWider``/``BNWider`` and the ``wider`` methods of
DARTS-space/operations.py lines 39-206): a widened dimension keeps the old channels and appends
copies of randomly drawn ones (``torch.randint`` over the old count), a depthwise conv's drawn output
channels are also the next pointwise conv's input channels, and the BN after a conv takes that conv's
drawn output channels. We build the op afresh at the new width and fill it by the same rule.

The NAS-Bench-201 ops (201-space/cell_operations.py, widened by search_cells.py
``NAS201SearchCell_PartialChannel.wider``, lines 179-183) follow the same rules: ``nor_conv_1x1`` and
``nor_conv_3x3`` are ReLU-conv-BN (``ReLUConvBN.wider``, lines 45-52: conv in and out drawn, the BN
after it takes the conv's drawn output channels); ``avg_pool_3x3`` at equal in and out width has no
preprocess conv and nothing to widen (``POOLING.wider``, lines 136-138), nor have ``skip_connect`` (an
identity, lines 149-150) and ``none`` (lines 175-176). The residual reduction blocks lie outside the
edges and keep their width.

A widening is a :data:`Widening`: the ``(dim, index)`` steps that turn the old tensor into the new
one, ``new = cat([old, old.index_select(dim, index)], dim)`` per step. The same steps widen the
tensor's optimizer state (the momentum buffer), as DrNAS's ``configure_optimizer`` does.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from darts.errors import DartsError
from darts.ops import DilConv, FactorizedReduce, ReLUConvBN, SepConv

Widening = list[tuple[int, torch.Tensor]]


def widen(tensor: torch.Tensor, steps: Widening) -> torch.Tensor:
    """``tensor`` with each step's drawn slices appended along its dim."""
    for dim, index in steps:
        tensor = torch.cat([tensor, tensor.index_select(dim, index.to(tensor.device))], dim=dim)
    return tensor


def draw(old: int, new: int) -> torch.Tensor:
    """``new - old`` channel indices drawn uniformly from ``range(old)`` (DrNAS: ``torch.randint``)."""
    return torch.randint(0, old, (new - old,))


class Plan:
    """{new tensor: (old tensor, widening)} for the parameters and buffers of one op."""

    def __init__(self):
        self.entries: list[tuple[torch.Tensor, torch.Tensor, Widening]] = []

    def add(self, new: torch.Tensor, old: torch.Tensor, steps: Widening) -> None:
        self.entries.append((new, old, steps))

    def batch_norm(self, new: nn.BatchNorm2d, old: nn.BatchNorm2d, index: torch.Tensor | None) -> None:
        """DrNAS ``BNWider``: running stats (and affine weights) cat their ``index`` entries; None: drawn."""
        if index is None:
            index = draw(old.num_features, new.num_features)
        for name in ("running_mean", "running_var", "weight", "bias"):
            if getattr(new, name, None) is not None:
                self.add(getattr(new, name), getattr(old, name), [(0, index)])
        if new.num_batches_tracked is not None:
            self.add(new.num_batches_tracked, old.num_batches_tracked, [])

    def conv(self, new: nn.Conv2d, old: nn.Conv2d, in_index: torch.Tensor | None, widen_in: bool) -> torch.Tensor:
        """DrNAS ``InChannelWider`` (dim 1, with ``in_index`` or drawn) then ``OutChannelWider`` (dim 0,
        drawn); returns the drawn output channels. A depthwise conv (``widen_in`` False) widens dim 0 only."""
        steps: Widening = []
        if widen_in:
            if in_index is None:
                in_index = draw(old.in_channels, new.in_channels)
            steps.append((1, in_index))
        out_index = draw(old.out_channels, new.out_channels)
        steps.append((0, out_index))
        self.add(new.weight, old.weight, steps)
        return out_index

    def dil_conv(self, new: DilConv, old: DilConv) -> None:
        """DrNAS ``DilConv.wider``: depthwise out -> pointwise in (same channels), pointwise out -> BN."""
        depthwise = self.conv(new[1], old[1], None, widen_in=False)
        pointwise = self.conv(new[2], old[2], depthwise, widen_in=True)
        self.batch_norm(new[3], old[3], pointwise)


def widening_plan(new: nn.Module, old: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor, Widening]]:
    """How each parameter and buffer of ``new`` (an op at the new width) comes from ``old`` (the same
    op at the old width). An op whose tensors all keep their shapes is copied (empty widenings)."""
    plan = Plan()
    if all(a.shape == b.shape for a, b in zip(new.state_dict().values(), old.state_dict().values())):
        for new_tensor, old_tensor in zip(tensors(new), tensors(old)):
            plan.add(new_tensor, old_tensor, [])
    elif isinstance(new, SepConv):       # SepConv.wider: two DilConv blocks, drawn independently
        plan.dil_conv(new[0], old[0])
        plan.dil_conv(new[1], old[1])
    elif isinstance(new, DilConv):
        plan.dil_conv(new, old)
    elif isinstance(new, ReLUConvBN):    # ReLUConvBN.wider (NB201's nor_conv_*): conv in/out drawn, BN follows
        plan.batch_norm(new[2], old[2], plan.conv(new[1], old[1], None, widen_in=True))
    elif isinstance(new, FactorizedReduce):
        # FactorizedReduce.wider: each conv's in and out drawn; the BN cats the old BN's entries at
        # cat([index1, index2]), both index sets over the first conv's half, as their code does.
        first = plan.conv(new.conv_1, old.conv_1, None, widen_in=True)
        second = plan.conv(new.conv_2, old.conv_2, None, widen_in=True)
        plan.batch_norm(new.bn, old.bn, torch.cat([first, second]))
    elif isinstance(new, nn.Sequential) and len(new) == 2 and isinstance(new[1], nn.BatchNorm2d):
        plan.batch_norm(new[1], old[1], None)   # AvgPoolBN / MaxPoolBN.wider: the BN's entries drawn
    else:
        raise DartsError(f"cannot carry the weights of a {type(new).__name__} op to another width "
                         "(widenable: sep/dil convs, ReLU-conv-BN (nor_conv_1x1/3x3), factorized reduce, "
                         "pool + BN, ops without weights)")
    return plan.entries


def tensors(module: nn.Module) -> list[torch.Tensor]:
    return list(module.parameters()) + list(module.buffers())
