"""The DARTS genotype: the discrete cells that search produces and final training builds.

A genotype holds, for the normal and the reduction cell, a list of
``(op, input)`` pairs, two per intermediate node in node order, and the nodes
whose outputs are concatenated. Input 0 is the cell's first input (c_{k-2}),
1 the second (c_{k-1}), j >= 2 the intermediate node j - 2.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Sequence

import torch

from darts.errors import DartsError
from darts.ops import OPS, check_ops
from darts.spaces.graph import CellGraph

PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

Pairs = tuple[tuple[str, int], ...]


def _validate_cell(kind: str, pairs: Pairs, concat: tuple[int, ...], allowed_ops) -> None:
    if not pairs or len(pairs) % 2:
        raise DartsError(f"genotype {kind} cell needs two (op, input) pairs per node, got {len(pairs)} pairs")
    steps = len(pairs) // 2
    for position, (op, node_input) in enumerate(pairs):
        if not isinstance(op, str):
            raise DartsError(f"genotype {kind} cell: op name must be a string, got {op!r}")
        if op == "none":
            raise DartsError(f"genotype {kind} cell: 'none' cannot be a chosen op")
        check_ops([op], allowed_ops)
        node = position // 2
        if not isinstance(node_input, int) or isinstance(node_input, bool) or not 0 <= node_input < node + 2:
            raise DartsError(
                f"genotype {kind} cell: node {node} cannot take input {node_input!r}; valid inputs are 0..{node + 1}")
    for index in concat:
        if not isinstance(index, int) or not 0 <= index < steps + 2:
            raise DartsError(f"genotype {kind}_concat: invalid node index {index!r}; valid 0..{steps + 1}")


@dataclass(frozen=True)
class Genotype:
    normal: Pairs
    normal_concat: tuple[int, ...]
    reduce: Pairs
    reduce_concat: tuple[int, ...]

    def __post_init__(self):
        for name in ("normal", "reduce"):
            pairs = tuple((op, idx) for op, idx in getattr(self, name))
            object.__setattr__(self, name, pairs)
        for name in ("normal_concat", "reduce_concat"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        _validate_cell("normal", self.normal, self.normal_concat, OPS)
        _validate_cell("reduce", self.reduce, self.reduce_concat, OPS)

    @property
    def steps(self) -> int:
        return len(self.normal) // 2

    def ops(self) -> set[str]:
        return {op for op, _ in self.normal + self.reduce}

    def cell_graphs(self) -> dict[str, CellGraph]:
        """Each cell as a drawable DAG: two inputs, one node per pair of edges, the concat as output."""
        graphs = {}
        for cell, pairs, concat in (("normal", self.normal, self.normal_concat),
                                    ("reduce", self.reduce, self.reduce_concat)):
            edges = tuple((node_input, 2 + position // 2, op) for position, (op, node_input) in enumerate(pairs))
            graphs[cell] = CellGraph(inputs=("c_{k-2}", "c_{k-1}"), num_intermediate=len(pairs) // 2, edges=edges,
                                     output="c_{k}", output_sources=tuple(concat))
        return graphs

    # -- serialisation -----------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "normal": [[op, idx] for op, idx in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, idx] for op, idx in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict) -> "Genotype":
        try:
            missing = {"normal", "normal_concat", "reduce", "reduce_concat"} - set(data)
        except TypeError:
            raise DartsError(f"genotype JSON must be an object, got {type(data).__name__}") from None
        if missing:
            raise DartsError(f"genotype JSON lacks key(s): {', '.join(sorted(missing))}")
        try:
            return cls(
                normal=[(op, idx) for op, idx in data["normal"]],
                normal_concat=list(data["normal_concat"]),
                reduce=[(op, idx) for op, idx in data["reduce"]],
                reduce_concat=list(data["reduce_concat"]),
            )
        except (TypeError, ValueError) as err:
            raise DartsError(f"malformed genotype JSON: {err}") from None

    @classmethod
    def from_string(cls, text: str) -> "Genotype":
        """The community form ``Genotype(normal=[...], normal_concat=range(2, 6), ...)``."""
        return parse_community_string(text)

    def __str__(self) -> str:
        def pairs(cell):
            return "[" + ", ".join(f"('{op}', {idx})" for op, idx in cell) + "]"

        return (f"Genotype(normal={pairs(self.normal)}, normal_concat={list(self.normal_concat)}, "
                f"reduce={pairs(self.reduce)}, reduce_concat={list(self.reduce_concat)})")


_RANGE = re.compile(r"range\(\s*(-?\d+)\s*,\s*(-?\d+)\s*\)")


def parse_community_string(text: str) -> Genotype:
    """Parse ``Genotype(normal=[...], normal_concat=..., ...)`` without ``eval``."""
    expanded = _RANGE.sub(lambda m: repr(list(range(int(m.group(1)), int(m.group(2))))), text.strip())
    try:
        tree = ast.parse(expanded, mode="eval").body
    except SyntaxError as err:
        raise DartsError(f"malformed genotype string: {err.msg} in {text[:80]!r}") from None
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == "Genotype"
            and not tree.args):
        raise DartsError(f"malformed genotype string: expected Genotype(normal=..., ...), got {text[:80]!r}")
    fields = {}
    for keyword in tree.keywords:
        try:
            fields[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:
            raise DartsError(f"malformed genotype string: field {keyword.arg!r} is not a literal") from None
    extra = set(fields) - {"normal", "normal_concat", "reduce", "reduce_concat"}
    if extra:
        raise DartsError(f"malformed genotype string: unknown field(s) {', '.join(sorted(extra))}")
    return Genotype.from_dict(fields)


def _g(normal: str, reduce: str) -> Genotype:
    def pairs(spec):
        tokens = spec.split(",")
        return [(tok.split()[0], int(tok.split()[1])) for tok in tokens]

    return Genotype(pairs(normal), [2, 3, 4, 5], pairs(reduce), [2, 3, 4, 5])


DARTS_V1 = _g(
    "sep_conv_3x3 1, sep_conv_3x3 0, skip_connect 0, sep_conv_3x3 1, skip_connect 0, sep_conv_3x3 1, "
    "sep_conv_3x3 0, skip_connect 2",
    "max_pool_3x3 0, max_pool_3x3 1, skip_connect 2, max_pool_3x3 0, max_pool_3x3 0, skip_connect 2, "
    "skip_connect 2, avg_pool_3x3 0",
)
DARTS_V2 = _g(
    "sep_conv_3x3 0, sep_conv_3x3 1, sep_conv_3x3 0, sep_conv_3x3 1, sep_conv_3x3 1, skip_connect 0, "
    "skip_connect 0, dil_conv_3x3 2",
    "max_pool_3x3 0, max_pool_3x3 1, skip_connect 2, max_pool_3x3 1, max_pool_3x3 0, skip_connect 2, "
    "skip_connect 2, max_pool_3x3 1",
)
PC_DARTS = _g(
    "sep_conv_3x3 1, skip_connect 0, sep_conv_3x3 0, dil_conv_3x3 1, sep_conv_5x5 0, sep_conv_3x3 1, "
    "avg_pool_3x3 0, dil_conv_3x3 1",
    "sep_conv_5x5 1, max_pool_3x3 0, sep_conv_5x5 1, sep_conv_5x5 2, sep_conv_3x3 0, sep_conv_3x3 3, "
    "sep_conv_3x3 1, sep_conv_3x3 2",
)
DARTS = DARTS_V2

PUBLISHED = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2, "DARTS": DARTS_V2, "PC_DARTS": PC_DARTS}


def _derive_cell(weights: torch.Tensor, primitives: Sequence[str], steps: int) -> list[tuple[str, int]]:
    """The published rule on one cell's softmax weights, shape (edges, ops)."""
    none_index = primitives.index("none") if "none" in primitives else None
    candidates = [k for k in range(len(primitives)) if k != none_index]
    rows = weights.tolist()
    pairs: list[tuple[str, int]] = []
    start = 0
    for node in range(steps):
        edges = rows[start:start + node + 2]
        # Python's sort is stable: equal-scoring edges keep their order, so the earlier wins.
        ranked = sorted(range(node + 2), key=lambda j: -max(edges[j][k] for k in candidates))
        for j in ranked[:2]:
            best = candidates[0]
            for k in candidates[1:]:
                if edges[j][k] > edges[j][best]:  # strict: ties go to the lower op index
                    best = k
            pairs.append((primitives[best], j))
        start += node + 2
    return pairs


def derive_from_weights(weights: dict[str, torch.Tensor], primitives: Sequence[str], steps: int) -> Genotype:
    """The published rule on {"normal": (edges, ops), "reduce": (edges, ops)} non-negative weights
    (softmax(alpha), scaled per edge by PC-DARTS's normalised betas where it has them).

    Per node keep the two edges whose strongest non-``none`` op is largest, and on each the
    strongest non-``none`` op."""
    primitives = list(primitives)
    expected = (sum(node + 2 for node in range(steps)), len(primitives))
    cells = []
    for cell in ("normal", "reduce"):
        cell_weights = torch.as_tensor(weights[cell], dtype=torch.float64).detach().cpu()
        if tuple(cell_weights.shape) != expected:
            raise DartsError(f"{cell} weights of shape {tuple(cell_weights.shape)} do not fit {steps} steps and "
                             f"{len(primitives)} ops: expected {expected}")
        cells.append(_derive_cell(cell_weights, primitives, steps))
    concat = list(range(2, steps + 2))
    return Genotype(cells[0], concat, cells[1], concat)


def derive_genotype(alphas_normal: torch.Tensor, alphas_reduce: torch.Tensor, primitives=PRIMITIVES,
                    steps: int = 4) -> Genotype:
    """The published derivation from raw alphas, shape (14, len(primitives)) for 4 steps: ``W = softmax(alpha)``
    over every op including ``none``, then :func:`derive_from_weights`."""
    weights = {cell: torch.softmax(torch.as_tensor(alphas, dtype=torch.float64).detach().cpu(), dim=-1)
               for cell, alphas in (("normal", alphas_normal), ("reduce", alphas_reduce))}
    return derive_from_weights(weights, primitives, steps)
