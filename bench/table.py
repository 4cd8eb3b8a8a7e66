"""The benchmark table: one row per benchmark, the original code, the eager baseline and the fast
path side by side, with the machine they ran on named above it.

``bench_table(results, machine)`` turns the JSON results of bench/search_step.py,
bench/final_step.py and bench/original_step.py (``--json``) into markdown; ``bench/run_all.py``
(``make bench``) runs them and writes the table and its input.
"""
from __future__ import annotations

from darts.machine import machine_line

# Which benchmark a result belongs to, by the fields its script reports.
BENCHMARK_NAMES = {("search", 1): "search step, first order", ("search", 2): "search step, second order",
                   ("final", None): "final training step"}
PATHS = ("original", "baseline", "fast")


def benchmark_of(result: dict) -> tuple[str, int | None]:
    kind = "final" if "paper_training_hours" in result else "search"
    return kind, (result.get("order") if kind == "search" else None)


def number(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def ratio(slow: float | None, fast: float | None) -> str:
    return "—" if not slow or not fast else f"{slow / fast:.2f}x"


def bench_table(results: list[dict], machine: dict) -> str:
    """Markdown: the machine line, then per benchmark (batch, device) ms/step of each path, the fast
    path's speed-up over the original and over the baseline, and peak memory of each path."""
    rows: dict[tuple, dict[str, dict]] = {}
    for result in results:
        kind, order = benchmark_of(result)
        rows.setdefault((kind, order, result["batch"], result["device"]), {})[result["path"]] = result
    lines = [f"Machine: {machine_line(machine)}", "",
             "| benchmark | batch | device | original ms/step | baseline ms/step | fast ms/step | fast vs original "
             "| fast vs baseline | fast images/s | peak MB original / baseline / fast |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    order_of = list(BENCHMARK_NAMES)
    for (kind, order, batch, device), paths in sorted(rows.items(), key=lambda item: (
            order_of.index((item[0][0], item[0][1])), item[0][2], item[0][3])):
        ms = {path: paths[path]["ms_per_step"] if path in paths else None for path in PATHS}
        peaks = " / ".join(number(paths[path]["peak_mem_mb"]) if path in paths else "—" for path in PATHS)
        images = paths["fast"]["images_per_s"] if "fast" in paths else None
        lines.append(f"| {BENCHMARK_NAMES[(kind, order)]} | {batch} | {device} | {number(ms['original'])} | "
                     f"{number(ms['baseline'])} | {number(ms['fast'])} | {ratio(ms['original'], ms['fast'])} | "
                     f"{ratio(ms['baseline'], ms['fast'])} | {number(images, 1)} | {peaks} |")
    failed = [result for result in results if result.get("check_passed") is False]
    if failed:
        lines += ["", f"**{len(failed)} numerical check(s) of the fast path against the baseline failed.**"]
    return "\n".join(lines) + "\n"
