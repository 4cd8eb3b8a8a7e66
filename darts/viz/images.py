"""Reading pictures back as arrays, in the form TensorBoard takes (``dataformats="HWC"``)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from darts.viz.palette import BACKGROUND


def load_png(path) -> np.ndarray:
    """An image file as uint8 RGB of shape (H, W, 3), any transparency flattened onto white."""
    with Image.open(path) as image:
        image.load()
        if "A" in image.getbands() or "transparency" in image.info:
            # Converting straight to RGB would turn transparent pixels black (or whatever colour
            # they hide); compositing keeps what a viewer shows.
            rgba = image.convert("RGBA")
            flattened = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
            flattened.alpha_composite(rgba)
            image = flattened
        return np.array(image.convert("RGB"), dtype=np.uint8)


def is_complete_png(path) -> bool:
    """Whether ``path`` holds a whole, decodable PNG (not empty, truncated, or something else)."""
    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                return False
            # verify() checks the chunk checksums but not that the pixel data is all there;
            # decoding it does, and cell pictures are small.
            image.load()
        return True
    except (OSError, SyntaxError, ValueError):  # Pillow reports some broken chunks as SyntaxError
        return False
