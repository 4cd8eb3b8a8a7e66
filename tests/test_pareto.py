"""A Pareto sweep end to end at smoke size, and the accuracy-against-cost table on recorded points."""
import pytest

from darts import pareto
from darts.resources.report import cost_points, cost_table, on_front
from helpers import read_json

SMOKE = ["dataset=synthetic", "dataset.num_train=64", "dataset.num_test=32", "space.C=4", "space.layers=3",
         "search.epochs=1", "search.batch_size=16", "search.max_steps_per_epoch=2", "search.eval_max_batches=1",
         "train.C=4", "train.layers=3", "train.epochs=1", "train.batch_size=16", "train.max_steps_per_epoch=2",
         "train.stem_stride=1", "resource.latency.cache=null", "resource.latency.repeats=2"]


def final(accuracy, params_m, macs, latency, source="x"):
    return {"kind": "final", "test_top1": accuracy, "params_m": params_m, "multiply_adds": macs,
            "latency_ms": latency, "genotype_source": source, "seed": 0}


def test_the_front_keeps_the_rows_no_other_row_beats_on_each_cost():
    entries = [("a", final(90.0, 0.20, 8e6, 3.0)), ("b", final(88.0, 0.10, 9e6, 2.0)),
               ("c", final(87.0, 0.15, 5e6, 4.0)), ("d", final(90.0, 0.25, 9e6, 5.0))]
    points, accuracy_name = cost_points(entries)
    assert accuracy_name == "test top-1 (%)"
    by_label = {p["label"]: p for p in points}
    fronts = {label: [key for key in ("params", "macs", "latency_ms") if on_front(p, points, key)]
              for label, p in by_label.items()}
    # d is as accurate as a and costs more of everything: on no front. c is the cheapest in MACs.
    assert fronts == {"a": ["params", "macs", "latency_ms"], "b": ["params", "latency_ms"], "c": ["macs"], "d": []}
    lines = cost_table(points, accuracy_name)
    assert lines[2].startswith("| b | 0 | 88.00 | 0.100 | 9.000 | 2.00 | params, latency |")
    assert len(lines) == 2 + 4


def test_a_pareto_sweep_searches_trains_and_reports_each_setting(tmp_path):
    md_path = pareto.main(["--dir", str(tmp_path), "--experiment", "pareto_fashion_mnist",
                           "--sweep", "resource.weight=0,3", *SMOKE])
    text = md_path.read_text()
    assert "## Accuracy against cost" in text
    for weight in ("0", "3"):
        assert f"| resource.weight={weight} | 0 |" in text
    for name in ("pareto_params.png", "pareto_macs.png", "pareto_latency.png"):
        assert (tmp_path / name).is_file()
    for job in ("0", "1"):
        search = read_json(tmp_path / "search" / job / "results.json")
        trained = read_json(tmp_path / "final" / job / "results.json")
        # The search's prediction of its final network is the network final training built.
        assert search["final_network"]["params"] == round(trained["params_m"] * 1e6)
        assert search["final_network"]["macs"] == trained["multiply_adds"]
        assert trained["latency_ms"] > 0


def test_a_malformed_sweep_is_refused():
    with pytest.raises(SystemExit, match="--sweep needs KEY=V1,V2"):
        pareto.main(["--dir", "/tmp/unused", "--sweep", "resource.weight"])
