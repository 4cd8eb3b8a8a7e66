"""Custom data as class folders: ``root/train/<class>/*`` and ``root/test`` (or ``root/val``)."""
from __future__ import annotations

import functools

from darts.data.datasets.base import DATASETS, DatasetInfo, LoadedSplit, View
from darts.data.datasets.folder import (IMAGENET_MEAN, IMAGENET_STD, apply_subset, compose, read_image_folder,
                                       split_directory)
from darts.data.options import float_tuple, option, required_root

DEFAULT_IMAGE_SIZE = 32


def imagefolder_transforms(cfg, view: View, mean: tuple[float, ...], std: tuple[float, ...]):
    """PIL image -> float32 (3, S, S), S = ``dataset.image_size``, augmented as ``dataset.augment`` says.

    With ``crop_padding`` > 0 the training crops are CIFAR-style (the whole image shifted within a zero
    border), otherwise random-resized crops as on ImageNet.
    """
    import torchvision.transforms as T

    augment = option(cfg, "augment", {})
    image_size = int(option(cfg, "image_size", DEFAULT_IMAGE_SIZE))
    crop_padding = int(option(augment, "crop_padding", 0))
    if view.augment:
        if crop_padding > 0:
            # Bring the image to the working size first, so the padded crop shifts the whole image.
            steps = [T.Resize(image_size), T.CenterCrop(image_size), T.RandomCrop(image_size, crop_padding)]
        else:
            steps = [T.RandomResizedCrop(image_size)]
        if bool(option(augment, "flip", True)):
            steps.append(T.RandomHorizontalFlip())
    else:
        # Test views match the training scale: whole images for padded crops, ImageNet's 256/224 otherwise.
        resize = image_size if crop_padding > 0 else round(image_size * 256 / 224)
        steps = [T.Resize(resize), T.CenterCrop(image_size)]
    return compose(steps, view, mean, std)


@DATASETS.register("imagefolder")
def load_imagefolder(cfg, split: str, view: View) -> LoadedSplit:
    """A FolderImages Dataset; ``dataset.mean``/``dataset.std`` default to ImageNet's."""
    directory = split_directory(required_root(cfg), "imagefolder", split, test_dirs=("test", "val"))
    mean = float_tuple(option(cfg, "mean", IMAGENET_MEAN), "dataset.mean")
    std = float_tuple(option(cfg, "std", IMAGENET_STD), "dataset.std")
    image_size = int(option(cfg, "image_size", DEFAULT_IMAGE_SIZE))
    transforms_for = functools.partial(imagefolder_transforms, cfg, mean=mean, std=std)
    dataset = apply_subset(cfg, split, read_image_folder("imagefolder", directory, view, transforms_for), "imagefolder")
    return dataset, DatasetInfo("imagefolder", 3, len(dataset.classes), image_size, mean, std)
