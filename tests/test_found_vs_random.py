"""Found against random cells: random:SEED genotypes, the grouping of the report, its chart, and
the whole comparison end to end at smoke size."""
import csv

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from darts import found_vs_random
from darts.errors import DartsError
from darts.report import genotype_kind
from darts.spaces import build_space
from darts.viz import pareto_front, scatter_chart
from helpers import compose_config, read_json

SMOKE = ["dataset=synthetic", "dataset.num_train=64", "dataset.num_test=32", "space.C=4", "space.layers=3",
         "search.epochs=1", "search.batch_size=16", "search.max_steps_per_epoch=2", "search.eval_max_batches=1",
         "train.C=4", "train.layers=3", "train.epochs=1", "train.batch_size=16", "train.max_steps_per_epoch=2"]


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_random_seed_names_one_uniform_cell_of_the_space(space):
    cfg = compose_config("final", [f"space={space}"])
    built = build_space(cfg.space)
    first, again = built.resolve_genotype("random:7"), built.resolve_genotype(" random:7 ")
    assert first == again and built.parse_genotype(str(first)) == first
    expected = built.architecture_genotype(built.random_architecture(torch.Generator().manual_seed(7)))
    assert first == expected
    drawn = {str(built.resolve_genotype(f"random:{k}")) for k in range(6)}
    assert len(drawn) > 1   # different seeds, different cells
    assert "none" not in built.resolve_genotype("random:3").ops() or space == "nb201"


def test_a_malformed_random_genotype_is_one_clear_error():
    built = build_space(compose_config("final", []).space)
    with pytest.raises(DartsError, match="random:SEED with SEED an integer"):
        built.resolve_genotype("random:x")


@pytest.mark.parametrize("override, kind", [
    ("genotype=random:3", "genotype=random"),
    ("genotype=random\\:3", "genotype=random"),   # as overrides.yaml holds a swept value
    ("genotype=multirun/fvr/search/0", "genotype=searched"),
    ("genotype='/tmp/run/genotype.json'", "genotype=searched"),
    ("genotype=DARTS_V2", "genotype=DARTS_V2"),
    ("genotype=|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|", "genotype=|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|"),
    ("train.epochs=2", "train.epochs=2"),
])
def test_the_report_groups_final_runs_by_the_kind_of_genotype(override, kind):
    assert genotype_kind(override) == kind


def test_pareto_front_keeps_the_points_no_other_point_beats():
    points = [(1.0, 80.0), (2.0, 85.0), (2.5, 84.0), (3.0, 85.0), (4.0, 90.0), (0.5, 70.0), (4.0, 89.0)]
    assert pareto_front(points) == [(0.5, 70.0), (1.0, 80.0), (2.0, 85.0), (4.0, 90.0)]


def test_scatter_chart_draws_each_group_in_its_own_colour():
    image = scatter_chart({"searched": [(1.0, 90.0), (1.2, 91.0)], "random": [(0.8, 88.0), (float("nan"), 1.0)]},
                          "params", "accuracy", front=True)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    colours = {tuple(pixel) for pixel in image.reshape(-1, 3)}
    assert (31, 119, 180) in colours and (214, 39, 40) in colours


def test_found_vs_random_runs_end_to_end_and_reports_two_rows_and_a_plot(tmp_path):
    md_path = found_vs_random.main(["--dir", str(tmp_path), "--seeds", "0,1", "--random", "2", *SMOKE])
    finals = [read_json(tmp_path / "final" / str(job) / "results.json") for job in range(4)]
    assert [r["genotype_source"] for r in finals] == [str(tmp_path / "search" / "0"), str(tmp_path / "search" / "1"),
                                                     "random:0", "random:1"]
    for job in range(2):   # each found cell is the one its search wrote
        assert finals[job]["genotype_string"] == read_json(tmp_path / "search" / str(job) / "results.json")[
            "genotype_string"]
    rows = {row["group"]: row for row in csv.DictReader((tmp_path / "report.csv").open())}
    searched = next(row for group, row in rows.items() if "genotype=searched" in group)
    random_row = next(row for group, row in rows.items() if "genotype=random" in group)
    assert (searched["finished"], random_row["finished"]) == ("2", "2")
    accuracies = [r["test_top1"] for r in finals[2:]]
    mean, spread = np.mean(accuracies), np.std(accuracies, ddof=1)
    assert random_row["test_acc_%"] == f"{mean:.2f} ± {spread:.2f}"
    assert random_row["MACs_M"] != "—" and random_row["params_M"] != "—"
    assert (tmp_path / "report.png").is_file() and "report.png" in md_path.read_text()
    assert OmegaConf.load(tmp_path / "final" / "2" / ".hydra" / "config.yaml").genotype == "random:0"
