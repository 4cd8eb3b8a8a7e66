"""The accuracy-against-cost table and Pareto plots of a sweep (``python -m darts.report DIR``).

A point is a finished run: a final training (test top-1 against the trained network's parameters,
multiply-adds and latency) or, in a sweep without final runs, a search (alpha-split accuracy against
its ``final_network`` costs, measured on the network train_final.py would build). Final runs of a
searched cell are labelled by the overrides of the search that found it (``resource.weight=0.5``),
so a resource sweep reads as one row per setting. A row is on the Pareto front of a cost when no other
row is at least as accurate for at most that cost and better in one of the two.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from darts import viz

# (results key of the cost, column and axis name, unit divisor)
COSTS = (("params", "params (M)", 1e6), ("macs", "MACs (M)", 1e6), ("latency_ms", "latency (ms)", 1.0))
IGNORED = ("seed", "hydra.", "resume", "genotype=")


def search_label(search_dir: Path) -> str | None:
    """The overrides that made the search in ``search_dir`` (seed and Hydra's own left out), or None."""
    overrides_file = search_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        return None
    overrides = yaml.safe_load(overrides_file.read_text()) or []
    kept = [str(o) for o in overrides if not str(o).lstrip("+~").startswith(IGNORED)]
    return " ".join(sorted(kept)) or "(defaults)"


def cost_point(label: str, results: dict) -> dict | None:
    """{label, accuracy, params, macs, latency_ms, seed} of a finished run, or None without costs."""
    if results.get("kind") == "final":
        params_m = results.get("params_m")
        costs = {"params": None if params_m is None else round(params_m * 1e6),
                 "macs": results.get("multiply_adds"), "latency_ms": results.get("latency_ms")}
        accuracy = results.get("test_top1")
        source = Path(str(results.get("genotype_source", "")))
        label = (source.is_dir() and search_label(source)) or label
    elif results.get("kind") == "search" and results.get("final_network"):
        costs = {key: results["final_network"].get(key) for key, _, _ in COSTS}
        accuracy = results.get("alpha_eval_acc")
    else:
        return None
    if accuracy is None:
        return None
    return {"label": label, "accuracy": accuracy, "seed": results.get("seed"), **costs}


def on_front(point: dict, points: list[dict], key: str) -> bool:
    """No other point is at least as accurate for at most the cost, and strictly better in one."""
    if point[key] is None:
        return False
    return not any(other is not point and other[key] is not None and other[key] <= point[key]
                   and other["accuracy"] >= point["accuracy"]
                   and (other[key] < point[key] or other["accuracy"] > point["accuracy"]) for other in points)


def cost_points(entries: list[tuple[str, dict]]) -> tuple[list[dict], str]:
    """The points of a sweep's (group label, results) and what their accuracy is: the final runs'
    test top-1 if the sweep has final runs, else the searches' alpha-split accuracy."""
    finals = [point for label, results in entries if results.get("kind") == "final"
              for point in [cost_point(label, results)] if point]
    if finals:
        return distinguishing_labels(finals), "test top-1 (%)"
    searches = [point for label, results in entries for point in [cost_point(label, results)] if point]
    return distinguishing_labels(searches), "alpha-split accuracy (%) of the search"


def distinguishing_labels(points: list[dict]) -> list[dict]:
    """Each point labelled by the overrides that tell it apart: those not every point shares."""
    if len({point["label"] for point in points}) < 2:
        return points
    shared = set.intersection(*(set(point["label"].split()) for point in points))
    return [{**point, "label": " ".join(t for t in point["label"].split() if t not in shared) or point["label"]}
            for point in points]


def cost_table(points: list[dict], accuracy_name: str) -> list[str]:
    """Markdown lines: one row per run, sorted by parameters, with the fronts each row is on."""
    header = ["run", "seed", accuracy_name] + [name for _, name, _ in COSTS] + ["Pareto-optimal in"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for point in sorted(points, key=lambda p: (p["params"] is None, p["params"] or 0, -p["accuracy"])):
        fronts = [name.split(" ")[0] for key, name, _ in COSTS if on_front(point, points, key)]
        cells = [point["label"], str(point["seed"]), f"{point['accuracy']:.2f}"]
        cells += ["—" if point[key] is None else f"{point[key] / unit:.{3 if unit > 1 else 2}f}" for key, _, unit in COSTS]
        cells.append(", ".join(fronts) or "—")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def pareto_chart(points: list[dict], key: str, axis: str, unit: float, accuracy_name: str) -> np.ndarray | None:
    """Accuracy against one cost: a colour per run label, the front joined (viz.scatter_chart)."""
    groups: dict[str, list[tuple[float, float]]] = {}
    for point in points:
        if point[key] is not None:
            groups.setdefault(point["label"], []).append((point[key] / unit, point["accuracy"]))
    if not groups:
        return None
    # The front first, so that each run's own colour is drawn over it.
    front = {"Pareto front": [(p[key] / unit, p["accuracy"]) for p in points if on_front(p, points, key)]}
    return viz.scatter_chart(front | groups, axis, accuracy_name, title=f"accuracy against {axis}", front=True)


def write_cost_section(root: Path, entries: list[tuple[str, dict]]) -> list[str]:
    """The report's "Accuracy against cost" lines, writing pareto_<cost>.png into ``root``; [] when
    no run has costs."""
    points, accuracy_name = cost_points(entries)
    if not points:
        return []
    lines = ["", "## Accuracy against cost", "",
             f"{accuracy_name} against the final network's cost (parameters without the auxiliary head, "
             "multiply-adds of one image, measured latency); the last column names the costs whose Pareto "
             "front the run is on.", ""] + cost_table(points, accuracy_name)
    for key, axis, unit in COSTS:
        chart = pareto_chart(points, key, axis, unit, accuracy_name)
        if chart is not None:
            name = f"pareto_{key.split('_')[0]}.png"
            viz.save_png(chart, root / name)
            lines += ["", f"![accuracy against {axis}]({name})"]
    return lines
