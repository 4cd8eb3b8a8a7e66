"""End-to-end searches on the smoke preset: run directory, resume, multirun, bad input."""
import hashlib

import pytest
import torch

from darts.checkpoint import CHECKPOINT_NAME
from darts.errors import DartsError
from darts.engine import run_search
from darts.engine.supernet import SupernetSearch
from darts.spaces import build_space
from darts.spaces.darts_cnn.genotype import Genotype
from helpers import assert_clean_failure, compose_config, read_json, run_script, run_task


def test_smoke_search_writes_a_complete_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    result = run_script("train_search.py", "experiment=smoke", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    assert "[epoch 3/3]" in result.stdout and "eta" in result.stdout

    space = build_space(compose_config("search", ["experiment=smoke"]).space)
    genotype = space.parse_genotype((run_dir / "genotype.json").read_text())
    assert isinstance(genotype, Genotype) and genotype.steps == 4
    results = read_json(run_dir / "results.json")
    assert Genotype.from_dict(results["genotype"]) == genotype
    assert len(results["alphas"]["alphas_normal"]) == 14 and len(results["alphas"]["alphas_normal"][0]) == 8
    weights = torch.tensor(results["softmax_weights"]["normal"])
    torch.testing.assert_close(weights, torch.softmax(torch.tensor(results["alphas"]["alphas_normal"]), -1))
    for key in ("train_loss", "train_acc", "alpha_loss", "alpha_acc", "alpha_eval_loss", "alpha_eval_acc",
                "wall_time_s"):
        assert isinstance(results[key], float), key
    assert results["seed"] == 0 and "torch" in results["versions"]
    assert sorted(p.name for p in (run_dir / "genotypes").iterdir()) == [
        "epoch_000.json", "epoch_001.json", "epoch_002.json"]
    split = read_json(run_dir / "split.json")
    assert not set(split["weight_indices"]) & set(split["alpha_indices"])
    assert (run_dir / CHECKPOINT_NAME).is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "config_resolved.yaml").is_file()
    assert (run_dir / "cells" / "normal.png").stat().st_size > 1000
    assert any((run_dir / "tb").glob("events.out.tfevents*"))


def search_config(run_dir, *overrides):
    return compose_config("search", ["experiment=smoke", "deterministic=true", *overrides])


class Interrupted(Exception):
    pass


class DiesAfterSecondEpoch(SupernetSearch):
    """Killed right after its second epoch's checkpoint, as the third epoch starts."""

    def start_epoch(self, epoch):
        if epoch == 2:
            raise Interrupted
        return super().start_epoch(epoch)


def test_resumed_search_ends_exactly_like_an_uninterrupted_one(tmp_path):
    full = run_search(search_config(tmp_path / "full"), tmp_path / "full")

    with pytest.raises(Interrupted):
        run_task(search_config(tmp_path / "cut"), tmp_path / "cut", DiesAfterSecondEpoch)
    assert not (tmp_path / "cut" / "results.json").exists()
    assert torch.load(tmp_path / "cut" / CHECKPOINT_NAME, weights_only=False)["epoch"] == 1

    with pytest.raises(DartsError, match="splits the data differently"):
        run_search(search_config(tmp_path / "cut", "resume=true", "search.train_portion=0.25"), tmp_path / "cut")
    resumed = run_search(search_config(tmp_path / "cut", "resume=true"), tmp_path / "cut")
    assert resumed["alphas"] == full["alphas"], "alphas must match bit for bit"
    assert resumed["genotype"] == full["genotype"]
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]


def test_multirun_gives_each_job_its_own_directory(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_script("train_search.py", "-m", "seed=0,1", "experiment=smoke", "search.epochs=1",
                        f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    seeds = [read_json(sweep / str(job) / "results.json")["seed"] for job in (0, 1)]
    assert seeds == [0, 1]
    alphas = [read_json(sweep / str(job) / "results.json")["alphas"] for job in (0, 1)]
    assert alphas[0] != alphas[1]


@pytest.mark.parametrize("overrides, message", [
    (["space.primitives=[none,sep_conv_3x3,conv_7x7]"], "unknown op 'conv_7x7'; valid choices"),
    (["dataset.name=imagenet22k"], "unknown dataset 'imagenet22k'; valid choices"),
    (["strategy.name=evolution"], "unknown strategy 'evolution'; valid choices: darts"),
    (["search.train_portion=1.5"], "1.5"),
    (["dataset=cifar10", "dataset.root={empty}", "dataset.download=false"], "download=true"),
])
def test_bad_input_raises_a_readable_error(tmp_path, overrides, message):
    overrides = [o.format(empty=tmp_path / "empty") for o in overrides]
    with pytest.raises(DartsError, match=message):
        run_search(search_config(tmp_path, *overrides), tmp_path / "run")
    assert not (tmp_path / "run" / CHECKPOINT_NAME).exists()


def test_corrupt_checkpoint_and_unrequested_overwrite_leave_the_run_untouched(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    checkpoint = run_dir / CHECKPOINT_NAME
    checkpoint.write_bytes(b"\x00not a checkpoint" * 10)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    with pytest.raises(DartsError, match="corrupt"):
        run_search(search_config(run_dir, "resume=true"), run_dir)
    with pytest.raises(DartsError, match="resume=true"):
        run_search(search_config(run_dir), run_dir)
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == digest
    with pytest.raises(DartsError, match="no checkpoint"):
        run_search(search_config(tmp_path / "fresh", "resume=true"), tmp_path / "fresh")


def test_cli_reports_bad_input_in_one_line_without_traceback(tmp_path):
    result = run_script("train_search.py", "experiment=smoke", "space.primitives=[none,conv_7x7]",
                        f"hydra.run.dir={tmp_path / 'run'}")
    assert_clean_failure(result, "error: unknown op 'conv_7x7'; valid choices")
    assert result.returncode == 2
    result = run_script("train_search.py", "experiment=no_such_preset", f"hydra.run.dir={tmp_path / 'run2'}")
    assert_clean_failure(result, "no_such_preset", "smoke")


def test_a_checkpoint_of_another_format_is_refused_and_left_as_it_was(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save({"epoch": 0, "model": {}}, run_dir / CHECKPOINT_NAME)
    before = (run_dir / CHECKPOINT_NAME).read_bytes()
    with pytest.raises(DartsError, match="earlier version of this code"):
        run_search(search_config(run_dir, "resume=true"), run_dir)
    assert (run_dir / CHECKPOINT_NAME).read_bytes() == before
    assert sorted(p.name for p in run_dir.iterdir()) == [CHECKPOINT_NAME]
