"""A small, learnable dataset generated in memory, deterministically: for tests and smoke runs."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from darts.data.datasets.base import DATASETS, DatasetInfo, ImageTensors, View
from darts.data.options import option, positive_int
from darts.data.seeds import stream_seed

# The defaults of the synthetic dataset when its config leaves a key out.
SYNTHETIC_DEFAULTS = {"num_train": 1024, "num_test": 256, "image_size": 32, "channels": 3, "num_classes": 10,
                      "seed": 0}
# Synthetic pixels: class templates spread over [48, 208], plus Gaussian noise of this standard deviation.
SYNTHETIC_TEMPLATE_LOW = 48.0
SYNTHETIC_TEMPLATE_RANGE = 160.0
SYNTHETIC_NOISE_STD = 32.0
SYNTHETIC_PATTERN_CELLS = 4   # the templates are a 4x4 grid of random colours, upsampled: low-frequency on purpose


@DATASETS.register("synthetic")
def load_synthetic(cfg, split: str, view: View) -> tuple[ImageTensors, DatasetInfo]:
    """Class templates (shared by both splits) plus per-image noise: learnable, deterministic, generated in memory.

    Each class is a 4x4 grid of random colours upsampled to the image size; an image is its class's
    template plus Gaussian noise, rounded and clipped to uint8. The split's seed differs from the
    templates' seed, so train and test hold different images of the same classes.
    """
    size = positive_int(cfg, "image_size", SYNTHETIC_DEFAULTS["image_size"], "synthetic")
    channels = positive_int(cfg, "channels", SYNTHETIC_DEFAULTS["channels"], "synthetic")
    num_classes = positive_int(cfg, "num_classes", SYNTHETIC_DEFAULTS["num_classes"], "synthetic")
    count_key = "num_train" if split == "train" else "num_test"
    count = positive_int(cfg, count_key, SYNTHETIC_DEFAULTS[count_key], "synthetic")
    seed = int(option(cfg, "seed", SYNTHETIC_DEFAULTS["seed"]))

    template_generator = torch.Generator().manual_seed(stream_seed(seed, "synthetic/templates", 0))
    cells = min(SYNTHETIC_PATTERN_CELLS, size)
    coarse = torch.rand(num_classes, channels, cells, cells, generator=template_generator)
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    templates = SYNTHETIC_TEMPLATE_LOW + SYNTHETIC_TEMPLATE_RANGE * smooth            # (K, C, S, S) pixel values

    split_generator = torch.Generator().manual_seed(stream_seed(seed, f"synthetic/{split}", 0))
    # Balanced classes, in a shuffled order.
    labels = (torch.arange(count) % num_classes)[torch.randperm(count, generator=split_generator)]
    noise = torch.randn(count, channels, size, size, generator=split_generator) * SYNTHETIC_NOISE_STD
    images = (templates[labels] + noise).round().clamp(0, 255).to(torch.uint8)     # (N, C, S, S)

    # Mean and std of template + noise over balanced classes (clipping aside), the same for both splits.
    channel_mean = templates.mean(dim=(0, 2, 3)) / 255.0
    channel_var = templates.var(dim=(0, 2, 3), unbiased=False) + SYNTHETIC_NOISE_STD ** 2
    channel_std = channel_var.sqrt() / 255.0
    info = DatasetInfo("synthetic", channels, num_classes, size, tuple(channel_mean.tolist()),
                       tuple(channel_std.tolist()))
    return ImageTensors(images, labels.to(torch.int64)), info
