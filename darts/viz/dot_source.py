"""Graphviz DOT source for one cell, styled as the original DARTS drawings.

Left to right: the inputs in the first rank, the output alone in the last, intermediate nodes in
between as ``dot`` lays them out. Op edges carry the op's name in the op's colour; the output's
concatenation arrives as plain grey arrows.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from darts.viz.palette import (BACKGROUND, CONCAT_EDGE_COLOR, INPUT_FILL, INTERMEDIATE_FILL, OUTLINE_COLOR,
                               OUTPUT_FILL, hex_color, op_color)

if TYPE_CHECKING:  # only the type: importing darts.spaces at run time would pull in torch
    from darts.spaces.graph import CellGraph

FONT = "Helvetica"
# An edge with one of these ops carries nothing; dashing it keeps it visible without looking like
# a path data takes.
DASHED_OPS = frozenset({"none"})


def quoted(text: str) -> str:
    """``text`` as a DOT string literal that Graphviz shows verbatim.

    Inside labels Graphviz expands backslash sequences (\\N is the node's name, \\l a left-aligned
    line break), so a literal backslash is doubled; a newline becomes DOT's centred line break."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def node_name(node_id: int) -> str:
    """The DOT identifier of a CellGraph node; labels, not names, carry the text people read."""
    return f"n{node_id}"


def _attributes(**values: str) -> str:
    return "[" + ", ".join(f"{key}={value}" for key, value in values.items()) + "]"


def node_labels(graph: CellGraph) -> list[str]:
    """The text of every node, by node id: the inputs' labels, 0 .. n-1, the output's label."""
    return list(graph.inputs) + [str(node) for node in range(graph.num_intermediate)] + [graph.output]


def _check(graph: CellGraph) -> None:
    for source, target, op in graph.edges:
        if not (0 <= source < graph.num_nodes and 0 <= target < graph.num_nodes) or source == target:
            raise ValueError(f"cell edge {source}->{target} ({op}) does not join two distinct nodes of a cell "
                             f"with nodes 0..{graph.num_nodes - 1}")
        if not isinstance(op, str) or not op:
            raise ValueError(f"cell edge {source}->{target} has op {op!r}; an op name is a non-empty string")
    for source in graph.output_sources:
        if not 0 <= source < graph.output_id:
            raise ValueError(f"cell output source {source} is not a node before the output {graph.output_id}")


def cell_to_dot(graph: CellGraph, title: str = "") -> str:
    """The DOT source of ``graph``, ready for ``dot -Tpng``; raises ValueError for ids outside it."""
    _check(graph)
    lines = [
        "digraph cell {",
        "  " + "graph " + _attributes(rankdir="LR", bgcolor=quoted(hex_color(BACKGROUND)), nodesep="0.35",
                                      ranksep="0.9", fontname=quoted(FONT), fontsize="20", labelloc="t",
                                      label=quoted(title)) + ";",
        "  " + "node " + _attributes(shape="box", style=quoted("rounded,filled"), fontname=quoted(FONT),
                                     fontsize="18", penwidth="1.5", color=quoted(hex_color(OUTLINE_COLOR)),
                                     height="0.5", width="0.7") + ";",
        "  " + "edge " + _attributes(fontname=quoted(FONT), fontsize="14", penwidth="1.8", arrowsize="0.8") + ";",
    ]
    input_count = len(graph.inputs)
    for node_id, label in enumerate(node_labels(graph)):
        if node_id < input_count:
            fill = INPUT_FILL
        elif node_id == graph.output_id:
            fill = OUTPUT_FILL
        else:
            fill = INTERMEDIATE_FILL
        lines.append(f"  {node_name(node_id)} " + _attributes(label=quoted(label), fillcolor=quoted(hex_color(fill)))
                     + ";")
    # Pin the inputs to the first rank and the output to the last, as in the DARTS paper, even when
    # an input feeds nothing or a node reaches the output early.
    input_names = "".join(f" {node_name(node_id)};" for node_id in range(input_count))
    lines.append(f"  {{ rank=source;{input_names} }}")
    lines.append(f"  {{ rank=sink; {node_name(graph.output_id)}; }}")
    for source, target, op in graph.edges:
        color = quoted(hex_color(op_color(op)))
        style = {"style": "dashed"} if op in DASHED_OPS else {}
        lines.append(f"  {node_name(source)} -> {node_name(target)} "
                     + _attributes(label=quoted(op), color=color, fontcolor=color, **style) + ";")
    for source in graph.output_sources:
        lines.append(f"  {node_name(source)} -> {node_name(graph.output_id)} "
                     + _attributes(color=quoted(hex_color(CONCAT_EDGE_COLOR))) + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"
