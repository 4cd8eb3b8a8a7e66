"""Tests for darts.viz: weight heatmaps, cells as DOT source, cells drawn by Graphviz, PNG loading."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from darts import viz
from darts.spaces.darts_cnn.genotype import DARTS_V2, PRIMITIVES
from darts.spaces.graph import CellGraph
from darts.spaces.nb201.genotype import NB201_EDGE_LABELS, NB201_PRIMITIVES, NB201Genotype

NB201_CELL = NB201Genotype.from_string(
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
DARTS_EDGE_LABELS = [f"n{node}<-{source}" for node in range(4) for source in range(node + 2)]
CELLS = {
    "darts_normal": DARTS_V2.cell_graphs()["normal"],
    "darts_reduce": DARTS_V2.cell_graphs()["reduce"],
    "nb201": NB201_CELL.cell_graphs()["cell"],
    # Node 2 is a dead end and the output is fed straight from the input: left to itself, dot would
    # draw the output before node 2.
    "early_output": CellGraph(inputs=("in",), num_intermediate=2, output="out",
                              edges=((0, 1, "skip_connect"), (1, 2, "sep_conv_3x3"), (0, 3, "avg_pool_3x3"))),
}
HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot is not installed (make setup installs it)")


class FakeGenotype:
    """The one thing draw_genotype may rely on: cell_graphs()."""

    def __init__(self, graphs: dict[str, CellGraph]):
        self.graphs = graphs

    def cell_graphs(self) -> dict[str, CellGraph]:
        return self.graphs


def softmax_weights(rows: int, columns: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(rows, columns, generator=generator), dim=-1)


def outline_bands(image: np.ndarray) -> list[tuple[float, int]]:
    """(horizontal centre, width) of each separate horizontal band of argmax-outline pixels, top to bottom."""
    mask = np.all(image == np.array(viz.ARGMAX_OUTLINE, dtype=np.uint8), axis=-1)
    rows = np.flatnonzero(mask.any(axis=1))
    bands = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1) if rows.size else []
    result = []
    for band in bands:
        columns = np.flatnonzero(mask[band].any(axis=0))
        result.append(((columns.min() + columns.max()) / 2, int(columns.max() - columns.min())))
    return result


def dot_edges(source: str) -> list[tuple[int, int, str | None]]:
    """(source id, target id, op label or None) of every edge statement in DOT source."""
    edges = []
    for line in source.splitlines():
        match = re.fullmatch(r"\s*n(\d+) -> n(\d+) \[(.*)\];", line)
        if match:
            label = re.search(r'label="([^"]*)"', match.group(3))
            edges.append((int(match.group(1)), int(match.group(2)), label.group(1) if label else None))
    return edges


def dot_node_labels(source: str) -> list[str]:
    return re.findall(r'^\s*n\d+ \[label="([^"]*)"', source, flags=re.MULTILINE)


def distinct_colours(pixels: np.ndarray) -> int:
    return len(np.unique(pixels.reshape(-1, 3), axis=0))


def write_fake_dot(tmp_path, body: str):
    """A directory holding an executable named dot, in Python, running ``body`` with dot's arguments
    as ``output`` and ``source`` and a valid PNG at ``reference``."""
    reference = tmp_path / "reference.png"
    Image.new("RGB", (300, 200), (10, 120, 200)).save(reference)
    directory = tmp_path / "bin"
    directory.mkdir()
    script = directory / "dot"
    script.write_text(f"#!{sys.executable}\nimport shutil, sys, time\nreference = {str(reference)!r}\n"
                      f"output, source = sys.argv[3], sys.argv[4]\n{body}\n")
    script.chmod(0o755)
    return directory


# -- heatmap --------------------------------------------------------------------------------------

def test_heatmap_is_an_hwc_uint8_image_with_room_for_every_row_and_op():
    image = viz.alpha_heatmap(softmax_weights(14, len(PRIMITIVES), seed=0), PRIMITIVES, DARTS_EDGE_LABELS,
                              title="normal")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] > 14 * 20 and image.shape[1] > len(PRIMITIVES) * 40
    nb201 = viz.alpha_heatmap(softmax_weights(6, len(NB201_PRIMITIVES), seed=0), NB201_PRIMITIVES,
                              NB201_EDGE_LABELS)
    assert nb201.shape[0] < image.shape[0] and nb201.shape[1] < image.shape[1]


def test_heatmap_outlines_the_argmax_of_each_row():
    weights = np.full((3, 3), 0.1)
    weights[[0, 1, 2], [0, 2, 1]] = 0.8
    # Labels into three different nodes put a gap between the rows, so each outline is its own band.
    bands = outline_bands(viz.alpha_heatmap(weights, ["a", "b", "c"], ["x<-0", "y<-0", "z<-0"]))
    assert len(bands) == 3
    (first, width), (third, _), (second, _) = bands  # rows 0, 1, 2 have argmax columns 0, 2, 1
    assert first < second < third
    assert second - first == pytest.approx(third - second, abs=1)  # equal columns: evenly spaced centres
    assert width < second - first  # one cell outlined per row, not a span of them


def test_heatmap_outlines_no_cell_of_a_row_without_finite_values():
    weights = np.full((3, 2), 0.25)
    weights[:, 1] = 0.75
    weights[1] = [np.nan, np.inf]
    bands = outline_bands(viz.alpha_heatmap(weights, ["a", "b"], ["x<-0", "y<-0", "z<-0"]))
    assert len(bands) == 2 and bands[0][0] == bands[1][0]
    assert viz.alpha_heatmap(np.full((3, 2), 0.5), ["a", "b"], ["x<-0", "y<-0", "z<-0"]).dtype == np.uint8


def test_heatmap_reads_grad_bfloat16_and_numpy_weights_alike_and_follows_them():
    weights = softmax_weights(6, len(NB201_PRIMITIVES), seed=1)
    from_numpy = viz.alpha_heatmap(weights.numpy(), NB201_PRIMITIVES, NB201_EDGE_LABELS)
    from_grad = viz.alpha_heatmap(weights.clone().requires_grad_(True), NB201_PRIMITIVES, NB201_EDGE_LABELS)
    np.testing.assert_array_equal(from_grad, from_numpy)
    # Mixed-precision searches keep alphas in bfloat16, which numpy cannot hold directly.
    from_bfloat16 = viz.alpha_heatmap(weights.to(torch.bfloat16), NB201_PRIMITIVES, NB201_EDGE_LABELS)
    assert from_bfloat16.shape == from_numpy.shape
    other = viz.alpha_heatmap(softmax_weights(6, len(NB201_PRIMITIVES), seed=2), NB201_PRIMITIVES,
                              NB201_EDGE_LABELS)
    assert not np.array_equal(other, from_numpy)


@pytest.mark.parametrize("op_names, row_labels, message", [
    (NB201_PRIMITIVES, NB201_EDGE_LABELS[:-1], "5 row labels given for 6 edge rows"),
    (NB201_PRIMITIVES[:-1], NB201_EDGE_LABELS, "4 op names given for 5 op columns"),
    (NB201_PRIMITIVES, 3, "row_labels must be a sequence"),  # the old positional ``steps``
    (NB201_PRIMITIVES, "1<-0", "row_labels must be a sequence"),
])
def test_heatmap_rejects_labels_that_do_not_fit(op_names, row_labels, message):
    with pytest.raises(ValueError, match=message):
        viz.alpha_heatmap(softmax_weights(6, 5, seed=3), op_names, row_labels)


# -- DOT source -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CELLS))
def test_dot_source_has_every_node_and_edge_of_the_cell(name):
    graph = CELLS[name]
    source = viz.cell_to_dot(graph, title=name)
    assert dot_node_labels(source) == (list(graph.inputs) + [str(node) for node in range(graph.num_intermediate)]
                                       + [graph.output])
    edges = dot_edges(source)
    op_edges = [edge for edge in edges if edge[2] is not None]
    assert op_edges == [tuple(edge) for edge in graph.edges]
    assert [edge for edge in edges if edge[2] is None] == [(node, graph.output_id, None)
                                                           for node in graph.output_sources]


@needs_dot
@pytest.mark.parametrize("name", sorted(CELLS))
def test_graphviz_reads_the_same_nodes_and_edges_from_the_dot_source(name):
    graph = CELLS[name]
    plain = subprocess.run(["dot", "-Tplain"], input=viz.cell_to_dot(graph, title=name), capture_output=True,
                           text=True, check=True, timeout=30).stdout.splitlines()
    assert sum(line.startswith("edge ") for line in plain) == len(graph.edges) + len(graph.output_sources)
    x_of = {int(line.split()[1][1:]): float(line.split()[2]) for line in plain if line.startswith("node ")}
    assert sorted(x_of) == list(range(graph.num_nodes))
    # Left to right as in the DARTS paper: the inputs in the first column, the output alone in the last.
    inputs = range(len(graph.inputs))
    assert len({x_of[node] for node in inputs}) == 1
    assert all(x_of[node] > x_of[0] for node in x_of if node not in inputs)
    assert all(x_of[graph.output_id] > x_of[node] for node in x_of if node != graph.output_id)


def test_dot_source_colours_ops_by_name_and_escapes_text():
    graph = CellGraph(inputs=('say "hi"',), num_intermediate=1,
                      edges=((0, 1, "sep_conv_3x3"), (0, 1, "skip_connect"), (1, 2, "sep_conv_3x3"),
                             (0, 2, "brand_new_op")))
    source = viz.cell_to_dot(graph, title="back\\slash")
    colours = {op: re.findall(rf'label="{op}", color="(#[0-9a-f]{{6}})"', source)
               for op in ("sep_conv_3x3", "skip_connect", "brand_new_op")}
    assert len(colours["sep_conv_3x3"]) == 2 and len(set(colours["sep_conv_3x3"])) == 1
    assert colours["sep_conv_3x3"][0] != colours["skip_connect"][0]
    assert colours["brand_new_op"] == ["#%02x%02x%02x" % viz.op_color("brand_new_op")]
    assert 'label="say \\"hi\\""' in source and 'label="back\\\\slash"' in source


def test_dot_source_rejects_edges_outside_the_cell():
    with pytest.raises(ValueError, match="0->5"):
        viz.cell_to_dot(CellGraph(inputs=("in",), num_intermediate=1, edges=((0, 5, "skip_connect"),)))
    with pytest.raises(ValueError, match="output source 3"):
        viz.cell_to_dot(CellGraph(inputs=("in",), num_intermediate=1, edges=((0, 1, "skip_connect"),),
                                  output_sources=(3,)))


# -- drawing with Graphviz ------------------------------------------------------------------------

@needs_dot
def test_draw_genotype_writes_a_png_and_its_dot_source_per_darts_cell(tmp_path):
    directory = tmp_path / "cells"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        drawings = viz.draw_genotype(DARTS_V2, directory, prefix="epoch_003_")
    assert drawings == {"normal": directory / "epoch_003_normal.png", "reduce": directory / "epoch_003_reduce.png"}
    pictures = {}
    for cell, path in drawings.items():
        pixels = viz.load_png(path)
        assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
        assert pixels.shape[0] > 100 and pixels.shape[1] > 300
        assert distinct_colours(pixels) > 20  # boxes, coloured edges and text, not a blank canvas
        assert path.with_suffix(".dot").read_text() == viz.cell_to_dot(DARTS_V2.cell_graphs()[cell],
                                                                       title=f"{cell} cell")
        pictures[cell] = pixels
    assert not np.array_equal(pictures["normal"][:100, :300], pictures["reduce"][:100, :300])
    assert sorted(path.name for path in directory.iterdir()) == [
        "epoch_003_normal.dot", "epoch_003_normal.png", "epoch_003_reduce.dot", "epoch_003_reduce.png"]


@needs_dot
def test_draw_genotype_draws_any_object_with_cell_graphs(tmp_path):
    drawings = viz.draw_genotype(NB201_CELL, tmp_path)
    assert drawings == {"cell": tmp_path / "cell.png"}
    assert viz.load_png(drawings["cell"]).shape[2] == 3
    lone = CellGraph(inputs=("x",), num_intermediate=0, edges=((0, 1, "identity"),), output="y")
    assert viz.draw_genotype(FakeGenotype({"tiny": lone}), tmp_path, prefix="p_") == {"tiny": tmp_path / "p_tiny.png"}


def test_draw_genotype_without_dot_warns_once_and_still_writes_the_dot_sources(tmp_path, monkeypatch):
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    directory = tmp_path / "cells"
    directory.mkdir()
    (directory / "normal.png").write_bytes(b"a picture of an older genotype")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert viz.draw_genotype(DARTS_V2, directory) == {}
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "dot is not on PATH" in message and "apt-get install graphviz" in message and "make setup" in message
    # No picture is left that disagrees with the sources beside it.
    assert sorted(path.name for path in directory.iterdir()) == ["normal.dot", "reduce.dot"]
    assert (directory / "reduce.dot").read_text() == viz.cell_to_dot(DARTS_V2.cell_graphs()["reduce"],
                                                                     title="reduce cell")


@pytest.mark.parametrize("body, message", [
    ("open(output, 'wb').write(b'\\x89PNG\\r\\n\\x1a\\n half')\n"
     "sys.stderr.write('Warning: ignore me\\nError: syntax error in line 3\\n')\nsys.exit(1)",
     "status 1: Error: syntax error in line 3"),
    # Exiting 0 over a cut-off file, as a dot killed mid-write or out of disk space can.
    ("shutil.copyfile(reference, output)\n"
     "open(output, 'r+b').truncate(len(open(output, 'rb').read()) // 2)",
     "did not write a complete PNG"),
    ("time.sleep(30)", "did not finish within 0.5 s"),
])
def test_a_failing_dot_warns_and_leaves_no_half_written_png(tmp_path, monkeypatch, body, message):
    monkeypatch.setenv("PATH", str(write_fake_dot(tmp_path, body)))
    directory = tmp_path / "cells"
    directory.mkdir()
    (directory / "cell.png").write_bytes(b"a picture of an older genotype")
    with pytest.warns(RuntimeWarning, match=re.escape(message)) as caught:
        assert viz.draw_genotype(NB201_CELL, directory, dot_timeout_s=0.5) == {}
    assert len(caught) == 1
    assert sorted(path.name for path in directory.iterdir()) == ["cell.dot"]


def test_a_dot_failing_for_one_cell_still_delivers_the_other(tmp_path, monkeypatch):
    body = "if 'reduce' in source: sys.exit(3)\nshutil.copyfile(reference, output)"
    monkeypatch.setenv("PATH", str(write_fake_dot(tmp_path, body)))
    with pytest.warns(RuntimeWarning, match=r"reduce \(dot exited with status 3"):
        drawings = viz.draw_genotype(DARTS_V2, tmp_path / "cells")
    assert drawings == {"normal": tmp_path / "cells" / "normal.png"}
    assert viz.load_png(drawings["normal"]).shape == (200, 300, 3)
    assert sorted(path.name for path in (tmp_path / "cells").iterdir()) == ["normal.dot", "normal.png",
                                                                           "reduce.dot"]


# -- loading pictures -----------------------------------------------------------------------------

def test_load_png_flattens_transparency_onto_white(tmp_path):
    transparent = Image.new("RGBA", (4, 3), (255, 0, 0, 0))
    transparent.putpixel((0, 0), (0, 0, 255, 255))
    transparent.save(tmp_path / "alpha.png")
    pixels = viz.load_png(tmp_path / "alpha.png")
    assert pixels.shape == (3, 4, 3) and pixels.dtype == np.uint8
    assert tuple(pixels[0, 0]) == (0, 0, 255)
    assert tuple(pixels[2, 3]) == (255, 255, 255)
