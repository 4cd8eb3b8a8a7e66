"""Line charts of per-epoch values, drawn with Pillow as uint8 RGB arrays (H, W, 3).

:func:`line_panels` stacks one panel per series over a shared epoch axis, with an optional
vertical marker (an early stop); :func:`search_diagnostics_chart` is the one a search run writes:
the dominant Hessian eigenvalue and the normal cell's skip connections against epochs.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
from PIL import Image, ImageDraw

from darts.viz.palette import BACKGROUND, OUTLINE_COLOR, TEXT_COLOR
from darts.viz.text import default_font, label_height, text_width

PANEL_WIDTH, PANEL_HEIGHT = 560, 170
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 30
LINE_COLOR = (31, 119, 180)
MARKER_COLOR = (214, 39, 40)
GRID_COLOR = (225, 225, 225)


class Series(NamedTuple):
    title: str
    points: Sequence[tuple[float, float]]   # (epoch, value); NaN values are left out


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """About ``count`` round tick values covering [low, high]."""
    if not math.isfinite(low) or not math.isfinite(high):
        return []
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def tick_label(value: float) -> str:
    return f"{value:.3g}"


def draw_panel(draw: ImageDraw.ImageDraw, origin_y: int, series: Series, x_max: float,
               marker_x: float | None) -> None:
    font, title_font = default_font(11), default_font(13)
    left, right = LEFT, PANEL_WIDTH - RIGHT
    top, bottom = origin_y + TOP, origin_y + PANEL_HEIGHT - BOTTOM
    draw.text((left, origin_y + 6), series.title, font=title_font, fill=TEXT_COLOR)
    points = [(x, y) for x, y in series.points if y is not None and math.isfinite(y)]
    values = [y for _, y in points] or [0.0]
    low, high = min(values), max(values)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    pad = 0.05 * (high - low)
    low, high = low - pad, high + pad

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        return (left + (right - left) * (x / x_max if x_max else 0.0), bottom - (bottom - top) * (y - low) / (high - low))

    for tick in nice_ticks(low, high):
        _, y = to_pixel(0, tick)
        draw.line([(left, y), (right, y)], fill=GRID_COLOR)
        label = tick_label(tick)
        draw.text((left - 6 - text_width(label, font), y - label_height(font) / 2), label, font=font, fill=TEXT_COLOR)
    for tick in nice_ticks(0, x_max):
        x, _ = to_pixel(tick, low)
        label = tick_label(tick)
        draw.text((x - text_width(label, font) / 2, bottom + 6), label, font=font, fill=TEXT_COLOR)
    draw.rectangle([left, top, right, bottom], outline=OUTLINE_COLOR)
    if marker_x is not None:
        x, _ = to_pixel(marker_x, low)
        draw.line([(x, top), (x, bottom)], fill=MARKER_COLOR, width=2)
    pixels = [to_pixel(x, y) for x, y in points]
    if len(pixels) > 1:
        draw.line(pixels, fill=LINE_COLOR, width=2)
    for x, y in pixels:
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=LINE_COLOR)
    if not points:
        draw.text((left + 8, (top + bottom) / 2), "not measured", font=font, fill=TEXT_COLOR)


def line_panels(panels: Sequence[Series], x_max: float, marker_x: float | None = None,
                x_label: str = "epoch") -> np.ndarray:
    """One panel per series, stacked, sharing the x axis [0, x_max]; ``marker_x`` draws a red
    vertical line in every panel. Returns (H, W, 3) uint8."""
    height = PANEL_HEIGHT * len(panels) + 24
    image = Image.new("RGB", (PANEL_WIDTH, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for index, series in enumerate(panels):
        draw_panel(draw, index * PANEL_HEIGHT, series, x_max, marker_x)
    font = default_font(11)
    draw.text(((PANEL_WIDTH - text_width(x_label, font)) / 2, height - 18), x_label, font=font, fill=TEXT_COLOR)
    return np.array(image, dtype=np.uint8)


def search_diagnostics_chart(history: Sequence[dict], epochs: int) -> np.ndarray:
    """The eigenvalue trajectory and the normal cell's skip connections of a search's history
    (results.json records), with the early stop, if any, marked at its stopping epoch."""
    stop = history[-1].get("stop") if history else None
    eigenvalues = [(r["epoch"], r["eigenvalue"]) for r in history if r.get("eigenvalue") is not None]
    skips = [(r["epoch"], r["normal_skip_connects"]) for r in history if r.get("normal_skip_connects") is not None]
    title = "dominant Hessian eigenvalue (alphas, validation loss)"
    panels = [Series(title, eigenvalues), Series("skip connections in the normal cell", skips)]
    return line_panels(panels, max(epochs - 1, 1), marker_x=stop["epoch"] if stop else None)


def save_png(image: np.ndarray, path) -> Path:
    """Write an (H, W, 3) uint8 array as a PNG, atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    Image.fromarray(image).save(partial, format="PNG")
    os.replace(partial, path)
    return path
