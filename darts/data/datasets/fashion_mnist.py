"""Fashion-MNIST from its original IDX files (no torchvision needed), held whole as uint8 (N, 1, 28, 28)."""
from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import torch
from torch import Tensor

from darts.data.datasets.base import DATASETS, DatasetInfo, ImageTensors, View
from darts.data.options import is_set, option
from darts.errors import DartsError

FASHION_MNIST_INFO = DatasetInfo("fashion_mnist", 1, 10, 28, (0.2860,), (0.3530,))

# Where Debian's dataset-fashion-mnist package installs the original IDX files.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

# IDX magic numbers: 0x08 (unsigned byte) in the third byte, the number of dimensions in the fourth.
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
# (images, labels) file names of each split, without the optional .gz.
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path | str, expected_magic: int) -> Tensor:
    """One IDX file (gzip-compressed or plain) as a uint8 tensor of the shape its header declares.

    Raises DartsError for a file that is not IDX, is truncated, has trailing bytes or a broken gzip stream.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":   # the gzip magic, whatever the file is called
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DartsError(f"cannot read IDX file {str(path)!r}: {err}; the file is corrupt or truncated, "
                         f"delete it or point dataset.idx_dir elsewhere") from err
    if len(raw) < 4:
        raise DartsError(f"IDX file {str(path)!r} is truncated ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise DartsError(f"IDX file {str(path)!r} has magic number {magic}, expected {expected_magic}; "
                         f"it is not the file its name says")
    num_dims = raw[3]
    header_size = 4 + 4 * num_dims
    if len(raw) < header_size:
        raise DartsError(f"IDX file {str(path)!r} is truncated inside its header")
    shape = [int.from_bytes(raw[4 + 4 * dim:8 + 4 * dim], "big") for dim in range(num_dims)]
    expected_size = header_size + math.prod(shape)
    if len(raw) != expected_size:
        raise DartsError(f"IDX file {str(path)!r} holds {len(raw)} bytes but its header {shape} needs "
                         f"{expected_size}; the file is truncated or corrupt")
    # bytearray: torch.frombuffer wants a writable buffer it may share.
    return torch.frombuffer(bytearray(raw[header_size:]), dtype=torch.uint8).reshape(shape)


def find_idx_file(directory: Path, stem: str) -> Path | None:
    """``directory/stem`` or ``directory/stem.gz``, whichever exists first; None when neither does."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_fashion_mnist_idx(images_path: Path, labels_path: Path) -> ImageTensors:
    """images (N, 1, 28, 28) uint8, labels (N,) int64 from a pair of IDX files, checked for consistency."""
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC)
    if images.dim() != 3 or tuple(images.shape[1:]) != (28, 28):
        raise DartsError(f"IDX file {str(images_path)!r} holds images of shape {tuple(images.shape)}, "
                         f"not (N, 28, 28)")
    if labels.shape[0] != images.shape[0]:
        raise DartsError(f"{str(images_path)!r} holds {images.shape[0]} images but {str(labels_path)!r} "
                         f"{labels.shape[0]} labels")
    if labels.numel() and int(labels.max()) >= 10:
        raise DartsError(f"IDX file {str(labels_path)!r} holds label {int(labels.max())}; Fashion-MNIST has 10")
    return ImageTensors(images.unsqueeze(1).contiguous(), labels.to(torch.int64))


@DATASETS.register("fashion_mnist")
def load_fashion_mnist(cfg, split: str, view: View) -> tuple[ImageTensors, DatasetInfo]:
    """IDX files from torchvision's layout under root, else ``dataset.idx_dir`` (by default the Debian
    package's directory), else a torchvision download into root when ``dataset.download`` is true."""
    root_value = option(cfg, "root")
    images_stem, labels_stem = FASHION_MNIST_FILES[split]
    places: list[Path] = []
    if is_set(root_value):
        places.append(Path(os.path.expanduser(str(root_value))) / "FashionMNIST" / "raw")
    places.append(Path(os.path.expanduser(str(option(cfg, "idx_dir", DEBIAN_FASHION_MNIST_DIR)))))
    for directory in places:
        images_path = find_idx_file(directory, images_stem)
        labels_path = find_idx_file(directory, labels_stem)
        if images_path is not None and labels_path is not None:
            return read_fashion_mnist_idx(images_path, labels_path), FASHION_MNIST_INFO

    looked = ", ".join(repr(str(place)) for place in places)
    # A download needs root (the first place) to download into.
    if not bool(option(cfg, "download", False)) or len(places) == 1:
        raise DartsError(f"dataset fashion_mnist ({split}): no {images_stem}[.gz] and {labels_stem}[.gz] in "
                         f"{looked}; set dataset.download=true (with dataset.root set), dataset.root=<directory "
                         f"holding FashionMNIST/raw>, or dataset.idx_dir=<directory holding the IDX files> "
                         f"(Debian: apt install dataset-fashion-mnist)")
    import torchvision.datasets as tv_datasets

    root = places[0].parent.parent
    try:
        dataset = tv_datasets.FashionMNIST(str(root), train=split == "train", download=True)
    except (RuntimeError, OSError) as err:
        raise DartsError(f"could not download dataset fashion_mnist into {str(root)!r}: {err}; check the "
                         f"network connection, or set dataset.idx_dir=<directory holding the IDX files>") from err
    tensors = ImageTensors(dataset.data.unsqueeze(1).contiguous(), dataset.targets.to(torch.int64))
    return tensors, FASHION_MNIST_INFO
