"""Datasets and mini-batches for search and final training.

Small datasets (CIFAR, SVHN, Fashion-MNIST, synthetic) are held whole as uint8 tensors and batched
straight from the device by :class:`DeviceBatches`, which augments on the device with batched tensor ops;
folder datasets (ImageFolder, ImageNet) go through a DataLoader in :class:`LoaderBatches`. Both share one
interface, ``len(batches)`` and ``batches.epoch(epoch, start)``, and both make the order of an epoch a
pure function of ``(seed, stream, epoch)`` so that a resumed run sees exactly the batches an
uninterrupted one would have seen.

The modules, each one job, in the order they build on each other:

* :mod:`~darts.data.options`: reading the ``dataset`` config node;
* :mod:`~darts.data.seeds`: the seeds and epoch orders every random choice derives from;
* :mod:`~darts.data.augment`: batched on-device augmentation (crop, flip, cutout, normalisation);
* :mod:`~darts.data.datasets`: the dataset registry :data:`DATASETS`, its contract
  (:mod:`darts.data.datasets.base`) and one module per dataset;
* :mod:`~darts.data.batches`: the mini-batch sources and the endless, resumable stream;
* :mod:`~darts.data.splits`: the search's and final training's data.
* :mod:`~darts.data.corpus`: the language-model corpora (PTB layout), their streams and BPTT windows.

Importing this package registers the built-in datasets.
"""
from darts.data.augment import Augment, AugmentDraw, SampleCutout, cut_out, flip_horizontally, pad_and_crop
from darts.data.batches import DeviceBatches, EndlessStream, EpochBatchSampler, LoaderBatches, shard_slice
from darts.data.datasets import (DATASETS, SPLITS, DatasetInfo, DatasetLoader, ImageTensors, LoadedSplit, View,
                                 load_split)
from darts.data.datasets.fashion_mnist import DEBIAN_FASHION_MNIST_DIR, FASHION_MNIST_FILES, read_idx
from darts.data.datasets.folder import IMAGENET_MEAN, IMAGENET_STD
from darts.data.seeds import stream_seed
from darts.data.splits import SearchData, TrainData, build_search_data, build_train_data, search_split

__all__ = [
    "DATASETS", "DEBIAN_FASHION_MNIST_DIR", "FASHION_MNIST_FILES", "IMAGENET_MEAN", "IMAGENET_STD", "SPLITS",
    "Augment", "AugmentDraw", "DatasetInfo", "DatasetLoader", "DeviceBatches", "EndlessStream",
    "EpochBatchSampler", "ImageTensors", "LoadedSplit", "LoaderBatches", "SampleCutout", "SearchData", "TrainData",
    "View", "build_search_data", "build_train_data", "cut_out", "flip_horizontally", "load_split", "pad_and_crop",
    "read_idx", "search_split", "shard_slice", "stream_seed",
]
