"""The fast-path switches a module can take, and the one documented way they reach it.

The runtime (``darts.runtime.Runtime.prepare``) builds one :class:`FastPathOptions` and calls
:func:`apply_fast_path` on the model; every submodule that defines ``configure_fast_path(options)``
reads the switches it cares about. No caller sets another module's attributes, and a new module
type with a fast path of its own only implements that method.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class FastPathOptions:
    fused_mixed_ops: bool = False       # a mixed op shares one activation between ops that start with the same one
    depthwise_conv_grads: bool = False  # depthwise-conv gradients as forward convolutions (darts.kernels)
    checkpoint_cells: bool = False      # recompute each cell's activations in backward instead of storing them
    shared_cell_edges: bool = False     # a discrete cell's edges that read one state share what they compute alike


PLAIN = FastPathOptions()


def apply_fast_path(model: nn.Module, options: FastPathOptions) -> None:
    """Hand ``options`` to every submodule of ``model`` (itself included) that takes them."""
    for module in model.modules():
        configure = getattr(module, "configure_fast_path", None)
        if callable(configure):
            configure(options)


class CellCheckpointing:
    """For a network of cells (a module mixin): takes ``checkpoint_cells`` from the fast-path options;
    ``recomputes_cells()`` says whether this forward should recompute each cell in backward (training
    with gradients only)."""

    checkpoint_cells = False

    def configure_fast_path(self, options: FastPathOptions) -> None:
        self.checkpoint_cells = options.checkpoint_cells

    def recomputes_cells(self) -> bool:
        return self.checkpoint_cells and self.training and torch.is_grad_enabled()
