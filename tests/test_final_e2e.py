"""End-to-end final training on the smoke preset: outputs, export, resume, genotype sources, bad input."""
import json

import pytest
import torch

from darts import export
from darts.checkpoint import CHECKPOINT_NAME
from darts.errors import DartsError
from darts.engine import Run, run_final
from darts.engine.final import FinalTraining
from darts.resources.measure import count_macs
from darts.spaces.darts_cnn.genotype import DARTS_V1, DARTS_V2, PC_DARTS
from darts.spaces.darts_cnn.network import NetworkImageNet
from helpers import assert_clean_failure, compose_config, read_json, run_script, run_task


def final_config(*overrides):
    return compose_config("final", ["experiment=smoke", "deterministic=true", *overrides])


def test_smoke_final_training_from_a_genotype_string(tmp_path):
    run_dir = tmp_path / "run"
    # The community string, quoted for Hydra's override grammar, as a user types it.
    result = run_script("train_final.py", "experiment=smoke", f'genotype="{PC_DARTS}"', f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    results = read_json(run_dir / "results.json")
    assert results["genotype"] == PC_DARTS.to_dict()
    for key in ("test_top1", "test_top5", "params_m", "wall_time_s", "images_per_s", "latency_ms", "peak_memory_mb"):
        assert isinstance(results[key], float) and results[key] >= 0, key
    assert 0 <= results["test_top1"] <= results["test_top5"] <= 100
    assert results["peak_memory_mb"] > 100   # the process's resident set: torch alone takes more
    assert isinstance(results["multiply_adds"], int) and results["multiply_adds"] > 0
    assert results["epochs"] == 2 and len(results["history"]) == 2
    assert results["history"][0]["drop_path_prob"] == 0.0 and results["history"][1]["drop_path_prob"] == 0.1
    loaded = export.load(run_dir / "model.pt")
    assert loaded.genotype == PC_DARTS and not loaded.training
    assert (run_dir / "cells" / "reduce.png").is_file() and (run_dir / CHECKPOINT_NAME).is_file()
    assert json.loads((run_dir / "genotype.json").read_text())["genotype"] == PC_DARTS.to_dict()


def test_multiply_adds_are_counted_exactly_for_darts_v2_on_imagenet():
    # torch's counter sees convolutions and linear layers; the published 574 M for DARTS_V2 at C=48,
    # 14 cells also counts pooling, BN and additions, which add a few per cent.
    net = NetworkImageNet(48, 1000, 14, False, DARTS_V2)
    assert count_macs(net, (3, 224, 224), "cpu") == 529_911_552
    assert 0.9 * 574e6 < 529_911_552 < 574e6
    # Exact on a layer whose count is known by hand: 3x3 conv, 3 -> 8 channels, 5x5 output, plus a linear.
    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.Flatten(),
                               torch.nn.Linear(8 * 5 * 5, 10))
    assert count_macs(tiny, (3, 5, 5), "cpu") == 3 * 9 * 8 * 25 + 200 * 10


def test_genotype_given_by_name_file_run_directory_and_string(tmp_path):
    search_dir = tmp_path / "search"
    search_dir.mkdir()
    (search_dir / "genotype.json").write_text(json.dumps({"genotype": DARTS_V1.to_dict()}))
    (tmp_path / "pc.json").write_text(PC_DARTS.to_json())
    for spec, expected in [("DARTS_V2", DARTS_V2), (str(search_dir), DARTS_V1),
                           (str(tmp_path / "pc.json"), PC_DARTS), (str(DARTS_V1), DARTS_V1)]:
        run = Run(final_config(f'genotype="{spec}"', "train.epochs=1"), tmp_path / str(len(spec)), FinalTraining)
        assert run.task.model.genotype == expected


class Interrupted(Exception):
    pass


def test_resumed_training_ends_exactly_like_an_uninterrupted_one(tmp_path):
    full = run_final(final_config(), tmp_path / "full")
    trained = []

    class CountsEpochs(FinalTraining):
        def start_epoch(self, epoch):
            trained.append(epoch)
            return super().start_epoch(epoch)

    class DiesInSecondEpoch(CountsEpochs):
        """Killed as its second epoch starts, after the first epoch's checkpoint."""

        def start_epoch(self, epoch):
            if epoch == 1:
                raise Interrupted
            return super().start_epoch(epoch)

    with pytest.raises(Interrupted):
        run_task(final_config(), tmp_path / "cut", DiesInSecondEpoch)
    assert trained == [0] and not (tmp_path / "cut" / "results.json").exists()
    resumed = run_task(final_config("resume=true"), tmp_path / "cut", CountsEpochs)
    assert trained == [0, 1], "a resumed run trains only the epochs it had not finished"
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    assert resumed["test_top1"] == full["test_top1"]
    a = export.load(tmp_path / "full" / "model.pt").state_dict()
    b = export.load(tmp_path / "cut" / "model.pt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("overrides, message", [
    (["genotype=DARTS_V3"], "known genotypes: DARTS_V1, DARTS_V2"),
    (["genotype='Genotype(normal=[(sep_conv_3x3, 0)'"], "malformed genotype"),
    (["space.primitives=[none,sep_conv_3x3,skip_connect,max_pool_3x3]"], "not in the configured op set"),
    (["train.network=resnet"], "network 'resnet'.*valid choices: .*cifar"),
])
def test_bad_final_input_raises_a_readable_error(tmp_path, overrides, message):
    with pytest.raises(DartsError, match=message):
        run_final(final_config(*overrides), tmp_path / "run")
    assert not (tmp_path / "run" / CHECKPOINT_NAME).exists()


def test_checkpoint_of_another_genotype_or_size_is_refused_untouched(tmp_path):
    run_final(final_config("train.epochs=1"), tmp_path / "run")
    checkpoint = (tmp_path / "run" / CHECKPOINT_NAME).read_bytes()
    with pytest.raises(DartsError, match="different genotype"):
        Run(final_config("train.epochs=1", "resume=true", "genotype=DARTS_V1"), tmp_path / "run", FinalTraining)
    with pytest.raises(DartsError, match="different network"):
        Run(final_config("train.epochs=1", "resume=true", "train.C=6"), tmp_path / "run", FinalTraining)
    assert (tmp_path / "run" / CHECKPOINT_NAME).read_bytes() == checkpoint


def test_cli_unknown_genotype_is_one_clean_line(tmp_path):
    result = run_script("train_final.py", "experiment=smoke", "genotype=NOPE", f"hydra.run.dir={tmp_path / 'r'}")
    assert_clean_failure(result, "error: unknown genotype 'NOPE'", "DARTS_V2")
