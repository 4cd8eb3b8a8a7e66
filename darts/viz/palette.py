"""Colours shared by the heatmap and the cell drawings, as RGB triples.

Op colours are fixed per op name, so the same op looks the same in every picture of every run,
whatever space or epoch drew it.
"""
from __future__ import annotations

import zlib
from types import MappingProxyType

import numpy as np

BACKGROUND = (255, 255, 255)
TEXT_COLOR = (20, 20, 20)
OUTLINE_COLOR = (60, 60, 60)
MISSING_VALUE_COLOR = (200, 200, 200)  # a NaN or infinite weight: no place on the colour ramp
# Red reads against every colour of the viridis-like ramp, from dark purple to yellow.
ARGMAX_OUTLINE = (230, 20, 60)

# The fills of the original DARTS drawings (Graphviz's darkseagreen2, lightblue, palegoldenrod).
INPUT_FILL = (180, 238, 180)
INTERMEDIATE_FILL = (173, 216, 230)
OUTPUT_FILL = (238, 232, 170)
# Concatenation carries no op: a quiet grey keeps the eye on the op edges.
CONCAT_EDGE_COLOR = (150, 150, 150)

# Dark enough to be read as text on white, distinct enough to tell edges apart. Read-only, so no
# caller can recolour an op for everyone else.
OP_COLORS = MappingProxyType({
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
    # The DARTS recurrent cell's activations.
    "tanh": (200, 30, 40),
    "relu": (31, 102, 170),
    "sigmoid": (30, 140, 50),
    "identity": (80, 80, 80),
})
# For op names outside the table; none of them is close to a colour in it.
FALLBACK_OP_COLORS = ((0, 130, 140), (160, 60, 100), (90, 110, 30), (70, 70, 160), (170, 90, 30))

# Viridis sampled at nine evenly spaced points; linear interpolation between them keeps lightness
# monotonic, so the ramp still reads correctly in greyscale.
VIRIDIS_ANCHORS = (
    (68, 1, 84),
    (72, 40, 120),
    (59, 82, 139),
    (44, 114, 142),
    (33, 145, 140),
    (39, 173, 129),
    (94, 201, 98),
    (170, 220, 50),
    (253, 231, 37),
)


def op_color(op: str) -> tuple[int, int, int]:
    """The colour of an op: from the fixed table; for an activation variant of a table op
    (``sep_conv_3x3_gelu``: the op's name, an underscore, the activation) that op's colour, as the
    edge's label names the activation; else derived from the name alone."""
    if op in OP_COLORS:
        return OP_COLORS[op]
    # The longest table name the op extends, so a variant never takes a shorter op's colour.
    variant_of = [name for name in OP_COLORS if op.startswith(f"{name}_")]
    if variant_of:
        return OP_COLORS[max(variant_of, key=len)]
    # crc32 rather than hash(): string hashes change from one interpreter run to the next.
    return FALLBACK_OP_COLORS[zlib.crc32(op.encode()) % len(FALLBACK_OP_COLORS)]


def hex_color(color) -> str:
    """'#rrggbb', the form Graphviz and most other tools accept."""
    return "#" + "".join(f"{int(channel):02x}" for channel in color)


def is_light(color) -> bool:
    """Whether dark text reads better than white text on ``color`` (perceived luminance)."""
    red, green, blue = (channel / 255 for channel in color)
    return 0.299 * red + 0.587 * green + 0.114 * blue > 0.55


def viridis_like(fractions) -> np.ndarray:
    """uint8 RGB colours of shape ``fractions.shape + (3,)`` for values in [0, 1] (clipped)."""
    anchors = np.asarray(VIRIDIS_ANCHORS, dtype=np.float64)
    positions = np.clip(np.asarray(fractions, dtype=np.float64), 0.0, 1.0) * (len(anchors) - 1)
    lower = np.minimum(np.floor(positions).astype(int), len(anchors) - 2)
    blend = (positions - lower)[..., None]
    colors = anchors[lower] * (1 - blend) + anchors[lower + 1] * blend
    return np.rint(colors).astype(np.uint8)
