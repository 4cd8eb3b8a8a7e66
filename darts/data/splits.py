"""The data of the two tasks: the search (weights and alphas on two halves of the training split) and
final training (the whole training split, evaluated on the test split).

Both come in the form their dataset's loader gives: tensors batched on the device, or a Dataset batched
through a DataLoader (see :mod:`darts.data.datasets.base`).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

from darts.data.augment import Augment
from darts.data.batches import DeviceBatches, EndlessStream, LoaderBatches
from darts.data.datasets.base import DatasetInfo, ImageTensors, View, load_split
from darts.data.options import option
from darts.data.seeds import stream_seed
from darts.errors import DartsError


def search_split(num_examples: int, portion: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split range(num_examples) by a seeded permutation into (weight, alpha) halves, each sorted int64.

    The weight half gets round(portion * num_examples) examples, the alpha half the rest.
    """
    if isinstance(portion, bool) or not isinstance(portion, numbers.Real) or not 0.0 < portion < 1.0:
        raise DartsError(f"train portion {portion!r} must lie strictly between 0 and 1 (the weight half's share)")
    num_weight = int(round(portion * num_examples))
    if not 0 < num_weight < num_examples:
        raise DartsError(f"train portion {portion} splits {num_examples} examples into {num_weight} and "
                         f"{num_examples - num_weight}; both halves need at least one, so pick a portion in "
                         f"({1 / num_examples if num_examples else 0:.4g}, "
                         f"{1 - 1 / num_examples if num_examples else 0:.4g})")
    generator = torch.Generator().manual_seed(stream_seed(seed, "search_split", 0))
    permutation = torch.randperm(num_examples, generator=generator)
    return permutation[:num_weight].sort().values, permutation[num_weight:].sort().values


@dataclass
class SearchData:
    """The search's data: weights train on one half of the training split, alphas on the other."""

    info: DatasetInfo
    weight_batches: DeviceBatches | LoaderBatches       # weight half, training augmentation, shuffled, drop_last
    alpha_stream: EndlessStream                         # alpha half, training augmentation (as published), shuffled
    alpha_eval_batches: DeviceBatches | LoaderBatches   # alpha half, no augmentation, in order, every example
    weight_indices: Tensor                              # (N_weight,) int64 into the training split
    alpha_indices: Tensor                               # (N_alpha,) int64 into the training split


def _train_augment(cfg, info: DatasetInfo, cutout: int = 0) -> Augment:
    """The device augmentation of training batches: ``dataset.augment``'s crop and flip, plus ``cutout``."""
    augment = option(cfg, "augment", {})
    return Augment(info.mean, info.std, crop_padding=int(option(augment, "crop_padding", 0)),
                   flip=bool(option(augment, "flip", False)), cutout=cutout)


def build_search_data(cfg, batch_size: int, portion: float, seed: int, device,
                      eval_batch_size: int | None = None, shard: tuple[int, int] = (0, 1),
                      cutout: int = 0) -> SearchData:
    """The search's batches from the training split only (the test split is never loaded).
    ``batch_size`` is the global batch; ``shard=(rank, world_size)`` gives this rank's part of each.
    ``cutout`` > 0 adds cutout to the weight half's augmentation (random sampling trains its candidates
    there as final training does); a folder dataset's halves share one transform, so its alpha stream
    gets cutout too."""
    eval_batch_size = eval_batch_size or batch_size
    num_workers = int(option(cfg, "num_workers", 2))
    train, info = load_split(cfg, "train", View(augment=True, cutout=cutout))
    weight_indices, alpha_indices = search_split(len(train), portion, seed)
    if isinstance(train, ImageTensors):
        alpha_augment = _train_augment(cfg, info)
        weight_batches = DeviceBatches(train, weight_indices, batch_size, _train_augment(cfg, info, cutout), seed,
                                       "search/weights", device, shard=shard)
        # One device copy of the alpha half, shared by the stream and the evaluation pass.
        device = torch.device(device)
        alpha_half = ImageTensors(train.images[alpha_indices].to(device), train.labels[alpha_indices].to(device))
        alpha_batches = DeviceBatches(alpha_half, None, batch_size, alpha_augment, seed, "search/alphas", device,
                                      shard=shard)
        alpha_eval_batches = DeviceBatches(alpha_half, None, eval_batch_size, Augment(info.mean, info.std), seed,
                                           "search/alpha_eval", device, shuffle=False, drop_last=False, shard=shard)
    else:
        # The Dataset contract's with_view: the same files under the evaluation transforms, not scanned again.
        eval_view = train.with_view(View(augment=False))
        weight_batches = LoaderBatches(train, weight_indices, batch_size, seed, "search/weights", device,
                                       num_workers=num_workers, shard=shard)
        alpha_batches = LoaderBatches(train, alpha_indices, batch_size, seed, "search/alphas", device,
                                      num_workers=num_workers, shard=shard)
        alpha_eval_batches = LoaderBatches(eval_view, alpha_indices, eval_batch_size, seed, "search/alpha_eval",
                                           device, shuffle=False, drop_last=False, num_workers=num_workers,
                                           shard=shard)
    return SearchData(info, weight_batches, EndlessStream(alpha_batches), alpha_eval_batches,
                      weight_indices, alpha_indices)


@dataclass
class TrainData:
    """Final training's data: the training split to learn from (less a held-out validation part when
    one is asked for), the test split to report."""

    info: DatasetInfo
    train_batches: DeviceBatches | LoaderBatches   # training augmentation (+ cutout), shuffled, drop_last
    test_batches: DeviceBatches | LoaderBatches    # no augmentation, in order, every example
    valid_batches: DeviceBatches | LoaderBatches | None = None   # held-out training images, as the test's
    valid_indices: Tensor | None = None            # (N_valid,) int64 into the training split


def build_train_data(cfg, batch_size: int, seed: int, device, cutout: int = 0,
                     eval_batch_size: int | None = None, shard: tuple[int, int] = (0, 1),
                     valid_portion: float = 0.0) -> TrainData:
    """Batches of the training split (augmented, with cutout when > 0) and of the test split;
    ``batch_size`` is the global batch and ``shard=(rank, world_size)`` this rank's part of each.
    ``valid_portion`` > 0 holds that share of the training split out (a seeded permutation, as the
    search's split) as a validation set evaluated like the test set: what hyperparameters may be
    tuned on, since tuning on the test set would report a number chosen by the test set."""
    eval_batch_size = eval_batch_size or batch_size
    num_workers = int(option(cfg, "num_workers", 2))
    train, info = load_split(cfg, "train", View(augment=True, cutout=cutout))
    test, _ = load_split(cfg, "test", View(augment=False))
    train_indices = valid_indices = None
    if valid_portion:
        train_indices, valid_indices = search_split(len(train), 1.0 - valid_portion, seed)
    valid_batches = None
    if isinstance(train, ImageTensors):
        train_batches = DeviceBatches(train, train_indices, batch_size, _train_augment(cfg, info, cutout), seed,
                                      "train/train", device, shard=shard)
        test_batches = DeviceBatches(test, None, eval_batch_size, Augment(info.mean, info.std), seed,
                                     "train/test", device, shuffle=False, drop_last=False, shard=shard)
        if valid_indices is not None:
            valid_batches = DeviceBatches(train, valid_indices, eval_batch_size, Augment(info.mean, info.std), seed,
                                          "train/valid", device, shuffle=False, drop_last=False, shard=shard)
    else:
        train_batches = LoaderBatches(train, train_indices, batch_size, seed, "train/train", device,
                                      num_workers=num_workers, shard=shard)
        test_batches = LoaderBatches(test, None, eval_batch_size, seed, "train/test", device, shuffle=False,
                                     drop_last=False, num_workers=num_workers, shard=shard)
        if valid_indices is not None:
            valid_batches = LoaderBatches(train.with_view(View(augment=False)), valid_indices, eval_batch_size, seed,
                                          "train/valid", device, shuffle=False, drop_last=False,
                                          num_workers=num_workers, shard=shard)
    return TrainData(info, train_batches, test_batches, valid_batches, valid_indices)
