"""A discrete cell as a drawable DAG: what every space's genotype hands to ``darts.viz``.

Node ids: the cell's inputs first (``0 .. len(inputs)-1``), then the intermediate nodes
(``len(inputs) .. len(inputs)+num_intermediate-1``), then the output node (one id past the last
intermediate). An edge carries an op; the output node either receives op edges itself (NAS-Bench-201,
whose last node is the output) or concatenates ``output_sources`` (DARTS, plain arrows).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CellGraph:
    inputs: tuple[str, ...]                  # input node labels, e.g. ("c_{k-2}", "c_{k-1}")
    num_intermediate: int                    # intermediate nodes, labelled 0 .. num_intermediate-1
    edges: tuple[tuple[int, int, str], ...]  # (source id, target id, op name), in the space's edge order
    output: str = "c_{k}"                    # output node label
    output_sources: tuple[int, ...] = ()     # node ids joined into the output without an op (concat)

    @property
    def output_id(self) -> int:
        return len(self.inputs) + self.num_intermediate

    @property
    def num_nodes(self) -> int:
        return self.output_id + 1
