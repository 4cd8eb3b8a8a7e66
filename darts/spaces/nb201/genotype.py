"""The NAS-Bench-201 genotype: one cell of 3 computed nodes, every edge one op (``none`` allowed),
written as the benchmark's architecture strings ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Sequence

import torch

from darts.errors import DartsError
from darts.ops import check_ops
from darts.spaces.graph import CellGraph

NB201_PRIMITIVES = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_NODES = 4  # node 0 = the cell input, node 3 = the cell output
NB201_STEPS = NB201_NODES - 1
# (target, source) of each edge, in the supernet's and the string's order.
NB201_EDGES = tuple((target, source) for target in range(1, NB201_NODES) for source in range(target))
NB201_EDGE_LABELS = tuple(f"{target}<-{source}" for target, source in NB201_EDGES)



NodeInputs = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class NB201Genotype:
    """One NAS-Bench-201 cell: ``nodes[i - 1]`` lists node i's incoming ``(op, source)`` pairs,
    sources 0..i-1 in order. ``none`` is a valid op (the edge contributes zeros)."""

    nodes: tuple[NodeInputs, ...]

    def __post_init__(self):
        try:
            nodes = tuple(tuple((op, source) for op, source in node) for node in self.nodes)
        except (TypeError, ValueError):
            raise DartsError(f"NB201 genotype nodes must be lists of (op, input) pairs, got {self.nodes!r}") from None
        object.__setattr__(self, "nodes", nodes)
        if len(nodes) != NB201_STEPS:
            raise DartsError(f"an NB201 cell has {NB201_STEPS} computed nodes, got {len(nodes)}")
        for target, node in enumerate(nodes, start=1):
            sources = [source for _, source in node]
            if sources != list(range(target)):
                raise DartsError(f"NB201 node {target} must list one edge from each of the nodes 0..{target - 1} "
                                 f"in order, got inputs {sources!r}")
            for op, _ in node:
                if not isinstance(op, str):
                    raise DartsError(f"NB201 op name must be a string, got {op!r}")
                check_ops([op])

    # -- views -------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        return len(self.nodes)

    def edge_ops(self) -> tuple[str, ...]:
        """The 6 ops in edge order (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2)."""
        return tuple(op for node in self.nodes for op, _ in node)

    def cell_graphs(self) -> dict[str, CellGraph]:
        """The one cell as a drawable DAG: node 0 the input, nodes 1-2 intermediate, node 3 the output."""
        edges = tuple((source, target, op) for target, node in enumerate(self.nodes, start=1) for op, source in node)
        return {"cell": CellGraph(inputs=("in",), num_intermediate=NB201_STEPS - 1, edges=edges, output="out")}

    def ops(self) -> set[str]:
        return set(self.edge_ops())

    # -- serialisation ----------------------------------------------------------------------
    def __str__(self) -> str:
        return "+".join("|" + "|".join(f"{op}~{source}" for op, source in node) + "|" for node in self.nodes)

    @classmethod
    def from_string(cls, text: str) -> "NB201Genotype":
        """Parse ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``; every malformation raises DartsError."""
        text = str(text).strip()
        nodes = []
        for node_text in text.split("+"):
            if len(node_text) < 2 or not (node_text.startswith("|") and node_text.endswith("|")):
                raise DartsError(f"malformed NB201 string {text!r}: each node must be written |op~j|...|")
            pairs = []
            for edge_text in node_text[1:-1].split("|"):
                op, tilde, source = edge_text.partition("~")
                if not tilde or not op or not source.isdigit():
                    raise DartsError(f"malformed NB201 string {text!r}: edge {edge_text!r} is not op~input")
                pairs.append((op, int(source)))
            nodes.append(tuple(pairs))
        return cls(tuple(nodes))

    def to_dict(self) -> dict:
        return {"nb201": str(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data) -> "NB201Genotype":
        """From ``{"nb201": "|...|"}`` (what ``to_dict`` writes) or the benchmark's ``{"arch_str": ...}``."""
        if not isinstance(data, Mapping):
            raise DartsError(f"NB201 genotype JSON must be an object, got {type(data).__name__}")
        text = data.get("nb201", data.get("arch_str"))
        if not isinstance(text, str):
            raise DartsError("NB201 genotype JSON needs a string under 'nb201' or 'arch_str'")
        return cls.from_string(text)


def _best_column(row: Sequence[float], barred: int | None = None) -> int | None:
    """The largest entry's index, ``barred`` left out; ties go to the lower index (a strict comparison)."""
    best = None
    for k in range(len(row)):
        if k != barred and (best is None or row[k] > row[best]):
            best = k
    return best


def derive_nb201_genotype(weights: torch.Tensor, edge_ops: Sequence[Sequence[str]],
                          max_skip_connects: int | None = None) -> NB201Genotype:
    """weights (6, ops) -> the genotype with each edge's largest-weight op, ``none`` included;
    ``edge_ops[e][k]`` names column k of edge e (the space's ``edge_ops()["normal"]``: ``primitives``
    on every edge, or each edge's own list).

    Ties go to the lower column (a strict comparison). ``max_skip_connects`` = M: P-DARTS's cap
    (chenxin061/pdarts train_search.py, ``delete_min_sk_prob``) in a cell of one op per edge: while
    more than M edges hold ``skip_connect``, the one whose skip weight is lowest (the first on a tie)
    takes its largest-weight other op, ``none`` included as this space's rule allows it."""
    weights = torch.as_tensor(weights, dtype=torch.float64).detach().cpu()
    widths = {len(ops) for ops in edge_ops}
    if len(edge_ops) != len(NB201_EDGES) or len(widths) != 1 or weights.shape != (len(NB201_EDGES), widths.pop()):
        raise DartsError(f"NB201 weights of shape {tuple(weights.shape)} do not fit 6 edges of "
                         f"{sorted({len(ops) for ops in edge_ops})} ops")
    rows = weights.tolist()
    chosen = [_best_column(row) for row in rows]
    skip_columns = [list(ops).index("skip_connect") if "skip_connect" in ops else None for ops in edge_ops]
    while max_skip_connects is not None:
        skips = [edge for edge, k in enumerate(chosen) if k == skip_columns[edge]]
        if len(skips) <= max_skip_connects:
            break
        weakest = min(skips, key=lambda edge: rows[edge][skip_columns[edge]])
        replacement = _best_column(rows[weakest], barred=skip_columns[weakest])
        if replacement is None:
            raise DartsError(f"max_skip_connects={max_skip_connects} cannot be met: the cell has {len(skips)} "
                             f"skip connections and edge {NB201_EDGE_LABELS[weakest]} no other op to give "
                             f"(its ops: {', '.join(edge_ops[weakest])})")
        chosen[weakest] = replacement
    return genotype_from_edge_ops([edge_ops[edge][k] for edge, k in enumerate(chosen)])


def genotype_from_edge_ops(edge_ops: Sequence[str]) -> NB201Genotype:
    """The genotype with ``edge_ops[k]`` on edge k (edge order as NB201_EDGES)."""
    nodes: list[list[tuple[str, int]]] = [[] for _ in range(NB201_STEPS)]
    for (target, source), op in zip(NB201_EDGES, edge_ops, strict=True):
        nodes[target - 1].append((op, source))
    return NB201Genotype(tuple(tuple(node) for node in nodes))
