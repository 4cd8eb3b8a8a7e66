"""The dataset contract, and the registry every dataset is chosen from.

A dataset is one loader registered with ``@DATASETS.register(name)`` plus one ``conf/dataset/NAME.yaml``
whose ``name`` selects it; adding one touches no other code. A loader is called as::

    data, info = loader(cfg, split, view)

and takes

* ``cfg``: the ``dataset`` config node (a DictConfig, a dict or an object with attributes; read it with
  :func:`darts.data.options.option`, so that absent and unset keys fall back to the loader's defaults);
* ``split``: ``"train"`` or ``"test"`` (one of :data:`SPLITS`, checked before the call);
* ``view``: a :class:`View`, the transforms a Dataset applies to its images. Tensor datasets ignore it:
  :class:`darts.data.batches.DeviceBatches` augments them on the device.

It returns

* ``data``, one of

  - :class:`ImageTensors`, the whole split held as tensors (images uint8 (N, C, H, W), labels int64 (N,)),
    for datasets that fit in memory: they are batched and augmented on the device;
  - a torch ``Dataset`` of (image float32 (C, H, W), already transformed as ``view`` asks and normalised
    with ``info.mean``/``info.std``, label int), batched through a DataLoader. It must also have
    ``with_view(view) -> Dataset``: the same examples in the same order under another view's transforms,
    without reading the list of files again (the search evaluates part of the training split unaugmented);

* ``info``: the :class:`DatasetInfo`, the same for both splits.

A split that is missing, corrupt or cannot be downloaded raises one :class:`~darts.errors.DartsError`
that names the problem and how to fix it (which directory was searched, which setting to change).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import Tensor
from torch.utils.data import Dataset

from darts.data.options import option
from darts.errors import DartsError, choices_message
from darts.registry import Registry

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset; ``mean``/``std``: one per channel, of pixels scaled to [0, 1]."""

    name: str
    in_channels: int
    num_classes: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass
class ImageTensors:
    """A whole split held as tensors: images uint8 (N, C, H, W), labels int64 (N,)."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]


@dataclass(frozen=True)
class View:
    """How a Dataset-backed split transforms its images.

    ``augment``: the training transforms (random crops, flips) rather than the evaluation view (resize and
    centre crop); ``cutout`` > 0 adds cutout of that size after normalisation (with ``augment`` only).
    """

    augment: bool
    cutout: int = 0


LoadedSplit = tuple[ImageTensors | Dataset, DatasetInfo]
DatasetLoader = Callable[[Any, str, View], LoadedSplit]   # (cfg, split, view) -> (data, info), as above
# Every dataset by name; what its loader takes and returns is this module's docstring.
DATASETS: Registry[DatasetLoader] = Registry("dataset")


def load_split(cfg, split: str, view: View | None = None) -> LoadedSplit:
    """Load one split ('train' or 'test') of the dataset that ``cfg.name`` names (see the module docstring).

    ``view`` defaults to the split's own: augmented for 'train', the evaluation view for 'test'. The search
    and final training pass another (the training split unaugmented, or with cutout).
    """
    if option(cfg, "kind") == "text":
        raise DartsError(f"dataset {option(cfg, 'name')!r} is a text corpus for the language-model space "
                         f"(space=darts_rnn); image datasets: {', '.join(DATASETS.names())}")
    loader = DATASETS.get(option(cfg, "name"))
    if split not in SPLITS:
        raise DartsError(choices_message("split", split, SPLITS))
    return loader(cfg, split, View(augment=split == "train") if view is None else view)
