"""Pictures for people: heatmaps of architecture weights and drawings of genotype cells.

Everything returns or writes plain RGB images, for TensorBoard (``add_image(..., dataformats="HWC")``)
or for the run directory. Cells are drawn from :class:`darts.spaces.graph.CellGraph`, so this package
knows no search space; their layout is Graphviz's ``dot``, as in the original DARTS code.

* :mod:`~darts.viz.heatmap`: :func:`alpha_heatmap`, an (edges, ops) weight matrix as an image (Pillow);
* :mod:`~darts.viz.dot_source`: :func:`cell_to_dot`, a CellGraph as DOT source;
* :mod:`~darts.viz.render`: :func:`draw_genotype`, every cell of a genotype rendered by ``dot`` to PNG;
* :mod:`~darts.viz.curves`: :func:`line_panels` and :func:`search_diagnostics_chart`, per-epoch values
  as line charts, and :func:`save_png`;
* :mod:`~darts.viz.scatter`: :func:`scatter_chart`, groups of (x, y) points (with their Pareto fronts);
* :mod:`~darts.viz.images`: :func:`load_png`, a picture back as an (H, W, 3) uint8 array;
* :mod:`~darts.viz.palette`: the colours, :func:`op_color` among them.
"""
from darts.viz.curves import Series, line_panels, save_png, search_diagnostics_chart
from darts.viz.dot_source import cell_to_dot
from darts.viz.heatmap import alpha_heatmap
from darts.viz.images import load_png
from darts.viz.palette import ARGMAX_OUTLINE, op_color
from darts.viz.render import draw_genotype
from darts.viz.scatter import pareto_front, scatter_chart

__all__ = ["ARGMAX_OUTLINE", "Series", "alpha_heatmap", "cell_to_dot", "draw_genotype", "line_panels", "load_png",
           "op_color", "pareto_front", "save_png", "scatter_chart", "search_diagnostics_chart"]
