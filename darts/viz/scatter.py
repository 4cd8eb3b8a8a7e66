"""A scatter chart of named groups of (x, y) points, drawn with Pillow as a uint8 RGB array (H, W, 3).

What sweeps are compared with: the test accuracy of found against random cells over their
parameters, or accuracy against a cost; ``front=True`` joins each group's Pareto-optimal points
(the largest y for at most that x), the trade-off curve a resource-aware sweep is read by.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from darts.viz.curves import GRID_COLOR, nice_ticks, tick_label
from darts.viz.palette import BACKGROUND, OUTLINE_COLOR, TEXT_COLOR
from darts.viz.text import default_font, label_height, text_width

WIDTH, HEIGHT = 620, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 200, 36, 46
# Tableau's first colours: distinct for the few groups a comparison has, in every picture the same order.
GROUP_COLORS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14),
                (140, 86, 75), (227, 119, 194), (127, 127, 127))


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats (x no larger and y larger, or x smaller and y no smaller),
    by increasing x: the best y reachable within each x."""
    front, best_y = [], -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best_y:
            front.append((x, y))
            best_y = y
    return front


def axis_range(values: list[float]) -> tuple[float, float]:
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    pad = 0.08 * (high - low)
    return low - pad, high + pad


def scatter_chart(groups: Mapping[str, Sequence[tuple[float, float]]], x_label: str, y_label: str,
                  title: str = "", front: bool = False) -> np.ndarray:
    """One colour per group (legend on the right); NaN or None coordinates are left out."""
    clean = {name: [(float(x), float(y)) for x, y in points
                    if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
             for name, points in groups.items()}
    every = [p for points in clean.values() for p in points]
    (x_low, x_high), (y_low, y_high) = axis_range([x for x, _ in every]), axis_range([y for _, y in every])
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font, title_font = default_font(11), default_font(13)
    left, right, top, bottom = LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        return (left + (right - left) * (x - x_low) / (x_high - x_low),
                bottom - (bottom - top) * (y - y_low) / (y_high - y_low))

    for tick in nice_ticks(y_low, y_high):
        _, y = to_pixel(x_low, tick)
        draw.line([(left, y), (right, y)], fill=GRID_COLOR)
        label = tick_label(tick)
        draw.text((left - 6 - text_width(label, font), y - label_height(font) / 2), label, font=font, fill=TEXT_COLOR)
    for tick in nice_ticks(x_low, x_high):
        x, _ = to_pixel(tick, y_low)
        label = tick_label(tick)
        draw.text((x - text_width(label, font) / 2, bottom + 6), label, font=font, fill=TEXT_COLOR)
    draw.rectangle([left, top, right, bottom], outline=OUTLINE_COLOR)
    draw.text((left, 4), title, font=title_font, fill=TEXT_COLOR)
    draw.text(((left + right - text_width(x_label, font)) / 2, HEIGHT - 20), x_label, font=font, fill=TEXT_COLOR)
    draw.text((8, top - 16), y_label, font=font, fill=TEXT_COLOR)
    for index, (name, points) in enumerate(clean.items()):
        color = GROUP_COLORS[index % len(GROUP_COLORS)]
        if front and len(points) > 1:
            draw.line([to_pixel(x, y) for x, y in pareto_front(points)], fill=color, width=2)
        for x, y in points:
            px, py = to_pixel(x, y)
            draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=color)
        legend_y = top + index * 18
        draw.rectangle([right + 14, legend_y + 2, right + 24, legend_y + 12], fill=color)
        draw.text((right + 30, legend_y), f"{name} ({len(points)})"[:30], font=font, fill=TEXT_COLOR)
    if not every:
        draw.text((left + 8, (top + bottom) / 2), "no finished runs", font=font, fill=TEXT_COLOR)
    return np.array(image, dtype=np.uint8)
