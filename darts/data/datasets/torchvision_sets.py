"""CIFAR-10, CIFAR-100 and SVHN, read through torchvision and held whole as uint8 (N, 3, 32, 32) tensors."""
from __future__ import annotations

from typing import Callable

import torch

from darts.data.datasets.base import DATASETS, DatasetInfo, ImageTensors, View
from darts.data.options import option, required_root
from darts.errors import DartsError

CIFAR10_INFO = DatasetInfo("cifar10", 3, 10, 32, (0.49139968, 0.48215827, 0.44653124),
                           (0.24703233, 0.24348505, 0.26158768))
CIFAR100_INFO = DatasetInfo("cifar100", 3, 100, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
SVHN_INFO = DatasetInfo("svhn", 3, 10, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))


def open_torchvision(cfg, name: str, split: str, layout: str, construct: Callable[[str, bool], object]):
    """``construct(root, download)``, turning torchvision's failures into one DartsError.

    ``layout`` names the files torchvision expects under ``dataset.root``, quoted when they are missing.
    """
    root = required_root(cfg)
    download = bool(option(cfg, "download", False))
    try:
        return construct(str(root), download)
    except ImportError as err:
        # torchvision reads SVHN's .mat files with scipy, which is optional.
        raise DartsError(f"dataset {name} needs the package {err.name or 'scipy'}: pip install "
                         f"{err.name or 'scipy'}") from err
    except (RuntimeError, OSError) as err:
        # RuntimeError: torchvision's "Dataset not found or corrupted"; OSError covers URLError and socket errors.
        if not download:
            raise DartsError(f"dataset {name} ({split}) not found under {str(root)!r} (expected "
                             f"{layout} there) and dataset.download is false; set "
                             f"dataset.download=true or dataset.root=<the directory holding it>") from err
        raise DartsError(f"could not download dataset {name} into {str(root)!r}: {err}; check the network "
                         f"connection, or place the files there by hand and set dataset.download=false") from err


def cifar_tensors(dataset) -> ImageTensors:
    """A torchvision CIFAR dataset (data (N, 32, 32, 3) uint8, targets a list) as ImageTensors."""
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2)  # (N, 32, 32, 3) -> (N, 3, 32, 32)
    return ImageTensors(images.contiguous(), torch.as_tensor(dataset.targets, dtype=torch.int64))


@DATASETS.register("cifar10")
def load_cifar10(cfg, split: str, view: View) -> tuple[ImageTensors, DatasetInfo]:
    import torchvision.datasets as tv_datasets

    dataset = open_torchvision(cfg, "cifar10", split, "cifar-10-batches-py", lambda root, download:
                               tv_datasets.CIFAR10(root, train=split == "train", download=download))
    return cifar_tensors(dataset), CIFAR10_INFO


@DATASETS.register("cifar100")
def load_cifar100(cfg, split: str, view: View) -> tuple[ImageTensors, DatasetInfo]:
    import torchvision.datasets as tv_datasets

    dataset = open_torchvision(cfg, "cifar100", split, "cifar-100-python", lambda root, download:
                               tv_datasets.CIFAR100(root, train=split == "train", download=download))
    return cifar_tensors(dataset), CIFAR100_INFO


@DATASETS.register("svhn")
def load_svhn(cfg, split: str, view: View) -> tuple[ImageTensors, DatasetInfo]:
    import torchvision.datasets as tv_datasets

    dataset = open_torchvision(cfg, "svhn", split, "train_32x32.mat / test_32x32.mat", lambda root, download:
                               tv_datasets.SVHN(root, split=split, download=download))
    images = torch.from_numpy(dataset.data)                       # already (N, 3, 32, 32)
    return ImageTensors(images.contiguous(), torch.as_tensor(dataset.labels, dtype=torch.int64)), SVHN_INFO
