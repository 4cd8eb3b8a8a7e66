"""A discrete cell's edges that read the same state and start alike, computed once (a fast path).

In a discrete cell several edges often read one state: in DARTS_V2's normal cell three ReLU-first
convolutions read input 1, and a searched cell may hold the same pool on one input four times. The
plain forward runs every edge on its own; :class:`EdgeSharing` lets a cell compute

* each activation (:func:`darts.ops.activation_signature`) of a state once, for every edge whose op
  starts with it (``op.forward_activated`` takes the activation's output), and
* each parameter-free, deterministic op of a state once, for every edge that holds it.

Both are exact rewrites of the same function: the forward values are the plain ones bit for bit, and
the backward sums the edges' gradients before one activation backward instead of after several,
which changes only the order of float additions. Only a key that two or more edges share is kept;
every other edge runs its own forward, as published.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from darts.fastpath import FastPathOptions
from darts.ops import activation_signature, has_random_output

SharingKey = tuple[str, int, str]


def _is_pure_function(op: nn.Module) -> bool:
    """No parameters, no buffers, no random draw: two copies compute the same output from one input."""
    return next(op.parameters(), None) is None and next(op.buffers(), None) is None and not has_random_output(op)


def sharing_keys(ops: Sequence[nn.Module], op_names: Sequence[str],
                 inputs: Sequence[int]) -> tuple[SharingKey | None, ...]:
    """One key per edge: ``("output", state, op name)`` for a parameter-free op, ``("activation", state,
    signature)`` for an op that starts with an activation, None where no other edge shares it.

    ``ops[k]`` named ``op_names[k]`` reads state ``inputs[k]``. Two edges of one cell that read the same
    state with the same op name are built alike (same channels, same stride), so the name identifies
    a parameter-free op's function.
    """
    keys: list[SharingKey | None] = []
    for op, name, state in zip(ops, op_names, inputs):
        signature = activation_signature(op)
        if _is_pure_function(op):
            keys.append(("output", state, name))
        elif signature is not None:
            keys.append(("activation", state, signature))
        else:
            keys.append(None)
    return tuple(key if key is not None and keys.count(key) > 1 else None for key in keys)


class EdgeSharing:
    """The sharing plan of one cell's edges; :meth:`run` computes an edge from the shared values.

    ``memo`` is a dict the cell makes afresh for each forward pass, so nothing outlives the pass.
    """

    def __init__(self, ops: Sequence[nn.Module], op_names: Sequence[str], inputs: Sequence[int]):
        self.keys = sharing_keys(ops, op_names, inputs)

    @property
    def shares_anything(self) -> bool:
        return any(key is not None for key in self.keys)

    def run(self, edge: int, op: nn.Module, state: torch.Tensor, memo: dict | None) -> torch.Tensor:
        """Edge ``edge``'s op on its input ``state``: (N, C, H, W) -> the op's output; ``memo`` None runs
        the op's own forward (the plain path)."""
        key = self.keys[edge]
        if key is None or memo is None:
            return op(state)
        if key[0] == "output":
            if key not in memo:
                memo[key] = op(state)
            return memo[key]
        if key not in memo:
            memo[key] = op.activation(state)
        return op.forward_activated(memo[key])


class SharedEdgesCell:
    """For a discrete cell (a module mixin): :meth:`plan_sharing` once its ops are built, then
    ``self.sharing.run(edge, op, state, self.edge_memo())`` per edge and pass. Takes
    ``shared_cell_edges`` from the fast-path options; ``edge_memo()`` is None on the plain path."""

    sharing: EdgeSharing
    share_edges = False

    def plan_sharing(self, ops: Sequence[nn.Module], op_names: Sequence[str], inputs: Sequence[int]) -> None:
        self.sharing = EdgeSharing(ops, op_names, inputs)

    def configure_fast_path(self, options: FastPathOptions) -> None:
        self.share_edges = options.shared_cell_edges and self.sharing.shares_anything

    def edge_memo(self) -> dict | None:
        """A fresh memo for one forward pass, or None (every edge runs its own forward)."""
        return {} if self.share_edges else None
