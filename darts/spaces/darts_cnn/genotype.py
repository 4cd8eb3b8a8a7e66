"""The DARTS genotype: the discrete cells that search produces and final training builds.

A genotype holds, for the normal and the reduction cell, a list of
``(op, input)`` pairs, two per intermediate node in node order, and the nodes
whose outputs are concatenated. Input 0 is the cell's first input (c_{k-2}),
1 the second (c_{k-1}), j >= 2 the intermediate node j - 2.

``reduce=None`` says that the reduction cell is GDAS-FRC's fixed one, as the authors' first code
writes its FRC result (D-X-Y/GDAS, lib/nas/genotypes.py ``GDAS_F1``: ``reduce=None,
reduce_concat=[2, 3, 4, 5]``; its networks build ``Transition`` where ``genotype.reduce is None``).
``reduce_concat`` is then kept as written (a valid concat of the normal cell's nodes, or empty) but
unused. Ordinary genotypes read and write as before; an FRC one writes ``reduce=None`` in the string
and ``"reduce": null`` in JSON, and reads back from both.
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


def _validate_unused_concat(concat: tuple[int, ...], steps: int) -> None:
    for index in concat:
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < steps + 2:
            raise DartsError(f"genotype reduce_concat: invalid node index {index!r}; valid 0..{steps + 1} "
                             "(with reduce=None it is not used and may be empty)")


@dataclass(frozen=True)
class Genotype:
    normal: Pairs
    normal_concat: tuple[int, ...]
    reduce: Pairs | None              # None: GDAS-FRC's fixed reduction cell
    reduce_concat: tuple[int, ...]

    def __post_init__(self):
        for name in ("normal", "reduce"):
            if name == "reduce" and self.reduce is None:
                continue
            pairs = tuple((op, idx) for op, idx in getattr(self, name))
            object.__setattr__(self, name, pairs)
        if self.reduce is None and self.reduce_concat is None:
            object.__setattr__(self, "reduce_concat", ())
        for name in ("normal_concat", "reduce_concat"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        _validate_cell("normal", self.normal, self.normal_concat, OPS)
        if self.reduce is None:
            _validate_unused_concat(self.reduce_concat, self.steps)
        else:
            _validate_cell("reduce", self.reduce, self.reduce_concat, OPS)

    @property
    def steps(self) -> int:
        return len(self.normal) // 2

    @property
    def fixed_reduction(self) -> bool:
        """Whether the reduction cell is GDAS-FRC's fixed one (``reduce`` is None)."""
        return self.reduce is None

    def ops(self) -> set[str]:
        return {op for op, _ in self.normal + (self.reduce or ())}

    def cell_graphs(self) -> dict[str, CellGraph]:
        """Each searched cell as a drawable DAG: two inputs, one node per pair of edges, the concat as
        output. A fixed reduction cell is no genotype's cell: only the normal cell is drawn."""
        graphs = {}
        cells = [("normal", self.normal, self.normal_concat)]
        if self.reduce is not None:
            cells.append(("reduce", self.reduce, self.reduce_concat))
        for cell, pairs, concat in cells:
            edges = tuple((node_input, 2 + position // 2, op) for position, (op, node_input) in enumerate(pairs))
            graphs[cell] = CellGraph(inputs=("c_{k-2}", "c_{k-1}"), num_intermediate=len(pairs) // 2, edges=edges,
                                     output="c_{k}", output_sources=tuple(concat))
        return graphs

    # -- serialisation -----------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "normal": [[op, idx] for op, idx in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": None if self.reduce is None else [[op, idx] for op, idx in self.reduce],
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
                reduce=None if data["reduce"] is None else [(op, idx) for op, idx in data["reduce"]],
                reduce_concat=None if data["reduce_concat"] is None else list(data["reduce_concat"]),
            )
        except (TypeError, ValueError) as err:
            raise DartsError(f"malformed genotype JSON: {err}") from None

    @classmethod
    def from_string(cls, text: str) -> "Genotype":
        """The community form ``Genotype(normal=[...], normal_concat=range(2, 6), ...)``."""
        return parse_community_string(text)

    def __str__(self) -> str:
        def pairs(cell):
            if cell is None:
                return "None"
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
# GDAS-FRC's published normal cell with the fixed reduction cell: D-X-Y/GDAS lib/nas/genotypes.py (before
# its move into AutoDL-Projects, commit 34ff796^) ``GDAS_F1``, "Search by normal and fixing reduction",
# without the weights it lists beside each pair.
GDAS_F1 = Genotype(
    [("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 0), ("sep_conv_3x3", 2), ("skip_connect", 0),
     ("sep_conv_3x3", 2), ("skip_connect", 0), ("sep_conv_3x3", 2)], [2, 3, 4, 5], None, [2, 3, 4, 5])
DARTS = DARTS_V2

PUBLISHED = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2, "DARTS": DARTS_V2, "PC_DARTS": PC_DARTS,
             "GDAS_F1": GDAS_F1}


# One op list per edge of a cell, in edge order (node 0's two edges, then node 1's three, ...): column k
# of edge e's weights is the op edge_ops[e][k].
EdgeOps = Sequence[Sequence[str]]
SKIP = "skip_connect"


def _edge_choice(row: Sequence[float], ops: Sequence[str], barred: str | None) -> tuple[float, int] | None:
    """(strength, column) of the strongest op on one edge other than ``none`` and ``barred``; None if
    the edge has no such op. Ties go to the lower column (a strict comparison), as published."""
    best = None
    for k, name in enumerate(ops):
        if name == "none" or name == barred:
            continue
        if best is None or row[k] > row[best]:
            best = k
    return None if best is None else (row[best], best)


def _select_edges(rows: list[list[float]], edge_ops: EdgeOps, steps: int, skipless: set[int],
                  cell: str) -> list[tuple[int, int, int]]:
    """Each node's two strongest edges: (edge, op column, input) in the genotype's order. An edge in
    ``skipless`` is scored without its ``skip_connect`` (P-DARTS's cap took it away)."""
    chosen: list[tuple[int, int, int]] = []
    start = 0
    for node in range(steps):
        options = {}
        for j in range(node + 2):
            choice = _edge_choice(rows[start + j], edge_ops[start + j], SKIP if start + j in skipless else None)
            if choice is not None:
                options[j] = choice
        if len(options) < 2:
            barred = "none and skip_connect" if skipless else "none"
            raise DartsError(f"node {node} of the {cell} cell needs two input edges with an op other than {barred}; "
                             f"only {len(options)} of its {node + 2} edges have one")
        # Python's sort is stable: equal-scoring edges keep their order, so the earlier wins (DARTS's
        # rule; P-DARTS's keep_2_branches sorts ascending and takes the last two, so on an exact tie
        # it keeps the later edge: kept as DARTS's here, so that a cap that binds nothing changes nothing).
        ranked = sorted(options, key=lambda j: -options[j][0])
        chosen.extend((start + j, options[j][1], j) for j in ranked[:2])
        start += node + 2
    return chosen


def _derive_cell(weights: torch.Tensor, edge_ops: EdgeOps, steps: int, cell: str,
                 max_skips: int | None = None) -> list[tuple[str, int]]:
    """The published rule on one cell's weights, shape (edges, ops): per edge its strongest non-``none``
    op, per node the two edges whose strongest op is strongest.

    ``max_skips`` = M: P-DARTS's cap (chenxin061/pdarts train_search.py, the "Restricting skipconnect"
    loop: ``check_sk_number``, ``delete_min_sk_prob``, ``keep_1_on``, ``keep_2_branches``). While the
    cell keeps more than M ``skip_connect`` edges, the kept skip edge whose skip weight is lowest
    (the first such edge on a tie, as ``np.argmin``) loses its skip for good: it stays a candidate with
    its best other op and that op's weight as its strength, and every node's two edges are chosen
    again, so another edge of its node may now win."""
    rows = weights.tolist()
    skipless: set[int] = set()
    chosen = _select_edges(rows, edge_ops, steps, skipless, cell)
    while max_skips is not None:
        skips = sorted(edge for edge, k, _ in chosen if edge_ops[edge][k] == SKIP)
        if len(skips) <= max_skips:
            break
        weakest = min(skips, key=lambda edge: rows[edge][list(edge_ops[edge]).index(SKIP)])
        skipless.add(weakest)
        try:
            chosen = _select_edges(rows, edge_ops, steps, skipless, cell)
        except DartsError as err:
            raise DartsError(f"max_skip_connects={max_skips} cannot be met in the {cell} cell: {err}") from None
    return [(edge_ops[edge][k], source) for edge, k, source in chosen]


def derive_from_weights(weights: dict[str, torch.Tensor], primitives: Sequence[str], steps: int,
                        edge_primitives: dict[str, EdgeOps] | None = None,
                        max_skip_connects: int | None = None) -> Genotype:
    """The published rule on {"normal": (edges, ops), "reduce": (edges, ops)} non-negative weights
    (softmax(alpha), scaled per edge by PC-DARTS's normalised betas where it has them).

    Per node keep the two edges whose strongest non-``none`` op is largest, and on each the
    strongest non-``none`` op. ``edge_primitives`` = {cell: one op list per edge} names each edge's
    columns (RobustDARTS's per-edge spaces); None = ``primitives`` on every edge. ``max_skip_connects``
    caps the normal cell's ``skip_connect`` edges (see :func:`_derive_cell`); the reduction cell is
    never capped."""
    num_edges = sum(node + 2 for node in range(steps))
    cells = []
    for cell in ("normal", "reduce"):
        edge_ops = edge_primitives[cell] if edge_primitives is not None else [list(primitives)] * num_edges
        expected = (num_edges, len(edge_ops[0]))
        cell_weights = torch.as_tensor(weights[cell], dtype=torch.float64).detach().cpu()
        if tuple(cell_weights.shape) != expected or len(edge_ops) != num_edges:
            raise DartsError(f"{cell} weights of shape {tuple(cell_weights.shape)} do not fit {steps} steps and "
                             f"{expected[1]} ops: expected {expected}")
        cells.append(_derive_cell(cell_weights, edge_ops, steps, cell,
                                  max_skip_connects if cell == "normal" else None))
    concat = list(range(2, steps + 2))
    return Genotype(cells[0], concat, cells[1], concat)


def derive_genotype(alphas_normal: torch.Tensor, alphas_reduce: torch.Tensor, primitives=PRIMITIVES,
                    steps: int = 4) -> Genotype:
    """The published derivation from raw alphas, shape (14, len(primitives)) for 4 steps: ``W = softmax(alpha)``
    over every op including ``none``, then :func:`derive_from_weights`."""
    weights = {cell: torch.softmax(torch.as_tensor(alphas, dtype=torch.float64).detach().cpu(), dim=-1)
               for cell, alphas in (("normal", alphas_normal), ("reduce", alphas_reduce))}
    return derive_from_weights(weights, primitives, steps)
