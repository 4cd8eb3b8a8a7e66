"""Search spaces: which supernet a search builds and from which ops."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from darts.errors import DartsError, choices_message
from darts.nb201 import build_nb201_space
from darts.ops import check_ops
from darts.supernet import MixedOp, SuperNet


def _darts_space(space, num_classes: int, in_channels: int, mixed_op: Callable[..., nn.Module],
                 edge_normalization: bool = False) -> nn.Module:
    return SuperNet(C=space.C, num_classes=num_classes, layers=space.layers, steps=space.steps,
                    multiplier=space.multiplier, stem_multiplier=space.stem_multiplier,
                    primitives=list(space.primitives), in_channels=in_channels, mixed_op=mixed_op,
                    stem_stride=space.get("stem_stride", 1), edge_normalization=edge_normalization)


# Each builder: (space config, num_classes, in_channels, mixed_op, edge_normalization=False) -> supernet.
SPACES: dict[str, Callable[..., nn.Module]] = {"darts": _darts_space, "nb201": build_nb201_space}


def build_supernet(space, num_classes: int, in_channels: int, mixed_op: Callable[..., nn.Module] = MixedOp,
                   edge_normalization: bool = False):
    """The supernet of the space named ``space.name``, restricted to ``space.primitives``.

    ``mixed_op`` builds each edge (PC-DARTS passes its partial-channel op); ``edge_normalization``
    adds the PC-DARTS per-edge betas."""
    if space.name not in SPACES:
        raise DartsError(choices_message("search space", space.name, SPACES))
    primitives = list(space.primitives)
    if not primitives:
        raise DartsError("search space needs at least one op in space.primitives")
    if len(set(primitives)) != len(primitives):
        raise DartsError(f"space.primitives lists an op twice: {primitives}")
    check_ops(primitives)
    if edge_normalization:
        return SPACES[space.name](space, num_classes, in_channels, mixed_op, edge_normalization=True)
    return SPACES[space.name](space, num_classes, in_channels, mixed_op)
