"""Aggregate a Hydra multirun into paper tables: ``python -m darts.report MULTIRUN_DIR``.

Every job directory (one holding ``.hydra/overrides.yaml``) is read; jobs are
grouped by their overrides with ``seed`` removed, and each group gets the
number of jobs, mean +- std and best of the test error (final runs) or the
alpha-split accuracy (searches), parameters, cost, the epoch each search stopped early at and
why, and every seed's genotype.
A job without ``results.json`` is reported as failed; it costs no other job
its row. Writes ``report.md`` and ``report.csv`` into the directory.
"""
from __future__ import annotations

import csv
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

IGNORED_OVERRIDES = ("seed", "hydra.", "resume")


@dataclass
class Job:
    directory: Path
    overrides: list[str]
    results: dict | None
    error: str = ""

    @property
    def group(self) -> str:
        kept = [o for o in self.overrides if not o.lstrip("+~").startswith(IGNORED_OVERRIDES)]
        return " ".join(sorted(kept)) or "(defaults)"

    @property
    def seed(self):
        for override in self.overrides:
            if override.startswith("seed="):
                return override.split("=", 1)[1]
        return (self.results or {}).get("seed", "?")


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


def summarise(group: Group) -> dict:
    finished = group.finished()
    final = [job.results for job in finished if job.results.get("kind") == "final"]
    search = [job.results for job in finished if job.results.get("kind") == "search"]
    errors = [100.0 - r["test_top1"] for r in final if r.get("test_top1") is not None]
    alpha_acc = [r["alpha_eval_acc"] for r in search if r.get("alpha_eval_acc") is not None]
    params = [r["params_m"] for r in final if r.get("params_m") is not None]
    gpu_hours = sum(r["wall_time_s"] / 3600 for r in (final + search) if str(r.get("device", "")).startswith("cuda"))
    cpu_hours = sum(r["wall_time_s"] / 3600 for r in (final + search) if not str(r.get("device", "")).startswith("cuda"))
    error_mean, error_best = _mean_std_best(errors, min)
    alpha_mean, alpha_best = _mean_std_best(alpha_acc, max)
    return {
        "group": group.name,
        "jobs": len(group.jobs),
        "finished": len(finished),
        "test_error_%": error_mean, "best_test_error_%": error_best,
        "alpha_split_acc_%": alpha_mean, "best_alpha_split_acc_%": alpha_best,
        "params_M": f"{statistics.mean(params):.2f}" if params else "—",
        "gpu_hours": f"{gpu_hours:.2f}", "cpu_hours": f"{cpu_hours:.2f}",
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


def build_report(root: Path) -> tuple[list[dict], list[Job]]:
    groups: dict[str, Group] = {}
    jobs = find_jobs(root)
    for job in jobs:
        groups.setdefault(job.group, Group(job.group)).jobs.append(job)
    return [summarise(group) for group in groups.values()], [job for job in jobs if job.results is None]


def write_report(root: Path) -> tuple[Path, Path]:
    rows, failed = build_report(root)
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
    lines += ["", f"## Failed jobs ({len(failed)})", ""]
    lines += [f"- `{job.directory}` ({' '.join(job.overrides)}): {job.error}" for job in failed] or ["none"]
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
