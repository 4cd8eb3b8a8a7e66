"""Architecture parameters, owned by the strategy (as a controller), never by the supernet."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


class ArchParameters(nn.Module):
    """Per cell type an alpha matrix (edges, ops) and, with ``edge_betas``, one beta per edge (PC-DARTS
    edge normalisation). Parameters are named ``alphas_<cell>`` and ``betas_<cell>``.

    Initialised as the original code does, ``init_scale * randn``: every alpha matrix first, in cell-type
    order, then every beta vector, so a search without betas draws the same alphas as one with them.
    """

    def __init__(self, shapes: dict[str, tuple[int, int]], init_scale: float = 1e-3, edge_betas: bool = False):
        super().__init__()
        self.cell_types = tuple(shapes)
        for cell, shape in shapes.items():
            self.register_parameter(f"alphas_{cell}", nn.Parameter(init_scale * torch.randn(shape)))
        self.has_betas = edge_betas
        if edge_betas:
            for cell, (edges, _) in shapes.items():
                self.register_parameter(f"betas_{cell}", nn.Parameter(init_scale * torch.randn(edges)))

    def alphas(self) -> dict[str, nn.Parameter]:
        """{cell type: (edges, ops)}."""
        return {cell: getattr(self, f"alphas_{cell}") for cell in self.cell_types}

    def betas(self) -> dict[str, nn.Parameter]:
        """{cell type: (edges,)}; empty without edge normalisation."""
        if not self.has_betas:
            return {}
        return {cell: getattr(self, f"betas_{cell}") for cell in self.cell_types}

    def record(self) -> dict[str, list]:
        """Every parameter as nested lists, by name (results.json)."""
        return {name: p.detach().cpu().tolist() for name, p in self.named_parameters()}


def softmax_per_group(edge_logits: torch.Tensor, groups: Sequence[range]) -> torch.Tensor:
    """(edges,) -> (edges,): a softmax over each group of edges (each node's inputs: PC-DARTS edge
    normalisation)."""
    return torch.cat([torch.softmax(edge_logits[group.start:group.stop], dim=-1) for group in groups])
