"""The datasets behind the contract in :mod:`darts.data.datasets.base`: one module per dataset
(CIFAR-10/100 and SVHN, which torchvision reads alike, share one).

Importing this package registers the built-in datasets in :data:`DATASETS`, in this order. Loaders
import torchvision only when called: it takes seconds to import, and the datasets read from IDX files
or generated in memory never need it.
"""
from darts.data.datasets import torchvision_sets  # noqa: F401  cifar10, cifar100, svhn
from darts.data.datasets import fashion_mnist  # noqa: F401
from darts.data.datasets import synthetic  # noqa: F401
from darts.data.datasets import imagefolder, imagenet  # noqa: F401
from darts.data.datasets.base import (DATASETS, SPLITS, DatasetInfo, DatasetLoader, ImageTensors, LoadedSplit, View,
                                      load_split)

__all__ = ["DATASETS", "SPLITS", "DatasetInfo", "DatasetLoader", "ImageTensors", "LoadedSplit", "View",
           "load_split"]
