"""Per-edge op lists of the DARTS space (``space.edge_primitives``), as RobustDARTS's spaces S1-S4 have
them (automl/RobustDARTS src/spaces.py: ``primitives_normal``/``primitives_reduct``, one op list per edge).

The config holds, per cell type (normal, reduce), one row per edge in edge order (node 0's two edges,
node 1's three, ...), each row that edge's ops; the format and its checks are the shared ones of
:mod:`darts.spaces.edge_lists`. A DARTS edge cannot hold ``none`` alone (a DARTS cell has no ``none``).
"""
from __future__ import annotations

from collections.abc import Sequence

from darts.spaces.edge_lists import EdgeOps, column_labels, parse_edge_lists

CELL_TYPES = ("normal", "reduce")
__all__ = ["CELL_TYPES", "EdgeOps", "column_labels", "parse_edge_primitives"]


def parse_edge_primitives(raw, primitives: Sequence[str], edge_labels: Sequence[str]) -> dict[str, EdgeOps]:
    """{cell type: one op tuple per edge} of the normal and the reduction cell (see
    :func:`~darts.spaces.edge_lists.parse_edge_lists`)."""
    return parse_edge_lists(raw, primitives, edge_labels, CELL_TYPES)
