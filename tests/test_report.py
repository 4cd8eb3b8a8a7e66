"""Sweep aggregation over a real multirun with one failing job."""
import csv
import json

from darts.report import write_report
from helpers import read_json, run_script

COMMON = ["dataset.num_train=64", "experiment=smoke", "search.epochs=1"]


def test_multirun_with_a_failed_job_aggregates_into_tables(tmp_path):
    sweep = tmp_path / "sweep"
    # train_portion=1.5 is invalid: that job fails; the other must still run and be reported.
    result = run_script("train_search.py", "-m", *COMMON, "search.train_portion=0.5,1.5",
                        f"hydra.sweep.dir={sweep}")
    assert result.returncode != 0, "the sweep must report that a job failed"
    assert read_json(sweep / "0" / "results.json")["kind"] == "search"
    assert "1.5" in (sweep / "1" / "error.txt").read_text()

    md_path, csv_path = write_report(sweep)
    rows = list(csv.DictReader(csv_path.open()))
    groups = [" ".join(sorted(COMMON + [f"search.train_portion={p}"])) for p in ("0.5", "1.5")]
    assert [(row["group"], row["jobs"], row["finished"]) for row in rows] == [
        (groups[0], "1", "1"), (groups[1], "1", "0")]
    assert rows[0]["alpha_split_acc_%"] != "—" and "seed 0: Genotype(" in rows[0]["genotypes"]
    markdown = md_path.read_text()
    assert "## Failed jobs (1)" in markdown and "1.5" in markdown


def test_the_table_gives_each_searchs_stop_epoch_and_the_reasons(tmp_path):
    """Recorded results (no runs): two seeds of one group, one stopped early by a rule."""
    for job, (seed, stopped, reason) in enumerate([(0, 22, "local average grew 1.4x"), (1, None, None)]):
        directory = tmp_path / str(job)
        (directory / ".hydra").mkdir(parents=True)
        (directory / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n- early_stop=darts_es\n")
        (directory / "results.json").write_text(json.dumps(
            {"kind": "search", "epochs": 50, "alpha_eval_acc": 80.0 + seed, "wall_time_s": 10.0, "device": "cpu",
             "genotype_string": f"G{seed}", "stopped_epoch": stopped, "stop_reason": reason}))
    md_path, csv_path = write_report(tmp_path)
    row, = list(csv.DictReader(csv_path.open()))
    assert row["stop_epochs"] == "seed 0: 22 of 50, seed 1: —"
    markdown = md_path.read_text()
    assert "stop_epochs" in markdown.splitlines()[2]   # a column of the table
    assert "## Early stops" in markdown and "seed 0: local average grew 1.4x" in markdown
