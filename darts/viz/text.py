"""Text on Pillow pictures: one default font at any size, and how much room a label takes."""
from __future__ import annotations

import functools

from PIL import ImageDraw, ImageFont


@functools.cache
def default_font(size: int):
    """Pillow's bundled font at ``size`` pixels, or its fixed bitmap font where that cannot be sized."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def text_width(text: str, font) -> int:
    left, _, right, _ = font.getbbox(text)
    return right - left


def label_height(font) -> int:
    # One height for every label of a font, so that rows of text line up whatever letters they hold.
    _, top, _, bottom = font.getbbox("Ag{}_0|<-")
    return bottom - top


def draw_centered(draw: ImageDraw.ImageDraw, center: tuple[float, float], text: str, font, fill) -> None:
    # Text anchors work only with FreeType fonts, so centre the ink box by hand.
    left, top, right, bottom = font.getbbox(text)
    draw.text((center[0] - (left + right) / 2, center[1] - (top + bottom) / 2), text, font=font, fill=fill)
