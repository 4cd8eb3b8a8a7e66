"""ImageNet in ImageFolder layout (``root/train``, ``root/val``) with the published DARTS pipeline."""
from __future__ import annotations

import functools

from darts.data.datasets.base import DATASETS, DatasetInfo, LoadedSplit, View
from darts.data.datasets.folder import (IMAGENET_MEAN, IMAGENET_STD, apply_subset, compose, read_image_folder,
                                       split_directory)
from darts.data.options import option, required_root

IMAGENET_IMAGE_SIZE = 224


def imagenet_transforms(view: View, mean: tuple[float, ...], std: tuple[float, ...], color_jitter: bool = True):
    """The published DARTS ImageNet pipeline: random-resized 224 crops, flips and (``color_jitter``)
    colour jitter for training; resize to 256 and centre-crop 224 for evaluation. PIL image -> float32
    (3, 224, 224). PC-DARTS's ImageNet search has no jitter (``dataset.augment.color_jitter=false``)."""
    import torchvision.transforms as T

    if view.augment:
        steps = [T.RandomResizedCrop(IMAGENET_IMAGE_SIZE), T.RandomHorizontalFlip()]
        if color_jitter:
            steps.append(T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2))
    else:
        steps = [T.Resize(256), T.CenterCrop(IMAGENET_IMAGE_SIZE)]
    return compose(steps, view, mean, std)


@DATASETS.register("imagenet")
def load_imagenet(cfg, split: str, view: View) -> LoadedSplit:
    """A FolderImages Dataset of ``root/train`` or ``root/val``; ImageNet's own mean and std."""
    directory = split_directory(required_root(cfg), "imagenet", split, test_dirs=("val",))
    jitter = bool(option(option(cfg, "augment", {}), "color_jitter", True))
    transforms_for = functools.partial(imagenet_transforms, mean=IMAGENET_MEAN, std=IMAGENET_STD, color_jitter=jitter)
    dataset = apply_subset(cfg, split, read_image_folder("imagenet", directory, view, transforms_for), "imagenet")
    return dataset, DatasetInfo("imagenet", 3, len(dataset.classes), IMAGENET_IMAGE_SIZE, IMAGENET_MEAN,
                                IMAGENET_STD)
