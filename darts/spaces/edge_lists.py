"""Per-edge op lists (``space.edge_primitives``): each edge of a cell its own ops, in any space.

RobustDARTS's spaces S1-S4 give every edge of the DARTS cells its own list (automl/RobustDARTS
src/spaces.py ``primitives_normal``/``primitives_reduct``); a progressive search (DrNAS,
:mod:`darts.stages`) prunes each edge to its strongest ops, in the DARTS and the NAS-Bench-201 space.

The config holds, per cell type, one row per edge in edge order, each row that edge's ops; every
row has the same length k, so the architecture weights stay (edges, k) and column j of edge e is
the op ``edge_primitives[cell][e][j]``. Null: the space's ``primitives`` on every edge.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from darts.errors import DartsError

EdgeOps = tuple[tuple[str, ...], ...]


def parse_edge_lists(raw, primitives: Sequence[str], edge_labels: Sequence[str], cell_types: Sequence[str],
                     none_only_rows: bool = False) -> dict[str, EdgeOps]:
    """{cell type: one op tuple per edge} from the ``space.edge_primitives`` node; DartsError naming the
    first problem (a cell type missing or extra, a wrong number of rows, an op not in ``primitives``, a
    repeated op, rows of different lengths, a row of only ``none`` unless ``none_only_rows``) and what
    would be valid. ``none_only_rows``: whether an edge may hold ``none`` alone (an NB201 cell may, a
    DARTS cell may not)."""
    where = "space.edge_primitives"
    if not isinstance(raw, Mapping) or set(map(str, raw)) != set(cell_types):
        keys = sorted(map(str, raw)) if isinstance(raw, Mapping) else type(raw).__name__
        raise DartsError(f"{where} needs exactly the cell types {', '.join(cell_types)}, each a list of one op "
                         f"list per edge; got {keys}")
    valid = ", ".join(primitives)
    parsed: dict[str, EdgeOps] = {}
    width = None
    for cell in cell_types:
        rows = raw[cell]
        if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or len(rows) != len(edge_labels):
            count = len(rows) if isinstance(rows, Sequence) and not isinstance(rows, str) else "no"
            raise DartsError(f"{where}.{cell} has {count} rows; this cell has {len(edge_labels)} edges, one row each "
                             f"in edge order: {', '.join(edge_labels)}")
        cell_rows = []
        for edge, (row, label) in enumerate(zip(rows, edge_labels)):
            at = f"{where}.{cell}[{edge}] (edge {label})"
            if isinstance(row, (str, bytes)) or not isinstance(row, Sequence) or not row:
                raise DartsError(f"{at} must be a non-empty list of ops, got {row!r}; valid ops: {valid}")
            for op in row:
                if op not in primitives:
                    raise DartsError(f"{at}: unknown op {op!r}; valid choices (space.primitives): {valid}")
            if len(set(row)) != len(row):
                raise DartsError(f"{at} lists an op twice: {list(row)}")
            if not none_only_rows and all(op == "none" for op in row):
                raise DartsError(f"{at} has no op other than 'none'; valid ops: {valid}")
            if width is None:
                width = len(row)
            elif len(row) != width:
                raise DartsError(f"{at} has {len(row)} ops where the first row has {width}: every edge needs "
                                 "the same number of ops (the architecture weights are (edges, ops))")
            cell_rows.append(tuple(str(op) for op in row))
        parsed[cell] = tuple(cell_rows)
    return parsed


def column_labels(edge_ops: Mapping[str, EdgeOps]) -> list[str]:
    """A name per column of the architecture weights (heatmap columns): the op when every edge of every
    cell type has the same op in that column, else ``op j`` (the op differs per edge)."""
    width = len(next(iter(edge_ops.values()))[0])
    labels = []
    for column in range(width):
        names = {row[column] for rows in edge_ops.values() for row in rows}
        labels.append(names.pop() if len(names) == 1 else f"op {column}")
    return labels
