"""The DARTS recurrent genotype (Liu et al., 2019, Penn Treebank): one cell of ``steps`` nodes.

Node 0 is the cell's first state, computed from x_t and h_{t-1}; node i (1..steps) reads one earlier
node j < i through one op. ``recurrent`` lists ``(op, j)`` for nodes 1..steps in order; ``concat``
lists the nodes whose mean is the cell output h_t (``range(1, 9)``: every intermediate node). The
string form is the community one of quark0/darts rnn/genotypes.py (lines 3, 32-33):
``Genotype(recurrent=[('sigmoid', 0), ...], concat=range(1, 9))``.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Sequence

import torch

from darts.errors import DartsError
from darts.spaces.graph import CellGraph

# rnn/genotypes.py lines 5-13: the ops, and 8 intermediate nodes averaged into the output.
RNN_PRIMITIVES = ("none", "tanh", "relu", "sigmoid", "identity")
RNN_OPS = RNN_PRIMITIVES[1:]           # the ops a chosen edge may carry (never `none`)
RNN_STEPS = 8
INPUT_NAMES = ("x_{t}", "h_{t-1}")

Pairs = tuple[tuple[str, int], ...]


def check_cell(recurrent: Pairs, concat: tuple[int, ...]) -> None:
    """DartsError unless every node i reads one earlier node through a known op and ``concat``
    names nodes of the cell."""
    if not recurrent:
        raise DartsError("a recurrent genotype needs at least one (op, input) pair")
    for position, pair in enumerate(recurrent):
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise DartsError(f"recurrent genotype: node {position + 1} must be one (op, input) pair, got {pair!r}")
        op, source = pair
        if op not in RNN_OPS:
            raise DartsError(f"recurrent genotype: unknown op {op!r} at node {position + 1}; "
                             f"valid choices: {', '.join(RNN_OPS)}")
        if isinstance(source, bool) or not isinstance(source, int) or not 0 <= source <= position:
            raise DartsError(f"recurrent genotype: node {position + 1} cannot read node {source!r}; "
                             f"valid inputs are 0..{position}")
    if not concat:
        raise DartsError("recurrent genotype: concat names no node to average into the output")
    for node in concat:
        if isinstance(node, bool) or not isinstance(node, int) or not 0 <= node <= len(recurrent):
            raise DartsError(f"recurrent genotype: concat node {node!r} is not one of 0..{len(recurrent)}")


@dataclass(frozen=True)
class RecurrentGenotype:
    recurrent: Pairs
    concat: tuple[int, ...]

    def __post_init__(self):
        try:
            pairs = tuple(tuple(pair) for pair in self.recurrent)
            concat = tuple(self.concat)
        except TypeError:
            raise DartsError(f"malformed recurrent genotype: {self.recurrent!r}, concat {self.concat!r}") from None
        object.__setattr__(self, "recurrent", pairs)
        object.__setattr__(self, "concat", concat)
        check_cell(pairs, concat)

    @property
    def steps(self) -> int:
        return len(self.recurrent)

    def ops(self) -> set[str]:
        return {op for op, _ in self.recurrent}

    def cell_graphs(self) -> dict[str, CellGraph]:
        """The cell drawn as rnn/visualize.py draws it: x_t and h_{t-1} into node 0 (its tanh highway),
        each node from its input through its op, the mean of ``concat`` as h_t."""
        first = len(INPUT_NAMES)   # graph id of node 0
        edges = [(0, first, "tanh"), (1, first, "tanh")]
        edges += [(first + source, first + node, op) for node, (op, source) in enumerate(self.recurrent, start=1)]
        return {"recurrent": CellGraph(inputs=INPUT_NAMES, num_intermediate=self.steps + 1, edges=tuple(edges),
                                       output="h_{t}", output_sources=tuple(first + node for node in self.concat))}

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"recurrent": [[op, source] for op, source in self.recurrent], "concat": list(self.concat)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data) -> "RecurrentGenotype":
        if not isinstance(data, dict):
            raise DartsError(f"recurrent genotype JSON must be an object, got {type(data).__name__}")
        missing = {"recurrent", "concat"} - set(data)
        if missing:
            raise DartsError(f"recurrent genotype JSON lacks key(s): {', '.join(sorted(missing))}")
        try:
            return cls(recurrent=[tuple(pair) for pair in data["recurrent"]], concat=list(data["concat"]))
        except TypeError as err:
            raise DartsError(f"malformed recurrent genotype JSON: {err}") from None

    @classmethod
    def from_string(cls, text: str) -> "RecurrentGenotype":
        return parse_recurrent_string(text)

    def __str__(self) -> str:
        pairs = ", ".join(f"('{op}', {source})" for op, source in self.recurrent)
        concat = list(self.concat)
        contiguous = concat == list(range(concat[0], concat[-1] + 1))
        concat_text = f"range({concat[0]}, {concat[-1] + 1})" if contiguous else str(concat)
        return f"Genotype(recurrent=[{pairs}], concat={concat_text})"


_RANGE = re.compile(r"range\(\s*(-?\d+)\s*,\s*(-?\d+)\s*\)")


def parse_recurrent_string(text: str) -> RecurrentGenotype:
    """``Genotype(recurrent=[('sigmoid', 0), ...], concat=range(1, 9))`` without ``eval``."""
    expanded = _RANGE.sub(lambda m: repr(list(range(int(m.group(1)), int(m.group(2))))), str(text).strip())
    try:
        tree = ast.parse(expanded, mode="eval").body
    except SyntaxError as err:
        raise DartsError(f"malformed recurrent genotype string: {err.msg} in {text[:80]!r}") from None
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == "Genotype"
            and not tree.args):
        raise DartsError(f"malformed recurrent genotype string: expected Genotype(recurrent=..., concat=...), "
                         f"got {text[:80]!r}")
    fields = {}
    for keyword in tree.keywords:
        try:
            fields[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:
            raise DartsError(f"malformed recurrent genotype string: field {keyword.arg!r} is not a literal") from None
    extra = set(fields) - {"recurrent", "concat"}
    if extra:
        raise DartsError(f"malformed recurrent genotype string: unknown field(s) {', '.join(sorted(extra))} "
                         "(a CNN genotype? this is the recurrent space)")
    return RecurrentGenotype.from_dict(fields)


def _published(pairs: str) -> RecurrentGenotype:
    return RecurrentGenotype([(item.split()[0], int(item.split()[1])) for item in pairs.split(",")],
                             range(1, RNN_STEPS + 1))


# rnn/genotypes.py lines 32-33.
DARTS_V1 = _published("relu 0, relu 1, tanh 2, relu 3, relu 4, identity 1, relu 5, relu 1")
DARTS_V2 = _published("sigmoid 0, relu 1, relu 1, identity 1, tanh 2, sigmoid 5, tanh 3, relu 5")
PUBLISHED = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2, "DARTS": DARTS_V2}


def derive_recurrent(weights: torch.Tensor, primitives: Sequence[str], steps: int) -> RecurrentGenotype:
    """The published rule (rnn/model_search.py ``genotype``, lines 75-95) on (edges, ops) weights
    (softmax over every op, ``none`` included): node i keeps the one input j whose strongest
    non-``none`` op weight is largest (the first such j on a tie: a stable sort), with that op (the
    first column on a tie: a strict comparison)."""
    num_edges = steps * (steps + 1) // 2
    weights = torch.as_tensor(weights, dtype=torch.float64).detach().cpu()
    if tuple(weights.shape) != (num_edges, len(primitives)):
        raise DartsError(f"recurrent weights of shape {tuple(weights.shape)} do not fit {steps} nodes and "
                         f"{len(primitives)} ops: expected ({num_edges}, {len(primitives)})")
    live = [k for k, name in enumerate(primitives) if name != "none"]
    if not live:
        raise DartsError("a recurrent genotype needs an op other than 'none' in space.primitives")
    rows = weights.tolist()
    pairs, start = [], 0
    for node in range(steps):
        node_rows = rows[start:start + node + 1]
        best_ops = []
        for row in node_rows:
            best = live[0]
            for k in live[1:]:
                if row[k] > row[best]:
                    best = k
            best_ops.append(best)
        source = sorted(range(node + 1), key=lambda j: -node_rows[j][best_ops[j]])[0]
        pairs.append((primitives[best_ops[source]], source))
        start += node + 1
    return RecurrentGenotype(pairs, range(1, steps + 1))
