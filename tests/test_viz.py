"""Tests for darts.viz: alpha heatmaps, cell drawings with Graphviz and with Pillow, PNG loading."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

import darts.viz as viz
from darts.errors import DartsError
from darts.genotypes import DARTS_V2, PRIMITIVES

NB201_OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
NB201_EDGES = ["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"]
CELLS = {
    "normal": (DARTS_V2.normal, DARTS_V2.normal_concat),
    "reduce": (DARTS_V2.reduce, DARTS_V2.reduce_concat),
}


def softmax_weights(rows: int, columns: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(rows, columns, generator=generator), dim=-1)


def assert_valid_png(path, min_width=200, min_height=100) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    pixels = viz.load_png(path)
    height, width, channels = pixels.shape
    assert channels == 3 and pixels.dtype == np.uint8
    assert width >= min_width and height >= min_height
    # A real drawing has background, boxes, lines and coloured text, not a blank canvas.
    packed_colors = pixels.reshape(-1, 3).astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.int32)
    assert len(np.unique(packed_colors)) > 20
    return pixels


@pytest.fixture
def dot_calls(monkeypatch):
    """Record every Graphviz run while still letting it happen."""
    calls = []
    real_run = subprocess.run

    def recording_run(command, *args, **kwargs):
        calls.append(list(command))
        return real_run(command, *args, **kwargs)

    monkeypatch.setattr(viz.subprocess, "run", recording_run)
    return calls


# -- heatmap ------------------------------------------------------------------------------------

def test_edge_labels_follow_supernet_edge_order():
    assert viz.edge_labels(2) == ["n0<-c_{k-2}", "n0<-c_{k-1}", "n1<-c_{k-2}", "n1<-c_{k-1}", "n1<-n0"]
    assert len(viz.edge_labels(4)) == viz.edge_count(4) == 14
    assert viz.edge_labels(4)[-1] == "n3<-n2"


def test_heatmap_is_an_hwc_uint8_image():
    image = viz.alpha_heatmap(softmax_weights(14, len(PRIMITIVES), seed=0), PRIMITIVES, steps=4, title="normal")
    assert image.dtype == np.uint8
    assert image.ndim == 3 and image.shape[2] == 3
    # Fourteen rows of readable cells and eight op columns need real room.
    assert image.shape[0] > 14 * 20 and image.shape[1] > len(PRIMITIVES) * 40


def test_heatmap_accepts_numpy_and_grad_tensors_alike():
    weights = softmax_weights(14, len(PRIMITIVES), seed=1)
    from_tensor = viz.alpha_heatmap(weights.clone().requires_grad_(True), PRIMITIVES)
    from_numpy = viz.alpha_heatmap(weights.numpy(), PRIMITIVES)
    np.testing.assert_array_equal(from_tensor, from_numpy)
    # Mixed-precision searches keep alphas in bfloat16, which numpy cannot hold directly.
    assert viz.alpha_heatmap(weights.to(torch.bfloat16), PRIMITIVES).shape == from_numpy.shape


def test_heatmap_changes_with_the_weights_and_only_with_them():
    first = viz.alpha_heatmap(softmax_weights(14, len(PRIMITIVES), seed=2), PRIMITIVES)
    again = viz.alpha_heatmap(softmax_weights(14, len(PRIMITIVES), seed=2), PRIMITIVES)
    other = viz.alpha_heatmap(softmax_weights(14, len(PRIMITIVES), seed=3), PRIMITIVES)
    np.testing.assert_array_equal(first, again)
    assert first.shape == other.shape
    assert not np.array_equal(first, other)


def test_heatmap_outlines_each_rows_argmax():
    weights = np.full((5, 3), 0.1)
    weights[np.arange(5), [0, 1, 2, 1, 0]] = 0.8
    image = viz.alpha_heatmap(weights, ["a", "b", "c"], steps=2)
    outline = np.all(image == np.array(viz.ARGMAX_OUTLINE, dtype=np.uint8), axis=-1)
    rows_with_outline = np.flatnonzero(outline.any(axis=1))
    columns_with_outline = np.flatnonzero(outline.any(axis=0))
    assert rows_with_outline.size > 0
    # Outlines in all three op columns: the right edge of the outlined cells spans the grid's width.
    assert columns_with_outline.max() - columns_with_outline.min() > 2 * 40


def test_heatmap_for_nas_bench_201_uses_given_row_labels():
    weights = softmax_weights(len(NB201_EDGES), len(NB201_OPS), seed=4)
    image = viz.alpha_heatmap(weights, NB201_OPS, title="nb201", row_labels=NB201_EDGES)
    assert image.dtype == np.uint8 and image.shape[2] == 3
    with pytest.raises(DartsError, match="6 edge rows"):
        viz.alpha_heatmap(weights, NB201_OPS)  # 6 rows fit no DARTS cell of 4 steps
    with pytest.raises(DartsError, match="row labels"):
        viz.alpha_heatmap(weights, NB201_OPS, row_labels=NB201_EDGES[:-1])
    with pytest.raises(DartsError, match="op columns"):
        viz.alpha_heatmap(weights, NB201_OPS[:-1], row_labels=NB201_EDGES)


def test_heatmap_survives_constant_and_non_finite_weights():
    constant = viz.alpha_heatmap(np.full((5, 4), 0.25), ["a", "b", "c", "d"], steps=2)
    holes = np.full((5, 4), 0.25)
    holes[0, 0] = np.nan
    holes[1, :] = np.inf
    with_holes = viz.alpha_heatmap(holes, ["a", "b", "c", "d"], steps=2)
    assert constant.shape == with_holes.shape


def test_viridis_like_is_monotonic_in_lightness():
    colors = viz.viridis_like(np.linspace(0, 1, 50)).astype(float)
    lightness = colors @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(lightness) > 0)
    assert tuple(viz.viridis_like(-1.0)) == (68, 1, 84) and tuple(viz.viridis_like(2.0)) == (253, 231, 37)


# -- cell drawings ------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["normal", "reduce"])
def test_pil_backend_draws_darts_v2_cells(tmp_path, cell, dot_calls):
    pairs, concat = CELLS[cell]
    path = viz.draw_cell(pairs, concat, tmp_path / f"{cell}.png", title=f"{cell} cell", force_backend="pil")
    assert path == tmp_path / f"{cell}.png"
    assert_valid_png(path, min_width=600, min_height=250)
    assert dot_calls == []


@pytest.mark.parametrize("cell", ["normal", "reduce"])
def test_dot_backend_draws_darts_v2_cells_when_graphviz_is_installed(tmp_path, cell, dot_calls):
    pairs, concat = CELLS[cell]
    path = tmp_path / f"{cell}.png"
    if shutil.which("dot") is None:
        # Without Graphviz a forced 'dot' must say so rather than quietly drawing something else.
        with pytest.raises(DartsError, match="not on PATH"):
            viz.draw_cell(pairs, concat, path, force_backend="dot")
        assert dot_calls == []
        return
    assert viz.draw_cell(pairs, concat, path, title=f"{cell} cell", force_backend="dot") == path
    assert len(dot_calls) == 1 and dot_calls[0][1:3] == ["-Tpng", "-o"]
    assert_valid_png(path)


def test_auto_backend_falls_back_to_pil_without_graphviz(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)

    def no_subprocess(*args, **kwargs):
        raise AssertionError("dot must not be run when it is not on PATH")

    monkeypatch.setattr(viz.subprocess, "run", no_subprocess)
    drawings = viz.draw_genotype(DARTS_V2, tmp_path)
    assert set(drawings) == {"normal", "reduce"}
    for path in drawings.values():
        assert_valid_png(path, min_width=600, min_height=250)


def test_auto_backend_falls_back_to_pil_when_dot_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: "/usr/bin/dot")

    def broken_dot(command, *args, **kwargs):
        raise subprocess.CalledProcessError(1, command, stderr=b"Error: syntax error in line 1")

    monkeypatch.setattr(viz.subprocess, "run", broken_dot)
    pairs, concat = CELLS["normal"]
    with pytest.warns(RuntimeWarning, match="syntax error"):
        path = viz.draw_cell(pairs, concat, tmp_path / "normal.png")
    assert_valid_png(path, min_width=600, min_height=250)
    with pytest.raises(DartsError, match="status 1"):
        viz.draw_cell(pairs, concat, tmp_path / "forced.png", force_backend="dot")


def test_auto_backend_falls_back_to_pil_when_dot_hangs(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: "/usr/bin/dot")

    def hanging_dot(command, *args, **kwargs):
        raise subprocess.TimeoutExpired(command, kwargs.get("timeout"))

    monkeypatch.setattr(viz.subprocess, "run", hanging_dot)
    pairs, concat = CELLS["reduce"]
    with pytest.warns(RuntimeWarning, match="did not finish"):
        path = viz.draw_cell(pairs, concat, tmp_path / "reduce.png")
    assert_valid_png(path, min_width=600, min_height=250)


def test_draw_genotype_writes_prefixed_normal_and_reduce(tmp_path):
    drawings = viz.draw_genotype(DARTS_V2, tmp_path / "cells", prefix="epoch_003_", force_backend="pil")
    assert drawings == {"normal": tmp_path / "cells" / "epoch_003_normal.png",
                        "reduce": tmp_path / "cells" / "epoch_003_reduce.png"}
    normal, reduce = (viz.load_png(path) for path in drawings.values())
    assert not (normal.shape == reduce.shape and np.array_equal(normal, reduce))


def test_pil_backend_handles_an_input_used_twice_and_odd_steps(tmp_path):
    pairs = [("sep_conv_3x3", 0), ("dil_conv_5x5", 0), ("skip_connect", 1), ("my_new_op", 2)]
    assert_valid_png(viz.draw_cell(pairs, [0, 2, 3], tmp_path / "twice.png", force_backend="pil"))
    single = viz.draw_cell([("skip_connect", 1)], [2], tmp_path / "single.png", steps=1, force_backend="pil")
    assert_valid_png(single, min_width=150, min_height=50)


def test_dot_source_has_one_labelled_edge_per_pair_and_escapes_text():
    pairs, concat = CELLS["normal"]
    source = viz.cell_to_dot(pairs, concat, title='a "quoted" \\ title')
    assert source.count("->") == len(pairs) + len(concat)
    assert source.count('label="sep_conv_3x3"') == sum(op == "sep_conv_3x3" for op, _ in pairs)
    assert 'label="a \\"quoted\\" \\\\ title"' in source


@pytest.mark.parametrize("pairs, concat, steps, message", [
    ([("sep_conv_3x3", 2), ("skip_connect", 0)], [2], None, "cannot take input 2"),
    ([("sep_conv_3x3", 0)], [2], None, "two"),
    ([("sep_conv_3x3", 0), ("skip_connect", 1)], [5], None, "concat index 5"),
    ([], [], None, "at least one"),
    ([("sep_conv_3x3", 0), ("skip_connect", 1), ("skip_connect", 1)], [2], 2, "split evenly"),
])
def test_draw_cell_rejects_malformed_cells(tmp_path, pairs, concat, steps, message):
    with pytest.raises(DartsError, match=message):
        viz.draw_cell(pairs, concat, tmp_path / "bad.png", steps=steps, force_backend="pil")


def test_draw_cell_rejects_unknown_backend(tmp_path):
    pairs, concat = CELLS["normal"]
    with pytest.raises(DartsError, match="unknown drawing backend"):
        viz.draw_cell(pairs, concat, tmp_path / "x.png", force_backend="svg")


def test_load_png_flattens_transparency_onto_white(tmp_path):
    transparent = Image.new("RGBA", (4, 3), (255, 0, 0, 0))
    transparent.putpixel((0, 0), (0, 0, 255, 255))
    transparent.save(tmp_path / "alpha.png")
    pixels = viz.load_png(tmp_path / "alpha.png")
    assert pixels.shape == (3, 4, 3) and pixels.dtype == np.uint8
    assert tuple(pixels[0, 0]) == (0, 0, 255)
    assert tuple(pixels[2, 3]) == (255, 255, 255)
