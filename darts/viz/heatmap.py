"""A heatmap of one cell's architecture weights, drawn with Pillow as a uint8 RGB array.

One row per edge, one column per op; every cell shows its value, each row's largest value is
outlined, and a colour bar gives the range. Colours span the data's own range, so near-uniform
softmax weights early in a search still show their differences.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from darts.viz.text import default_font, draw_centered, label_height, text_width
from darts.viz.palette import (ARGMAX_OUTLINE, BACKGROUND, MISSING_VALUE_COLOR, OUTLINE_COLOR, TEXT_COLOR,
                               is_light, viridis_like)

MARGIN = 12
PADDING = 8
GROUP_GAP = 6  # pixels between the edges of different target nodes
MIN_CELL_WIDTH, MIN_CELL_HEIGHT = 48, 24
COLOUR_BAR_WIDTH = 14
OUTLINE_WIDTH = 3


def _as_matrix(weights) -> np.ndarray:
    if hasattr(weights, "detach"):  # a torch tensor: maybe on a GPU, requiring grad, or in bfloat16
        weights = weights.detach().cpu().double().numpy()
    matrix = np.asarray(weights, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"cell weights must have shape (edges, ops), got shape {matrix.shape}")
    return matrix


def _row_groups(labels: Sequence[str]) -> list[int]:
    """Sizes of runs of consecutive rows into the same node, for labels written 'target<-source'.

    Spaces label edges that way ('n1<-c_{k-1}', '2<-1'); for labels of any other form all rows
    form one group."""
    if not all("<-" in label for label in labels):
        return [len(labels)]
    sizes: list[int] = []
    previous_target = None
    for label in labels:
        target = label.split("<-", 1)[0]
        if target == previous_target:
            sizes[-1] += 1
        else:
            sizes.append(1)
        previous_target = target
    return sizes


@dataclass(frozen=True)
class _Layout:
    """Where everything goes, in pixels."""

    width: int
    height: int
    title_center_y: float
    column_label_y: float
    grid_left: int
    grid_top: int
    grid_bottom: int
    cell_width: int
    cell_height: int
    row_tops: tuple[int, ...]
    bar_left: int


def _layout(labels: Sequence[str], op_names: Sequence[str], values: list[list[str]], tick_texts: Sequence[str],
            title: str, font, title_font) -> _Layout:
    line_height = label_height(font)
    cell_texts = list(op_names) + [text for row in values for text in row]
    cell_width = max(MIN_CELL_WIDTH, max(text_width(text, font) for text in cell_texts) + 2 * PADDING)
    cell_height = max(MIN_CELL_HEIGHT, line_height + 2 * PADDING)
    grid_left = MARGIN + max(text_width(label, font) for label in labels) + PADDING

    top = MARGIN
    title_center_y = top + label_height(title_font) / 2
    if title:
        top += label_height(title_font) + PADDING
    column_label_y = top + line_height / 2
    grid_top = top + line_height + PADDING

    row_tops = []
    y = grid_top
    for group_size in _row_groups(labels):
        for _ in range(group_size):
            row_tops.append(y)
            y += cell_height
        y += GROUP_GAP
    grid_bottom = y - GROUP_GAP

    bar_left = grid_left + len(op_names) * cell_width + 2 * PADDING
    width = bar_left + COLOUR_BAR_WIDTH + PADDING // 2 + max(text_width(text, font) for text in tick_texts) + MARGIN
    if title:
        width = max(width, text_width(title, title_font) + 2 * MARGIN)
    return _Layout(width=width, height=grid_bottom + MARGIN, title_center_y=title_center_y,
                   column_label_y=column_label_y, grid_left=grid_left, grid_top=grid_top, grid_bottom=grid_bottom,
                   cell_width=cell_width, cell_height=cell_height, row_tops=tuple(row_tops), bar_left=bar_left)


def alpha_heatmap(weights, op_names: Sequence[str], row_labels: Sequence[str], title: str = "") -> np.ndarray:
    """A heatmap of one cell's (edges, ops) non-negative weights as uint8 RGB of shape (H, W, 3).

    ``weights`` is a torch tensor or anything numpy takes; row ``i`` is labelled ``row_labels[i]``
    (the space's ``edge_labels()``), column ``j`` ``op_names[j]``. Each row's largest finite value
    is outlined in :data:`~darts.viz.palette.ARGMAX_OUTLINE`; NaN and infinite values are shown
    grey. Raises ValueError when the labels do not match the matrix.
    """
    matrix = _as_matrix(weights)
    # A lone string would pass as a sequence of one-letter labels; a number (the old ``steps``
    # argument in this position) is not a sequence at all.
    if isinstance(row_labels, (str, bytes)) or not hasattr(row_labels, "__iter__"):
        raise ValueError(f"row_labels must be a sequence of labels, one per edge, got {row_labels!r}")
    labels = [str(label) for label in row_labels]
    op_names = [str(op) for op in op_names]
    rows, columns = matrix.shape
    if rows == 0 or columns == 0:
        raise ValueError(f"cell weights of shape {matrix.shape} have nothing to draw")
    if len(labels) != rows:
        raise ValueError(f"{len(labels)} row labels given for {rows} edge rows of cell weights")
    if len(op_names) != columns:
        raise ValueError(f"{len(op_names)} op names given for {columns} op columns of cell weights")

    finite = np.isfinite(matrix)
    low, high = (float(matrix[finite].min()), float(matrix[finite].max())) if finite.any() else (0.0, 1.0)
    span = high - low
    # A constant matrix has no range to spread over the ramp: give it the ramp's middle colour.
    fractions = (matrix - low) / span if span > 0 else np.full(matrix.shape, 0.5)
    cell_colors = viridis_like(np.where(finite, fractions, 0.0))

    font, title_font = default_font(13), default_font(16)
    values = [[f"{value:.2f}" for value in row] for row in matrix.tolist()]
    tick_texts = (f"{high:.2f}", f"{(low + high) / 2:.2f}", f"{low:.2f}")
    layout = _layout(labels, op_names, values, tick_texts, title, font, title_font)

    image = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    if title:
        draw_centered(draw, (layout.width / 2, layout.title_center_y), title, title_font, TEXT_COLOR)
    for column, name in enumerate(op_names):
        draw_centered(draw, (layout.grid_left + (column + 0.5) * layout.cell_width, layout.column_label_y), name,
                       font, TEXT_COLOR)
    for row, label in enumerate(labels):
        _draw_row(draw, layout, row, label, values[row], matrix[row], finite[row], cell_colors[row], font)
    _draw_colour_bar(image, draw, layout, tick_texts, font)
    return np.array(image, dtype=np.uint8)


def _draw_row(draw: ImageDraw.ImageDraw, layout: _Layout, row: int, label: str, values: list[str],
              weights: np.ndarray, finite: np.ndarray, colors: np.ndarray, font) -> None:
    top = layout.row_tops[row]
    center_y = top + layout.cell_height / 2
    # Row labels are right-aligned against the grid.
    _, text_top, text_right, text_bottom = font.getbbox(label)
    draw.text((layout.grid_left - PADDING - text_right, center_y - (text_top + text_bottom) / 2), label, font=font,
              fill=TEXT_COLOR)
    for column, text in enumerate(values):
        left = layout.grid_left + column * layout.cell_width
        color = tuple(int(channel) for channel in colors[column]) if finite[column] else MISSING_VALUE_COLOR
        draw.rectangle((left, top, left + layout.cell_width - 1, top + layout.cell_height - 1), fill=color,
                       outline=BACKGROUND)
        draw_centered(draw, (left + layout.cell_width / 2, center_y), text, font,
                       TEXT_COLOR if is_light(color) else BACKGROUND)
    if finite.any():
        best = int(np.argmax(np.where(finite, weights, -np.inf)))
        left = layout.grid_left + best * layout.cell_width
        draw.rectangle((left, top, left + layout.cell_width - 1, top + layout.cell_height - 1),
                       outline=ARGMAX_OUTLINE, width=OUTLINE_WIDTH)


def _draw_colour_bar(image: Image.Image, draw: ImageDraw.ImageDraw, layout: _Layout, tick_texts: Sequence[str],
                     font) -> None:
    """The value range the colours stand for, highest at the top, beside the grid."""
    top, bottom, left = layout.grid_top, layout.grid_bottom, layout.bar_left
    height = bottom - top
    ramp = viridis_like(1.0 - np.arange(height) / max(height - 1, 1))
    image.paste(Image.fromarray(np.repeat(ramp[:, None, :], COLOUR_BAR_WIDTH, axis=1)), (left, top))
    draw.rectangle((left, top, left + COLOUR_BAR_WIDTH - 1, bottom - 1), outline=OUTLINE_COLOR)
    for text, y in zip(tick_texts, (top, top + height / 2, bottom)):
        text_left, text_top, _, text_bottom = font.getbbox(text)
        # Centre each tick on its level, but keep the end ticks inside the bar's span.
        text_y = min(max(y - (text_top + text_bottom) / 2, top - text_top), bottom - text_bottom)
        draw.text((left + COLOUR_BAR_WIDTH + PADDING // 2 - text_left, text_y), text, font=font, fill=TEXT_COLOR)
