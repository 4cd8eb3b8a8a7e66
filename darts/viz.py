"""Pictures for people: heatmaps of a cell's op weights and drawings of genotype cells.

Everything returns or writes plain RGB images so that callers can hand them to
TensorBoard (``add_image(..., dataformats="HWC")``) or save them next to a run.
Only Pillow is needed. Cell drawings use Graphviz's ``dot`` when it is installed
because its layout and typography are better, and otherwise a small layered
layout drawn with Pillow, so a headless training node without Graphviz still
gets legible pictures.
"""
from __future__ import annotations

import functools
import math
import shutil
import subprocess
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from darts.errors import DartsError

BACKENDS = ("dot", "pil")
DOT_TIMEOUT_S = 30

INPUT_LABELS = ("c_{k-2}", "c_{k-1}")
OUTPUT_LABEL = "c_{k}"

# Red reads against every colour of the viridis-like ramp, from dark purple to yellow.
ARGMAX_OUTLINE = (230, 20, 60)
BACKGROUND = (255, 255, 255)
TEXT_COLOR = (20, 20, 20)

# Viridis sampled at nine evenly spaced points; linear interpolation between
# them keeps lightness monotonic, so the ramp reads correctly in greyscale too.
_VIRIDIS_ANCHORS = np.array([
    (68, 1, 84),
    (72, 40, 120),
    (59, 82, 139),
    (44, 114, 142),
    (33, 145, 140),
    (39, 173, 129),
    (94, 201, 98),
    (170, 220, 50),
    (253, 231, 37),
], dtype=np.float64)

# Dark enough to be read as text on white, distinct enough to tell edges apart.
OP_COLORS = {
    "none": (150, 150, 150),
    "max_pool_3x3": (31, 102, 170),
    "avg_pool_3x3": (214, 105, 0),
    "skip_connect": (80, 80, 80),
    "sep_conv_3x3": (200, 30, 40),
    "sep_conv_5x5": (130, 80, 180),
    "dil_conv_3x3": (30, 140, 50),
    "dil_conv_5x5": (140, 80, 60),
    "nor_conv_3x3": (190, 50, 150),
    "nor_conv_1x1": (120, 120, 0),
}
_FALLBACK_OP_COLORS = ((0, 130, 140), (160, 60, 100), (90, 110, 30), (70, 70, 160), (170, 90, 30))
CONCAT_EDGE_COLOR = (150, 150, 150)
NODE_FILLS = {"input": (180, 238, 180), "intermediate": (173, 216, 230), "output": (238, 232, 170)}
NODE_OUTLINE = (60, 60, 60)


# -- shared helpers -------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``size`` pixels, or its fixed bitmap font where FreeType is missing."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


_MEASURE = ImageDraw.Draw(Image.new("RGB", (1, 1)))


def _text_box(text: str, font) -> tuple[int, int, int, int]:
    return _MEASURE.textbbox((0, 0), text, font=font)


def _text_size(text: str, font) -> tuple[int, int]:
    left, top, right, bottom = _text_box(text, font)
    return right - left, bottom - top


def _line_height(font) -> int:
    # One height for every label of a font, so rows of text line up whatever letters they hold.
    return _text_size("Ag{}_0|", font)[1]


def _draw_text_centered(draw: ImageDraw.ImageDraw, center: tuple[float, float], text: str, font, fill) -> None:
    # Anchors only work with FreeType fonts, so centre the ink box by hand.
    left, top, right, bottom = _text_box(text, font)
    draw.text((center[0] - (left + right) / 2, center[1] - (top + bottom) / 2), text, font=font, fill=fill)


def _as_matrix(weights) -> np.ndarray:
    if hasattr(weights, "detach"):  # a torch tensor, possibly on a GPU, requiring grad, or bfloat16
        weights = weights.detach().cpu().double().numpy()
    matrix = np.asarray(weights, dtype=np.float64)
    if matrix.ndim != 2:
        raise DartsError(f"cell weights must have shape (edges, ops), got shape {matrix.shape}")
    return matrix


def viridis_like(fractions) -> np.ndarray:
    """RGB uint8 colours, shape ``fractions.shape + (3,)``, for values in [0, 1] (clipped)."""
    positions = np.clip(np.asarray(fractions, dtype=np.float64), 0.0, 1.0) * (len(_VIRIDIS_ANCHORS) - 1)
    lower = np.minimum(np.floor(positions).astype(int), len(_VIRIDIS_ANCHORS) - 2)
    blend = (positions - lower)[..., None]
    colors = _VIRIDIS_ANCHORS[lower] * (1 - blend) + _VIRIDIS_ANCHORS[lower + 1] * blend
    return np.rint(colors).astype(np.uint8)


def _is_light(color) -> bool:
    red, green, blue = (channel / 255 for channel in color)
    return 0.299 * red + 0.587 * green + 0.114 * blue > 0.55


def op_color(op: str) -> tuple[int, int, int]:
    """A fixed colour per op name; unknown ops get a stable colour derived from the name."""
    if op in OP_COLORS:
        return OP_COLORS[op]
    # crc32 rather than hash(): string hashes change between interpreter runs.
    return _FALLBACK_OP_COLORS[zlib.crc32(op.encode()) % len(_FALLBACK_OP_COLORS)]


def load_png(path) -> np.ndarray:
    """An image file as uint8 RGB of shape (H, W, 3), transparency flattened onto white."""
    with Image.open(path) as image:
        image.load()
        if "A" in image.getbands() or "transparency" in image.info:
            rgba = image.convert("RGBA")
            flattened = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
            flattened.alpha_composite(rgba)
            image = flattened
        return np.array(image.convert("RGB"), dtype=np.uint8)


# -- alpha heatmap --------------------------------------------------------------------------------

def edge_count(steps: int) -> int:
    """Edges of a DARTS cell: node i has one edge from each of the i + 2 earlier states."""
    return sum(node + 2 for node in range(steps))


def _state_name(index: int) -> str:
    return INPUT_LABELS[index] if index < 2 else f"n{index - 2}"


def edge_labels(steps: int) -> list[str]:
    """Row labels in the supernet's edge order: 'n0<-c_{k-2}', 'n0<-c_{k-1}', 'n1<-c_{k-2}', ..."""
    return [f"n{node}<-{_state_name(source)}" for node in range(steps) for source in range(node + 2)]


def alpha_heatmap(weights, primitives: Sequence[str], steps: int = 4, title: str = "",
                  row_labels: Sequence[str] | None = None, vmin: float | None = None,
                  vmax: float | None = None) -> np.ndarray:
    """A heatmap of one cell's op weights as a uint8 RGB array of shape (H, W, 3).

    ``weights`` has shape (edges, ops), edges in supernet order (node by node,
    each node's edges from c_{k-2}, c_{k-1}, n0, ...). Every cell shows its value
    to two decimals and each row's largest value is outlined. ``row_labels``
    replaces the DARTS edge labels for other search spaces (NAS-Bench-201 has
    6 edges); ``vmin``/``vmax`` fix the colour range, by default the data's range
    so that near-uniform softmax weights still show their differences.
    """
    matrix = _as_matrix(weights)
    op_names = [str(op) for op in primitives]
    rows, columns = matrix.shape
    if columns != len(op_names):
        raise DartsError(f"cell weights have {columns} op columns but {len(op_names)} op names were given")
    if row_labels is None:
        if rows != edge_count(steps):
            raise DartsError(f"cell weights have {rows} edge rows but a cell of {steps} steps has "
                             f"{edge_count(steps)}; pass the cell's steps or explicit row_labels")
        labels = edge_labels(steps)
        group_sizes = [node + 2 for node in range(steps)]
    else:
        labels = [str(label) for label in row_labels]
        if len(labels) != rows:
            raise DartsError(f"{len(labels)} row labels given for {rows} rows of cell weights")
        group_sizes = [rows]

    finite = np.isfinite(matrix)
    low = float(matrix[finite].min()) if vmin is None and finite.any() else (0.0 if vmin is None else vmin)
    high = float(matrix[finite].max()) if vmax is None and finite.any() else (1.0 if vmax is None else vmax)
    span = high - low
    fractions = (matrix - low) / span if span > 0 else np.full(matrix.shape, 0.5)
    cell_colors = viridis_like(np.where(finite, fractions, 0.0))

    font = _font(13)
    title_font = _font(16)
    values = [[f"{value:.2f}" for value in row] for row in matrix.tolist()]
    margin, padding, group_gap = 12, 8, 6
    line_height = _line_height(font)
    cell_width = max(48, max(_text_size(text, font)[0] for text in op_names + sum(values, [])) + 2 * padding)
    cell_height = max(24, line_height + 2 * padding)
    grid_left = margin + max(_text_size(label, font)[0] for label in labels) + padding
    grid_top = margin
    if title:
        grid_top += _line_height(title_font) + padding
    column_label_y = grid_top + line_height / 2
    grid_top += line_height + padding

    # A small gap between the edges of different nodes makes the node structure visible.
    row_tops = []
    y = grid_top
    for group_size in group_sizes:
        for _ in range(group_size):
            row_tops.append(y)
            y += cell_height
        y += group_gap
    grid_bottom = y - group_gap
    grid_right = grid_left + columns * cell_width

    bar_left, bar_width = grid_right + 2 * padding, 14
    tick_texts = [f"{high:.2f}", f"{(low + high) / 2:.2f}", f"{low:.2f}"]
    width = bar_left + bar_width + padding // 2 + max(_text_size(text, font)[0] for text in tick_texts) + margin
    if title:
        width = max(width, _text_size(title, title_font)[0] + 2 * margin)
    height = grid_bottom + margin

    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    if title:
        _draw_text_centered(draw, (width / 2, margin + _line_height(title_font) / 2), title, title_font, TEXT_COLOR)
    for column, name in enumerate(op_names):
        _draw_text_centered(draw, (grid_left + (column + 0.5) * cell_width, column_label_y), name, font,
                            TEXT_COLOR)
    for row, label in enumerate(labels):
        left, top, right, bottom = _text_box(label, font)
        center_y = row_tops[row] + cell_height / 2
        draw.text((grid_left - padding - right, center_y - (top + bottom) / 2), label, font=font, fill=TEXT_COLOR)
        for column in range(columns):
            x0, y0 = grid_left + column * cell_width, row_tops[row]
            color = tuple(int(c) for c in cell_colors[row, column]) if finite[row, column] else (200, 200, 200)
            draw.rectangle((x0, y0, x0 + cell_width - 1, y0 + cell_height - 1), fill=color, outline=BACKGROUND)
            _draw_text_centered(draw, (x0 + cell_width / 2, y0 + cell_height / 2), values[row][column], font,
                                TEXT_COLOR if _is_light(color) else BACKGROUND)
        if finite[row].any():
            best = int(np.argmax(np.where(finite[row], matrix[row], -np.inf)))
            x0, y0 = grid_left + best * cell_width, row_tops[row]
            draw.rectangle((x0, y0, x0 + cell_width - 1, y0 + cell_height - 1), outline=ARGMAX_OUTLINE, width=3)

    # Colour bar: the value range the colours stand for, top = high.
    bar_height = grid_bottom - grid_top
    ramp = viridis_like(1.0 - np.arange(bar_height) / max(bar_height - 1, 1))
    image.paste(Image.fromarray(np.repeat(ramp[:, None, :], bar_width, axis=1)), (bar_left, grid_top))
    draw.rectangle((bar_left, grid_top, bar_left + bar_width - 1, grid_bottom - 1), outline=NODE_OUTLINE)
    for text, y in zip(tick_texts, (grid_top, grid_top + bar_height / 2, grid_bottom)):
        left, top, right, bottom = _text_box(text, font)
        text_y = min(max(y - (top + bottom) / 2, grid_top - top), grid_bottom - bottom)
        draw.text((bar_left + bar_width + padding // 2 - left, text_y), text, font=font, fill=TEXT_COLOR)
    return np.array(image, dtype=np.uint8)


# -- cell graphs ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _CellGraph:
    labels: tuple[str, ...]  # by node index: the two inputs, the intermediate nodes, the output
    kinds: tuple[str, ...]  # 'input', 'intermediate' or 'output', for colouring
    edges: tuple[tuple[int, int, str | None], ...]  # (source, target, op); op None for concat edges

    @property
    def output(self) -> int:
        return len(self.labels) - 1


def _cell_graph(pairs, concat, steps: int | None) -> _CellGraph:
    pairs = [tuple(pair) for pair in pairs]
    if not pairs:
        raise DartsError("a cell needs at least one (op, input) pair to draw")
    if steps is None:
        if len(pairs) % 2:
            raise DartsError(f"a cell has two (op, input) pairs per node, got {len(pairs)} pairs; pass steps")
        steps = len(pairs) // 2
    if steps < 1 or len(pairs) % steps:
        raise DartsError(f"{len(pairs)} (op, input) pairs cannot be split evenly over {steps} steps")
    pairs_per_node = len(pairs) // steps
    edges = []
    for position, pair in enumerate(pairs):
        if len(pair) != 2:
            raise DartsError(f"cell pair {pair!r} is not an (op, input) pair")
        op, source = pair
        node = position // pairs_per_node
        if not isinstance(op, str):
            raise DartsError(f"cell op name must be a string, got {op!r}")
        if isinstance(source, bool) or not isinstance(source, (int, np.integer)) or not 0 <= source < node + 2:
            raise DartsError(f"cell node {node} cannot take input {source!r}; valid inputs are 0..{node + 1}")
        edges.append((int(source), node + 2, op))
    output = steps + 2
    for index in concat:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < output:
            raise DartsError(f"cell concat index {index!r} is invalid; valid indices are 0..{output - 1}")
        edges.append((int(index), output, None))
    labels = INPUT_LABELS + tuple(str(node) for node in range(steps)) + (OUTPUT_LABEL,)
    kinds = ("input", "input") + ("intermediate",) * steps + ("output",)
    return _CellGraph(labels, kinds, tuple(edges))


def _hex(color) -> str:
    return "#" + "".join(f"{channel:02x}" for channel in color)


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def cell_to_dot(pairs, concat, title: str = "", steps: int | None = None) -> str:
    """Graphviz DOT source for one cell, laid out left to right."""
    return _dot_source(_cell_graph(pairs, concat, steps), title)


def _dot_source(graph: _CellGraph, title: str) -> str:
    lines = [
        "digraph cell {",
        '  graph [rankdir=LR, bgcolor="white", nodesep=0.35, ranksep=0.9, fontname="Helvetica", fontsize=20, '
        f'labelloc=t, label={_dot_string(title)}];',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=18, penwidth=1.5, '
        f'color="{_hex(NODE_OUTLINE)}", height=0.5, width=0.7];',
        '  edge [fontname="Helvetica", fontsize=14, penwidth=1.8, arrowsize=0.8];',
    ]
    for index, (label, kind) in enumerate(zip(graph.labels, graph.kinds)):
        lines.append(f"  s{index} [label={_dot_string(label)}, fillcolor=\"{_hex(NODE_FILLS[kind])}\"];")
    # Keep the inputs in the first column and the output alone in the last, as in the DARTS paper.
    inputs = "".join(f" s{index};" for index, kind in enumerate(graph.kinds) if kind == "input")
    lines.append(f"  {{ rank=source;{inputs} }}")
    lines.append(f"  {{ rank=sink; s{graph.output}; }}")
    for source, target, op in graph.edges:
        if op is None:
            lines.append(f'  s{source} -> s{target} [color="{_hex(CONCAT_EDGE_COLOR)}"];')
        else:
            color = _hex(op_color(op))
            lines.append(f"  s{source} -> s{target} [label={_dot_string(op)}, color=\"{color}\", "
                         f"fontcolor=\"{color}\"];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _render_with_dot(dot_source: str, path: Path) -> None:
    """Run Graphviz; raises DartsError on any failure so the caller can decide what to do."""
    executable = shutil.which("dot")
    if executable is None:
        raise DartsError("Graphviz 'dot' is not on PATH")
    try:
        subprocess.run([executable, "-Tpng", "-o", str(path)], input=dot_source.encode(), capture_output=True,
                       timeout=DOT_TIMEOUT_S, check=True)
        with Image.open(path) as image:  # a crashed dot can leave an empty or truncated file
            image.verify()
    except subprocess.CalledProcessError as err:
        message = err.stderr.decode(errors="replace").strip() if err.stderr else ""
        raise DartsError(f"Graphviz 'dot' failed with status {err.returncode}: {message}") from None
    except subprocess.TimeoutExpired:
        raise DartsError(f"Graphviz 'dot' did not finish within {DOT_TIMEOUT_S} s") from None
    except OSError as err:  # includes PIL's UnidentifiedImageError for a missing or corrupt PNG
        raise DartsError(f"Graphviz 'dot' could not produce {path}: {err}") from None


# Pillow draws lines without anti-aliasing; drawing at twice the size and
# shrinking smooths the diagonal arrows.
_SUPERSAMPLE = 2


def _segment_hits_box(p0, p1, box) -> bool:
    """Whether segment p0-p1 passes through the rectangle (Liang-Barsky clipping)."""
    (x0, y0), (x1, y1) = p0, p1
    left, top, right, bottom = box
    if max(x0, x1) < left or min(x0, x1) > right or max(y0, y1) < top or min(y0, y1) > bottom:
        return False  # the common case, settled without clipping
    dx, dy = x1 - x0, y1 - y0
    t_enter, t_exit = 0.0, 1.0
    for direction, distance in ((-dx, x0 - left), (dx, right - x0), (-dy, y0 - top), (dy, bottom - y0)):
        if direction == 0:
            if distance < 0:
                return False
            continue
        t = distance / direction
        if direction < 0:
            t_enter = max(t_enter, t)
        else:
            t_exit = min(t_exit, t)
        if t_enter > t_exit:
            return False
    return True


def _segments_cross(a0, a1, b0, b1) -> bool:
    def orientation(p, q, r):
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    d1, d2 = orientation(b0, b1, a0), orientation(b0, b1, a1)
    d3, d4 = orientation(a0, a1, b0), orientation(a0, a1, b1)
    return d1 * d2 < 0 and d3 * d4 < 0


def _boxes_overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _box_around(center, half_width, half_height):
    return (center[0] - half_width, center[1] - half_height, center[0] + half_width, center[1] + half_height)


def _edge_segments(graph: _CellGraph, centers, half_width: float, half_height: float,
                   max_port_gap: float) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Start and end point of every edge: out of a box's right side, into the next box's left side.

    Each edge gets its own port, spread over the middle of the side and ordered
    by slope, so arrowheads into one node never pile up, lines do not cross at a
    box, and an input used twice by one node shows as two parallel lines.
    """
    def slope(index):
        source, target, _ = graph.edges[index]
        (sx, sy), (tx, ty) = centers[source], centers[target]
        return (ty - sy) / (tx - sx)

    outgoing: dict[int, list[int]] = {}
    incoming: dict[int, list[int]] = {}
    for index, (source, target, _) in enumerate(graph.edges):
        outgoing.setdefault(source, []).append(index)
        incoming.setdefault(target, []).append(index)

    def port_offsets(edge_indices, order_key):
        ordered = sorted(edge_indices, key=order_key)
        gap = min(max_port_gap, 1.2 * half_height / max(len(ordered) - 1, 1))
        return {index: (rank - (len(ordered) - 1) / 2) * gap for rank, index in enumerate(ordered)}

    start_offsets, end_offsets = {}, {}
    for edge_indices in outgoing.values():
        start_offsets.update(port_offsets(edge_indices, slope))  # steepest upward line takes the top port
    for edge_indices in incoming.values():
        end_offsets.update(port_offsets(edge_indices, lambda index: -slope(index)))  # line from above: top
    segments = []
    for index, (source, target, _) in enumerate(graph.edges):
        (sx, sy), (tx, ty) = centers[source], centers[target]
        segments.append(((sx + half_width, sy + start_offsets[index]), (tx - half_width, ty + end_offsets[index])))
    return segments


def _node_columns(graph: _CellGraph) -> list[int]:
    """Topological column per node: inputs 0, a node one right of its deepest input, output last."""
    column = [0] * len(graph.labels)
    for source, target, op in graph.edges:  # op edges come in node order, so sources are already placed
        if op is not None:
            column[target] = max(column[target], column[source] + 1)
    column[graph.output] = max(column[:graph.output]) + 1
    return column


@dataclass(frozen=True)
class _Grid:
    """Where the Pillow layout puts things: column and slot to pixel centre, and node box size."""
    column_x: tuple[float, ...]
    half_row_pitch: float
    node_half_width: float
    node_half_height: float
    clearance: float  # how near a line may pass a box it does not connect

    def center(self, column: int, slot: int) -> tuple[float, float]:
        return self.column_x[column], slot * self.half_row_pitch


class _LayoutScorer:
    """How hard a placement of the nodes in slots is to read; lower is better.

    The terms rank, in order: a line running through a box it does not connect
    (it looks like an edge into that node), two lines crossing, bent lines,
    and nodes out of reading order (c_{k-2} above c_{k-1}, node 0 above node 1).
    """

    def __init__(self, graph: _CellGraph, columns: list[int], grid: _Grid):
        self.columns = columns
        self.grid = grid
        self.node_count = len(graph.labels)
        self.links = [(source, target) for source, target, _ in graph.edges]
        # Lines are drawn between box sides, so only a node in a column strictly between a line's
        # ends can be run through by it.
        self.passed_nodes = [[node for node in range(self.node_count)
                              if columns[source] < columns[node] < columns[target]]
                             for source, target in self.links]
        # Lines can only cross where their column spans overlap, and lines that share a node meet
        # only there.
        self.crossable = [(a, b) for a in range(len(self.links)) for b in range(a + 1, len(self.links))
                          if not set(self.links[a]) & set(self.links[b])
                          and max(columns[self.links[a][0]], columns[self.links[b][0]])
                          < min(columns[self.links[a][1]], columns[self.links[b][1]])]
        self.same_column = [(first, second) for first in range(self.node_count)
                            for second in range(first + 1, self.node_count) if columns[first] == columns[second]]

    def __call__(self, slots: list[int]) -> float:
        grid = self.grid
        centers = [grid.center(self.columns[node], slots[node]) for node in range(self.node_count)]
        half_width, half_height = grid.node_half_width + grid.clearance, grid.node_half_height + grid.clearance
        total = 0.0
        for (source, target), passed in zip(self.links, self.passed_nodes):
            total += abs(slots[source] - slots[target])
            for node in passed:
                if _segment_hits_box(centers[source], centers[target],
                                     _box_around(centers[node], half_width, half_height)):
                    total += 1000
        for a, b in self.crossable:
            (source_a, target_a), (source_b, target_b) = self.links[a], self.links[b]
            if _segments_cross(centers[source_a], centers[target_a], centers[source_b], centers[target_b]):
                total += 30
        for first, second in self.same_column:
            if slots[first] > slots[second]:
                total += 1.5
        return total


def _arrange_slots(graph: _CellGraph, columns: list[int], slot_count: int, grid: _Grid) -> list[int]:
    """Vertical slot per node, by local search on :class:`_LayoutScorer`.

    Slots are half a row apart so that a lone node can sit between two others;
    nodes of one column stay two slots apart so that their boxes never touch.
    Moving one node at a time gets stuck when clearing one line blocks another,
    so when that stalls, pairs of nodes move together.
    """
    score = _LayoutScorer(graph, columns, grid)
    nodes = range(len(graph.labels))
    slots = [0] * len(graph.labels)
    for column in set(columns):
        column_nodes = [node for node in nodes if columns[node] == column]
        first = (slot_count - 1) // 2 - (len(column_nodes) - 1)
        for rank, node in enumerate(column_nodes):
            slots[node] = first + 2 * rank

    def legal(candidate) -> bool:
        return all(abs(candidate[first] - candidate[second]) >= 2 for first, second in score.same_column)

    def single_moves(current):
        for node in nodes:
            for slot in range(slot_count):
                moved = list(current)
                moved[node] = slot
                yield moved
                for other in nodes:  # a swap within the column keeps the spacing legal
                    if other != node and columns[other] == columns[node] and current[other] == slot:
                        moved = list(moved)
                        moved[other] = current[node]
                        yield moved

    def pair_moves(current):
        for first in nodes:
            for second in nodes[first + 1:]:
                for first_slot in range(slot_count):
                    for second_slot in range(slot_count):
                        moved = list(current)
                        moved[first], moved[second] = first_slot, second_slot
                        yield moved

    best = score(slots)
    for moves in (single_moves, pair_moves) * 10:  # each round is a full sweep; a few settle it
        improved = False
        for candidate in list(moves(slots)):
            if candidate != slots and legal(candidate):
                candidate_cost = score(candidate)
                if candidate_cost < best - 1e-9:
                    best, slots, improved = candidate_cost, candidate, True
        if not improved and moves is pair_moves:
            break
    return slots


def _place_labels(graph: _CellGraph, segments, node_boxes, label_sizes: dict[int, tuple[float, float]],
                  clearance: float) -> dict[int, tuple[float, float, float, float]]:
    """A box per labelled edge, centred on the edge and slid along it to stay clear of the rest.

    A label that another line runs through reads as belonging to either edge,
    so clearing labels, boxes and lines matters more than staying mid-edge.
    Placing labels one by one lets early ones take spots later ones needed, so
    each label is re-placed a few times with all the others fixed.
    """
    # Edges joining the same two nodes run side by side, so their labels start spread along them.
    preferred_fraction = {}
    parallel_groups: dict[tuple[int, int], list[int]] = {}
    for index, (source, target, _) in enumerate(graph.edges):
        parallel_groups.setdefault((source, target), []).append(index)
    for group in parallel_groups.values():
        for rank, index in enumerate(group):
            preferred_fraction[index] = 0.5 if len(group) == 1 else 0.25 + 0.5 * rank / (len(group) - 1)
    shifts = sorted((step * 0.05 for step in range(-7, 8)), key=abs)

    def candidates(index):
        (x0, y0), (x1, y1) = segments[index]
        width, height = label_sizes[index]
        for fraction in sorted({min(max(preferred_fraction[index] + shift, 0.12), 0.88) for shift in shifts}):
            center = (x0 + (x1 - x0) * fraction, y0 + (y1 - y0) * fraction)
            yield abs(fraction - preferred_fraction[index]), _box_around(center, width / 2, height / 2)

    def score(index, distance, box, placed):
        roomy = (box[0] - clearance, box[1] - clearance, box[2] + clearance, box[3] + clearance)
        total = 10 * distance
        total += 1000 * sum(_boxes_overlap(roomy, other_box)
                            for other, other_box in placed.items() if other != index)
        total += 5000 * sum(_boxes_overlap(roomy, node_box) for node_box in node_boxes)
        total += 20 * sum(_segment_hits_box(*segments[other], roomy)
                          for other in range(len(segments)) if other != index)
        return total

    placed: dict[int, tuple[float, float, float, float]] = {}
    for _ in range(4):
        for index in label_sizes:
            placed[index] = min(candidates(index), key=lambda option: score(index, *option, placed))[1]
    return placed


def _render_with_pil(graph: _CellGraph, title: str) -> Image.Image:
    scale = _SUPERSAMPLE
    node_font, label_font, title_font = _font(17 * scale), _font(13 * scale), _font(18 * scale)
    label_pad_x, label_pad_y = 5 * scale, 3 * scale
    label_height = _line_height(label_font) + 2 * label_pad_y
    ops = [op for _, _, op in graph.edges if op is not None]
    label_width = max(_text_size(op, label_font)[0] for op in ops) + 2 * label_pad_x
    node_half_width = max(max(_text_size(label, node_font)[0] for label in graph.labels) + 28 * scale,
                          72 * scale) / 2
    node_half_height = (_line_height(node_font) + 22 * scale) / 2
    half_row_pitch = (2 * node_half_height + 3 * label_height + 30 * scale) / 2

    columns = _node_columns(graph)
    column_sizes = [columns.count(column) for column in range(max(columns) + 1)]
    slot_count = 2 * max(column_sizes) + 1
    # Each gap between columns leaves room for an op label with line visible on both sides, and
    # widens with the number of labelled edges crossing it so that their labels can spread out.
    column_x = [0.0]
    for gap in range(len(column_sizes) - 1):
        crossing = sum(op is not None and columns[source] <= gap < columns[target]
                       for source, target, op in graph.edges)
        gap_width = max(2.4 * label_width, 200 * scale, 0.45 * label_width * crossing)
        column_x.append(column_x[-1] + 2 * node_half_width + gap_width)

    grid = _Grid(tuple(column_x), half_row_pitch, node_half_width, node_half_height, clearance=8 * scale)
    slots = _arrange_slots(graph, columns, slot_count, grid)
    centers = [grid.center(columns[node], slots[node]) for node in range(len(graph.labels))]
    node_boxes = [_box_around(center, node_half_width, node_half_height) for center in centers]

    segments = _edge_segments(graph, centers, node_half_width, node_half_height, max_port_gap=12 * scale)

    label_sizes = {index: (_text_size(op, label_font)[0] + 2 * label_pad_x, label_height)
                   for index, (_, _, op) in enumerate(graph.edges) if op is not None}
    label_boxes = _place_labels(graph, segments, node_boxes, label_sizes, clearance=4 * scale)

    # Fit the canvas around everything drawn, leaving room for the title.
    margin = 16 * scale
    everything = node_boxes + list(label_boxes.values())
    min_x, min_y = min(box[0] for box in everything), min(box[1] for box in everything)
    max_x, max_y = max(box[2] for box in everything), max(box[3] for box in everything)
    title_height = _line_height(title_font) + 14 * scale if title else 0
    content_width = max_x - min_x
    width = max(content_width, _text_size(title, title_font)[0] if title else 0) + 2 * margin
    height = max_y - min_y + 2 * margin + title_height
    width, height = (int(math.ceil(size / scale)) * scale for size in (width, height))
    shift_x = (width - content_width) / 2 - min_x
    shift_y = margin + title_height - min_y

    def moved(point):
        return point[0] + shift_x, point[1] + shift_y

    def moved_box(box):
        return box[0] + shift_x, box[1] + shift_y, box[2] + shift_x, box[3] + shift_y

    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    if title:
        _draw_text_centered(draw, (width / 2, margin + _line_height(title_font) / 2), title, title_font, TEXT_COLOR)
    head_length, head_half_width = 12 * scale, 5.5 * scale
    for index, (_, _, op) in enumerate(graph.edges):
        color = CONCAT_EDGE_COLOR if op is None else op_color(op)
        start, end = (moved(point) for point in segments[index])
        length = math.hypot(end[0] - start[0], end[1] - start[1])
        ux, uy = (end[0] - start[0]) / length, (end[1] - start[1]) / length
        # Stop the line inside the arrowhead so its square end does not poke past the tip.
        shaft_end = (end[0] - ux * head_length * 0.7, end[1] - uy * head_length * 0.7)
        draw.line((start, shaft_end), fill=color, width=2 * scale)
        base = (end[0] - ux * head_length, end[1] - uy * head_length)
        draw.polygon([end, (base[0] - uy * head_half_width, base[1] + ux * head_half_width),
                      (base[0] + uy * head_half_width, base[1] - ux * head_half_width)], fill=color)
    for node, box in enumerate(node_boxes):
        draw.rounded_rectangle(moved_box(box), radius=8 * scale, fill=NODE_FILLS[graph.kinds[node]],
                               outline=NODE_OUTLINE, width=2 * scale)
        _draw_text_centered(draw, moved(centers[node]), graph.labels[node], node_font, TEXT_COLOR)
    for index, box in label_boxes.items():
        op = graph.edges[index][2]
        box = moved_box(box)
        draw.rounded_rectangle(box, radius=4 * scale, fill=BACKGROUND, outline=op_color(op), width=scale)
        _draw_text_centered(draw, ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), op, label_font, op_color(op))
    return image.resize((width // scale, height // scale), Image.Resampling.LANCZOS)


def draw_cell(pairs, concat, path, title: str = "", steps: int | None = None, *,
              force_backend: str | None = None) -> Path:
    """Draw one genotype cell as a directed graph PNG at ``path`` and return the path.

    ``pairs`` are ``(op, input)`` pairs, ``steps`` nodes' worth in node order
    (default two per node); input 0 is c_{k-2}, 1 is c_{k-1}, j >= 2 node j - 2.
    Each pair becomes an edge labelled with its op, each ``concat`` index an
    edge into the output c_{k}. With Graphviz installed ``dot`` draws it, and
    if ``dot`` fails the built-in Pillow drawing is used (with a warning).
    ``force_backend`` ('dot' or 'pil') picks one; a forced 'dot' raises
    DartsError instead of falling back, so its failures are visible.
    """
    if force_backend not in (None,) + BACKENDS:
        raise DartsError(f"unknown drawing backend {force_backend!r}; valid choices: {', '.join(BACKENDS)}")
    return _render(_cell_graph(pairs, concat, steps), path, title, force_backend)


def _render(graph: _CellGraph, path, title: str, force_backend: str | None) -> Path:
    """Write ``graph`` as a PNG at ``path`` with dot (falling back to Pillow) or the forced backend."""
    if force_backend not in (None,) + BACKENDS:
        raise DartsError(f"unknown drawing backend {force_backend!r}; valid choices: {', '.join(BACKENDS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    use_dot = force_backend == "dot" or (force_backend is None and shutil.which("dot") is not None)
    if use_dot:
        try:
            _render_with_dot(_dot_source(graph, title), path)
            return path
        except DartsError as err:
            if force_backend == "dot":
                raise
            warnings.warn(f"{err}; drawing {path.name} with Pillow instead", RuntimeWarning, stacklevel=3)
    _render_with_pil(graph, title).save(path, format="PNG")
    return path


def _dag_cell_graph(dag_edges, num_nodes: int) -> _CellGraph:
    """A single-input cell (NAS-Bench-201): node 0 the input, node num_nodes - 1 the output.

    ``dag_edges`` are (source, target, op); ``none`` edges are left out (they carry nothing)
    unless every edge is ``none``, so that the drawing still shows the cell."""
    edges = [(int(source), int(target), str(op)) for source, target, op in dag_edges]
    for source, target, _ in edges:
        if not 0 <= source < target < num_nodes:
            raise DartsError(f"cell edge {source}->{target} is invalid in a cell of {num_nodes} nodes")
    kept = [edge for edge in edges if edge[2] != "none"] or edges
    if not kept:
        raise DartsError("a cell needs at least one edge to draw")
    labels = ("in",) + tuple(str(node) for node in range(1, num_nodes - 1)) + ("out",)
    kinds = ("input",) + ("intermediate",) * (num_nodes - 2) + ("output",)
    return _CellGraph(labels, kinds, tuple(kept))


def draw_genotype(genotype, directory, prefix: str = "", *, force_backend: str | None = None) -> dict[str, Path]:
    """Draw the cells of a genotype as PNGs in ``directory``.

    A DARTS Genotype gives ``{prefix}normal.png`` and ``{prefix}reduce.png`` and returns
    ``{'normal': path, 'reduce': path}``. A single-cell genotype that lists its edges with
    ``dag_edges()`` (NAS-Bench-201: (source, target, op), node 0 the input, the last node the
    output) gives ``{prefix}cell.png`` and returns ``{'cell': path}``.
    """
    directory = Path(directory)
    if hasattr(genotype, "dag_edges"):
        edges = genotype.dag_edges()
        num_nodes = genotype.steps + 1
        path = _render(_dag_cell_graph(edges, num_nodes), directory / f"{prefix}cell.png", "cell", force_backend)
        return {"cell": path}
    drawings = {}
    for cell, pairs, concat, title in (("normal", genotype.normal, genotype.normal_concat, "normal cell"),
                                       ("reduce", genotype.reduce, genotype.reduce_concat, "reduction cell")):
        drawings[cell] = draw_cell(pairs, concat, directory / f"{prefix}{cell}.png", title=title,
                                   steps=len(pairs) // 2, force_backend=force_backend)
    return drawings
