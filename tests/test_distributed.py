"""Data parallelism on CPU with gloo: sharded batches, averaged gradients, global-batch BatchNorm,
and 2-process torchrun searches against a single process on the same global batch."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

from darts.data import Augment, DeviceBatches, EpochBatchSampler, ImageTensors
from darts.distributed import Distributed, convert_to_global_batchnorm, lr_scale, shard_sizes
from darts.errors import DartsError
from darts.spaces import EdgeWeights
from darts.spaces.darts_cnn.genotype import PRIMITIVES
from darts.spaces.darts_cnn.supernet import SuperNet
from darts.strategies.arch import ArchParameters
from helpers import REPO_ROOT, read_json


# -- sharded data ----------------------------------------------------------------------------------
def tiny_images(n=40):
    gen = torch.Generator().manual_seed(0)
    return ImageTensors(torch.randint(0, 256, (n, 3, 8, 8), generator=gen, dtype=torch.uint8),
                        torch.randint(0, 10, (n,), generator=gen))


@pytest.mark.parametrize("batch_size, drop_last", [(8, True), (12, False)])
def test_the_shards_of_every_batch_together_are_the_single_process_batch(batch_size, drop_last):
    data = tiny_images(40)
    augment = Augment((0.5,) * 3, (0.25,) * 3, crop_padding=2, flip=True, cutout=3)

    def source(shard):
        return DeviceBatches(data, None, batch_size, augment, seed=3, stream="s", device="cpu",
                             drop_last=drop_last, shard=shard)

    whole = list(source((0, 1)).epoch(2))
    ranks = [list(source((rank, 3)).epoch(2)) for rank in range(3)]
    assert len(whole) == (40 // batch_size if drop_last else 4)
    for index, (images, labels) in enumerate(whole):
        parts = [batches[index] for batches in ranks if index < len(batches)]
        torch.testing.assert_close(torch.cat([p[0] for p in parts]), images, rtol=0, atol=0)
        assert torch.equal(torch.cat([p[1] for p in parts]), labels)


def test_loader_sampler_shards_split_each_global_batch():
    indices = torch.arange(100, 150)
    whole = EpochBatchSampler(indices, 10, seed=1, stream="s", shuffle=True, drop_last=True).batches(4)
    shards = [EpochBatchSampler(indices, 10, 1, "s", True, True, shard=(rank, 2)).batches(4) for rank in (0, 1)]
    assert [a + b for a, b in zip(*shards)] == whole
    assert all(len(batch) == 5 for batch in shards[0] + shards[1])


def test_batch_semantics_and_learning_rate_scaling_are_config_choices():
    global_mode, per_rank = {"batch": "global"}, {"batch": "per_rank"}
    assert shard_sizes(global_mode, 64, 4, "search.batch_size") == 64
    assert shard_sizes(per_rank, 64, 4, "search.batch_size") == 256
    with pytest.raises(DartsError, match="does not split evenly across 3 ranks"):
        shard_sizes(global_mode, 64, 3, "search.batch_size")
    with pytest.raises(DartsError, match="valid choices: global, per_rank"):
        shard_sizes({"batch": "local"}, 64, 2, "x")
    assert lr_scale({"lr_scaling": "linear"}, 256, 64) == 4.0
    assert lr_scale({"lr_scaling": "sqrt"}, 256, 64) == 2.0
    assert lr_scale({"lr_scaling": "none"}, 256, 64) == 1.0
    with pytest.raises(DartsError, match="valid choices: none, linear, sqrt"):
        lr_scale({"lr_scaling": "cubic"}, 256, 64)


# -- gradients and BatchNorm across 2 gloo processes, float64 --------------------------------------
def tiny_supernet():
    """The supernet's weights and, drawn after them as a strategy does, its alphas (14 edges a cell)."""
    torch.manual_seed(0)
    model = SuperNet(C=4, num_classes=5, layers=3, primitives=PRIMITIVES).double()
    arch = ArchParameters({cell: (14, len(PRIMITIVES)) for cell in ("normal", "reduce")}).double()
    return model, arch


def forward(model, arch, images):
    """DARTS's mixing: softmax(alpha) on every edge."""
    return model(images, {cell: EdgeWeights(torch.softmax(alphas, dim=-1)) for cell, alphas in arch.alphas().items()})


def global_batch():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 8, 8, generator=gen, dtype=torch.float64), torch.randint(0, 5, (8,), generator=gen)


def rank_gradients(rank, world_size, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        group = Distributed(rank=rank, world_size=world_size, sync_bn=True)
        model, arch = tiny_supernet()
        model = group.prepare_model(model)
        images, labels = global_batch()
        part = slice(rank * 4, rank * 4 + 4)
        loss = F.cross_entropy(forward(model, arch, images[part]), labels[part])
        loss.backward()
        group.average_gradients([*model.parameters(), *arch.parameters()])
        torch.save({name: p.grad for name, p in [*model.named_parameters(), *arch.named_parameters()]
                    if p.grad is not None}
                   | {f"buffer:{name}": b for name, b in model.named_buffers()},
                   out_dir / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_ranks_compute_the_single_process_gradients_and_statistics(tmp_path):
    mp.spawn(rank_gradients, args=(2, free_port(), tmp_path), nprocs=2)
    model, arch = tiny_supernet()
    images, labels = global_batch()
    F.cross_entropy(forward(model, arch, images), labels).backward()
    expected = {name: p.grad for name, p in [*model.named_parameters(), *arch.named_parameters()]} | {
        f"buffer:{name}": b for name, b in model.named_buffers()}
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    assert ranks[0].keys() == expected.keys()
    assert any(name.startswith("alphas") for name in expected)
    for name, value in expected.items():
        torch.testing.assert_close(ranks[0][name], value, rtol=1e-9, atol=1e-12, msg=name)
        assert torch.equal(ranks[0][name], ranks[1][name]), name   # every rank holds the same numbers


def test_global_batchnorm_is_plain_batchnorm_in_one_process():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4, affine=False))
    converted = convert_to_global_batchnorm(tiny_copy(plain))
    assert sum(type(m).__name__ == "GlobalBatchNorm2d" for m in converted.modules()) == 2
    x = torch.randn(6, 3, 9, 9)
    torch.testing.assert_close(converted(x), plain(x))


def tiny_copy(module):
    import copy

    return copy.deepcopy(module)


# -- torchrun end to end ---------------------------------------------------------------------------
SMOKE = ["experiment=smoke", "search.epochs=2", "search.max_steps_per_epoch=4", "search.batch_size=16"]


def command(run_dir, overrides, processes, script="train_search.py", base=SMOKE):
    launcher = [sys.executable, str(REPO_ROOT / script)]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={processes}", str(REPO_ROOT / script)]
    return [*launcher, *base, f"hydra.run.dir={run_dir}", *overrides]


ENV = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0")


def launch(run_dir, *overrides, processes=1, script="train_search.py", base=SMOKE):
    result = subprocess.run(command(run_dir, overrides, processes, script, base), cwd=REPO_ROOT, env=ENV, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return read_json(run_dir / "results.json")


def test_two_process_search_equals_one_process_on_the_same_global_batch(tmp_path):
    single = launch(tmp_path / "single", "distributed.sync_bn=true")
    pair = launch(tmp_path / "pair", "distributed.sync_bn=true", processes=2)
    assert pair["world_size"] == 2 and single["world_size"] == 1
    assert not (tmp_path / "pair" / "rank1").exists() and len(list((tmp_path / "pair" / "tb").iterdir())) == 1
    # Same global batches, global BatchNorm: only float32 summation order differs. Adam's first steps
    # move every alpha by about its lr (3e-4) whatever the gradient's size, so rounding in near-zero
    # alpha gradients grows into differences of a few lr in the alphas and ~1e-4 in later losses.
    first_one, first_two = single["history"][0], pair["history"][0]
    for key in ("loss", "alpha_loss", "alpha_eval_loss"):
        assert first_two[key] == pytest.approx(first_one[key], rel=2e-5), key
    for one, two in zip(single["history"], pair["history"]):
        for key in ("loss", "alpha_loss", "alpha_eval_loss"):
            assert two[key] == pytest.approx(one[key], rel=1e-3), key
        assert two["alpha_rank_divergence"] == 0.0      # both ranks hold bit-identical alphas every epoch
    for name, alphas in single["alphas"].items():
        torch.testing.assert_close(torch.tensor(pair["alphas"][name]), torch.tensor(alphas), rtol=0, atol=2e-3)


def test_two_process_search_stopped_by_sigterm_resumes_exactly(tmp_path):
    """Per-rank BatchNorm (the default). SIGTERM to torchrun and its workers mid-run: the ranks agree
    on a step, rank 0 checkpoints it, and the resumed run ends bit-identical to an uninterrupted one."""
    options = ("search.epochs=3", "preemption.sync_every=1")
    full = launch(tmp_path / "full", *options, processes=2)
    assert all(record["alpha_rank_divergence"] == 0.0 for record in full["history"])

    run_dir = tmp_path / "cut"
    job = subprocess.Popen(command(run_dir, options, 2), cwd=REPO_ROOT, env=ENV, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
    first_epoch = run_dir / "genotypes" / "epoch_000.json"
    deadline = time.time() + 300
    while not first_epoch.exists() and job.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGTERM)
    output, _ = job.communicate(timeout=300)
    assert job.returncode != 0, output
    assert "checkpoint saved" in output and "Traceback" not in output.split("stopped:")[0], output
    assert not (run_dir / "results.json").exists()

    resumed = launch(run_dir, *options, "resume=auto", processes=2)
    assert resumed["alphas"] == full["alphas"]
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in full["history"]]
    assert [r["alpha_eval_loss"] for r in resumed["history"]] == [r["alpha_eval_loss"] for r in full["history"]]


FINAL_SMOKE = ["experiment=smoke", "train.epochs=1", "train.max_steps_per_epoch=3", "train.batch_size=16",
               "train.drop_path_prob=0"]   # drop path draws per-image masks from each rank's RNG


def test_two_process_final_training_equals_one_process_and_only_rank0_writes(tmp_path):
    single = launch(tmp_path / "single", "distributed.sync_bn=true", script="train_final.py", base=FINAL_SMOKE)
    pair = launch(tmp_path / "pair", "distributed.sync_bn=true", processes=2, script="train_final.py",
                  base=FINAL_SMOKE)
    assert pair["world_size"] == 2 and pair["images_per_s"] > 0
    for key in ("train_loss", "test_loss"):
        assert pair[key] == pytest.approx(single[key], rel=1e-4), key
    assert pair["test_top1"] == single["test_top1"]
    assert len(list((tmp_path / "pair" / "tb").iterdir())) == 1 and (tmp_path / "pair" / "model.pt").is_file()


def test_a_rank_removes_only_a_stray_directory_that_hydra_alone_wrote(tmp_path):
    from darts.engine.context import remove_hydra_only_directory

    stray, real = tmp_path / "12-00-01", tmp_path / "12-00-00"
    for directory in (stray, real):
        (directory / ".hydra").mkdir(parents=True)
        (directory / ".hydra" / "config.yaml").write_text("seed: 0\n")
        (directory / "train_search.log").write_text("")
    (real / "checkpoint.pt").write_bytes(b"x")
    remove_hydra_only_directory(stray)
    remove_hydra_only_directory(real)
    assert not stray.exists() and (real / "checkpoint.pt").exists()
