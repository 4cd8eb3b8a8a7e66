"""Aggregate a Hydra multirun into paper tables: ``python -m darts.report MULTIRUN_DIR``.

Every job directory (one holding ``.hydra/overrides.yaml``) is read; jobs are
grouped by their overrides with ``seed`` removed, and each group gets the
number of jobs, mean +- std and best of the test error (final runs) or the
alpha-split accuracy (searches), parameters, cost, the epoch each search stopped early at and
why, and every seed's genotype; runs with costs also get the accuracy-against-cost table and Pareto
plots (``pareto_params.png``, ``pareto_macs.png``, ``pareto_latency.png``: darts.resources.report).
A job without ``results.json`` is reported as failed; it costs no other job
its row. Writes ``report.md`` and ``report.csv`` into the directory, and ``report.png`` (test
accuracy against parameters, one colour per group) when the sweep has final runs. Final runs of
random cells (``genotype=random:SEED``) form one group, as do runs of searched cells (a search run
directory or genotype file): the found-versus-random comparison is two rows.
"""
from __future__ import annotations

import csv
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from darts import viz
from darts.resources.report import write_cost_section

IGNORED_OVERRIDES = ("seed", "hydra.", "resume")


@dataclass
class Job:
    directory: Path
    overrides: list[str]
    results: dict | None
    error: str = ""

    @property
    def group(self) -> str:
        kept = [genotype_kind(o) for o in self.overrides if not o.lstrip("+~").startswith(IGNORED_OVERRIDES)]
        return " ".join(sorted(kept)) or "(defaults)"

    @property
    def seed(self):
        for override in self.overrides:
            if override.startswith("seed="):
                return override.split("=", 1)[1]
        return (self.results or {}).get("seed", "?")


def genotype_kind(override: str) -> str:
    """Final runs of one kind of genotype form one group: ``genotype=random:SEED`` -> ``genotype=random``,
    a search run directory or genotype file -> ``genotype=searched``; other overrides stay as they are."""
    if not override.startswith("genotype="):
        return override
    # Hydra writes a swept value's special characters escaped (random\:3) into overrides.yaml.
    spec = override.split("=", 1)[1].strip("'\"").replace("\\", "")
    if spec.startswith("random:"):
        return "genotype=random"
    if "/" in spec and not spec.startswith(("{", "|")) and "(" not in spec:
        return "genotype=searched"
    return override


@dataclass
class Group:
    name: str
    jobs: list[Job] = field(default_factory=list)

    def finished(self) -> list[Job]:
        return [job for job in self.jobs if job.results is not None]


def _last_error_line(directory: Path) -> str:
    if (directory / "error.txt").is_file():
        return (directory / "error.txt").read_text().strip()[:200]
    for log in sorted(directory.glob("*.log")):
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
        for line in reversed(lines):
            if "error" in line.lower() or "exception" in line.lower():
                return line[:200]
    return "no results.json (killed or failed before the end)"


def find_jobs(root: Path) -> list[Job]:
    jobs = []
    for overrides_file in sorted(root.rglob(".hydra/overrides.yaml")):
        directory = overrides_file.parent.parent
        overrides = yaml.safe_load(overrides_file.read_text()) or []
        results_file = directory / "results.json"
        try:
            results = json.loads(results_file.read_text()) if results_file.is_file() else None
        except json.JSONDecodeError:
            results = None
        jobs.append(Job(directory, [str(o) for o in overrides], results,
                        "" if results is not None else _last_error_line(directory)))
    return jobs


def _mean_std_best(values: list[float], best) -> tuple[str, str]:
    if not values:
        return "—", "—"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {spread:.2f}", f"{best(values):.2f}"


def _mean_std(values: list[float], digits: int) -> str:
    if not values:
        return "—"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def summarise(group: Group) -> dict:
    finished = group.finished()
    final = [job.results for job in finished if job.results.get("kind") == "final"]
    tuned = [job.results for job in finished if job.results.get("kind") == "tune"]
    search = [job.results for job in finished if job.results.get("kind") == "search"]
    accuracies = [r["test_top1"] for r in final if r.get("test_top1") is not None]
    errors = [100.0 - accuracy for accuracy in accuracies]
    alpha_acc = [r["alpha_eval_acc"] for r in search if r.get("alpha_eval_acc") is not None]
    params = [r["params_m"] for r in final if r.get("params_m") is not None]
    macs = [r["multiply_adds"] / 1e6 for r in final if r.get("multiply_adds") is not None]
    gpu_hours = sum(r["wall_time_s"] / 3600 for r in (final + search) if str(r.get("device", "")).startswith("cuda"))
    cpu_hours = sum(r["wall_time_s"] / 3600 for r in (final + search) if not str(r.get("device", "")).startswith("cuda"))
    error_mean, error_best = _mean_std_best(errors, min)
    alpha_mean, alpha_best = _mean_std_best(alpha_acc, max)
    return {
        "group": group.name,
        "jobs": len(group.jobs),
        "finished": len(finished),
        "test_acc_%": _mean_std_best(accuracies, max)[0],
        "test_error_%": error_mean, "best_test_error_%": error_best,
        "alpha_split_acc_%": alpha_mean, "best_alpha_split_acc_%": alpha_best,
        "params_M": _mean_std(params, 3),
        "MACs_M": _mean_std(macs, 1),
        "gpu_hours": f"{gpu_hours:.2f}", "cpu_hours": f"{cpu_hours:.2f}",
        # Tuning trials (darts/tuning.py): the objective each trial returned, over its seeds.
        "objective": "; ".join(f"{r['metric']} {r['mean']:.2f} ± {r['std']:.2f} over seeds "
                               f"{', '.join(map(str, r['seeds']))}"
                               + (f" (test_top1 {r['test_top1_mean']:.2f})" if r.get("test_top1_mean") is not None
                                  else "") for r in tuned) or "—",
        # Early stops (searches): the epoch each seed stopped after, "—" where it ran to the end.
        "stop_epochs": ", ".join(f"seed {job.seed}: {stop_epoch(job.results)}" for job in finished
                                 if job.results.get("kind") == "search") or "—",
        "genotypes": "; ".join(f"seed {job.seed}: {job.results.get('genotype_string', '')}" for job in finished),
        "stop_reasons": "; ".join(f"seed {job.seed}: {job.results['stop_reason']}" for job in finished
                                  if job.results.get("stop_reason")),
    }


def stop_epoch(results: dict) -> str:
    stopped = results.get("stopped_epoch")
    return "—" if stopped is None else f"{stopped} of {results.get('epochs', '?')}"


def group_jobs(root: Path) -> tuple[list[Group], list[Job]]:
    """The sweep's jobs grouped by their overrides (seed left out), and the jobs that failed."""
    groups: dict[str, Group] = {}
    jobs = find_jobs(root)
    for job in jobs:
        groups.setdefault(job.group, Group(job.group)).jobs.append(job)
    return list(groups.values()), [job for job in jobs if job.results is None]


def build_report(root: Path) -> tuple[list[dict], list[Job]]:
    groups, failed = group_jobs(root)
    return [summarise(group) for group in groups], failed


def accuracy_chart(groups: list[Group]) -> np.ndarray | None:
    """Test top-1 against parameters of every finished final run, one colour per group; None
    when the sweep has no final runs."""
    points = {group.name: [(job.results.get("params_m"), job.results.get("test_top1")) for job in group.finished()
                           if job.results.get("kind") == "final"] for group in groups}
    points = {name: group_points for name, group_points in points.items() if group_points}
    if not points:
        return None
    # The legend names what tells the groups apart: the overrides they do not all share.
    shared = set.intersection(*(set(name.split()) for name in points)) if len(points) > 1 else set()
    points = {" ".join(token for token in name.split() if token not in shared) or name: group_points
              for name, group_points in points.items()}
    return viz.scatter_chart(points, "parameters (M, without the auxiliary head)", "test top-1 (%)",
                             title="final training: test accuracy against size")


def write_report(root: Path) -> tuple[Path, Path]:
    groups, failed = group_jobs(root)
    rows = [summarise(group) for group in groups]
    if not rows and not failed:
        raise SystemExit(f"error: no Hydra job directories (with .hydra/overrides.yaml) under {root}")
    columns = list(rows[0]) if rows else ["group"]
    csv_path, md_path = root / "report.csv", root / "report.md"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    table_columns = [c for c in columns if c not in ("genotypes", "stop_reasons")]
    lines = [f"# Sweep report: {root}", "", "| " + " | ".join(table_columns) + " |",
             "|" + "---|" * len(table_columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in table_columns) + " |" for row in rows]
    lines += ["", "## Genotypes", ""] + [f"- **{row['group']}**: {row['genotypes'] or '—'}" for row in rows]
    stops = [f"- **{row['group']}**: {row['stop_reasons']}" for row in rows if row.get("stop_reasons")]
    lines += ["", "## Early stops", ""] + (stops or ["none"])
    lines += write_cost_section(root, [(group.name, job.results) for group in groups for job in group.finished()])
    lines += ["", f"## Failed jobs ({len(failed)})", ""]
    lines += [f"- `{job.directory}` ({' '.join(job.overrides)}): {job.error}" for job in failed] or ["none"]
    chart = accuracy_chart(groups)
    if chart is not None:
        viz.save_png(chart, root / "report.png")
        lines += ["", "![test accuracy against parameters](report.png)"]
    md_path.write_text("\n".join(lines) + "\n")
    return md_path, csv_path


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m darts.report MULTIRUN_DIR")
    md_path, csv_path = write_report(Path(argv[0]))
    print(md_path.read_text())
    print(f"wrote {md_path} and {csv_path}")


if __name__ == "__main__":
    main(sys.argv[1:])
