"""The runtime contract of the experiment presets: every preset in conf/experiment that reproduces a paper
runs the published arithmetic (runtime=exact: float32, eager, NCHW, deterministic algorithms) unless the
command line asks for `runtime=fast`; only the CPU demo / smoke presets and the seed-sweep protocols (which
take their runtime from the method preset they are combined with) run the fast path. The list of presets
is read from the directory, so a new preset is covered without touching this file."""
from __future__ import annotations

import pytest
import torch

from darts.runtime import build_runtime
from helpers import compose_config
from test_config import preset_cases

# The presets that keep the fast path, every other preset must resolve to runtime=exact: those that
# reproduce no paper (CPU-sized demos, smoke runs, the tuning example) and the protocol halves (the
# method preset they are combined with sets the runtime).
FAST_PRESETS = {"smoke", "fashion_mnist_cpu", "found_vs_random", "pareto_fashion_mnist", "optuna_final", "protocol_search", "protocol_final"}
CASES = preset_cases()


def test_the_fast_list_names_existing_presets_only():
    assert FAST_PRESETS <= {preset for _, preset in CASES}


@pytest.mark.parametrize("primary, preset", CASES)
def test_preset_resolves_to_its_runtime_and_runtime_fast_switches_it(primary, preset):
    cfg = compose_config(primary, [f"experiment={preset}"])
    runtime = build_runtime(cfg.fast, torch.device("cpu"), cfg.deterministic)
    if preset in FAST_PRESETS:
        assert cfg.fast.enabled is True and runtime.selective_grads and runtime.channels_last
        return
    assert cfg.fast.enabled is False and cfg.deterministic is True, preset
    # What fast.enabled=false builds: float32 (no autocast), NCHW, eager, unfused mixed ops, full backward.
    assert (runtime.amp_dtype, runtime.channels_last, runtime.compile, runtime.fused_mixed_ops,
            runtime.selective_grads, runtime.depthwise_conv_grads) == (None, False, False, False, False, False)
    fast = compose_config(primary, [f"experiment={preset}", "runtime=fast"])
    assert fast.fast.enabled is True and fast.deterministic is False, preset


def test_exact_and_fast_differ_only_in_how_a_run_computes():
    """runtime=exact changes `fast` and `deterministic` and nothing else of a composed config."""
    for primary in ("search", "final"):
        fast, exact = (compose_config(primary, [f"runtime={name}"]) for name in ("fast", "exact"))
        changed = {key for key in set(fast) | set(exact) if fast.get(key) != exact.get(key)}
        assert changed == {"fast", "deterministic"}, changed
        assert exact.fast.amp == "off" and exact.fast.compile is False and exact.fast.channels_last is False


# -- PC-DARTS's ImageNet search: a fixed fraction of every class of the training split ------------------
def image_folder(root, counts: dict[str, int], size: int = 8, split: str = "train"):
    """root/<split>/<class>/<i>.png: ``counts[class]`` random RGB images of ``size`` x ``size``."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for name, count in counts.items():
        directory = root / split / name
        directory.mkdir(parents=True)
        for i in range(count):
            pixels = torch.randint(0, 256, (size, size, 3), generator=generator, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(directory / f"{i}.png")
    return root


def test_subset_keeps_the_fraction_of_every_class_from_a_seed_and_leaves_the_test_split(tmp_path):
    from darts.data.datasets.base import load_split
    from darts.errors import DartsError

    root = image_folder(tmp_path, {"a": 8, "b": 4})
    image_folder(tmp_path, {"a": 3, "b": 3}, split="val")
    cfg = {"name": "imagenet", "root": str(root), "subset": {"fraction": 0.5, "seed": 0}}
    train, info = load_split(cfg, "train")
    names = [path.rsplit("/", 2)[-2:] for path, _ in train.samples]
    assert info.num_classes == 2 and len(train) == 6 and train.targets == [0, 0, 0, 0, 1, 1]
    assert sum(cls == "a" for cls, _ in names) == 4 and sum(cls == "b" for cls, _ in names) == 2
    again, _ = load_split(cfg, "train")
    other, _ = load_split({**cfg, "subset": {"fraction": 0.5, "seed": 1}}, "train")
    assert again.samples == train.samples and other.samples != train.samples
    assert len(load_split(cfg, "test")[0]) == 6 and len(load_split({**cfg, "subset": None}, "train")[0]) == 12
    assert train[0][0].shape == (3, 224, 224)
    with pytest.raises(DartsError, match=r"dataset.subset.fraction for imagenet must be a number in \(0, 1\]"):
        load_split({**cfg, "subset": {"fraction": 1.5}}, "train")


def test_pcdarts_imagenet_preset_searches_a_tiny_image_folder(tmp_path):
    """The preset's data path end to end at smoke size: 12.5 % of every class, split 80 / 20. The folder is
    read as `imagefolder` at 32 pixels (the imagenet dataset's 224 crops take minutes on two cores); both
    go through the same subset code."""
    from darts.engine import run_search
    from helpers import read_json

    root = image_folder(tmp_path / "data", {"a": 32, "b": 32, "c": 32})
    preset = compose_config("search", ["experiment=pcdarts_imagenet"])
    assert preset.dataset.name == "imagenet" and preset.dataset.subset.fraction == 0.125
    cfg = compose_config("search", ["experiment=pcdarts_imagenet", "dataset=imagefolder", "dataset.image_size=16",
                                    f"dataset.root={root}", "dataset.num_workers=0",
                                    "space.C=4", "space.layers=3", "search.epochs=1", "search.batch_size=2",
                                    "search.eval_batch_size=4", "search.max_steps_per_epoch=1",
                                    "search.eval_max_batches=1", "strategy.arch_start_epoch=0", "optim.weights.warmup_epochs=0",
                                    "device=cpu"])
    assert (cfg.dataset.subset.fraction, cfg.search.train_portion, cfg.strategy.partial_channels) == (0.125, 0.8, 2)
    results = run_search(cfg, tmp_path / "run")
    split = read_json(tmp_path / "run" / "split.json")
    # 4 of each class's 32 images are kept: 12, of which round(0.8 x 12) = 10 train the weights, 2 the alphas.
    assert (len(split["weight_indices"]), len(split["alpha_indices"])) == (10, 2)
    assert results["strategy"] == "pcdarts" and results["genotype_string"]
