"""Datasets and mini-batches for search and final training.

Small datasets (CIFAR, SVHN, Fashion-MNIST, synthetic) are held whole as uint8
tensors and batched straight from the device by :class:`DeviceBatches`, which
augments on the device with batched tensor ops; folder datasets (ImageFolder,
ImageNet) go through a DataLoader in :class:`LoaderBatches`. Both share one
interface, ``len(batches)`` and ``batches.epoch(epoch, start)``, and both make
the order of an epoch a pure function of ``(seed, stream, epoch)`` so that a
resumed run sees exactly the batches an uninterrupted one would have seen.
"""
from __future__ import annotations

import copy
import gzip
import hashlib
import math
import numbers
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from darts.errors import DartsError, choices_message

DATASETS = ("cifar10", "cifar100", "svhn", "fashion_mnist", "synthetic", "imagefolder", "imagenet")
SPLITS = ("train", "test")

# Where Debian's dataset-fashion-mnist package installs the original IDX files.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# IDX magic numbers: 0x08 (unsigned byte) in the third byte, the number of dimensions in the fourth.
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# The defaults of the synthetic dataset when its config leaves a key out.
SYNTHETIC_DEFAULTS = {"num_train": 1024, "num_test": 256, "image_size": 32, "channels": 3, "num_classes": 10,
                      "seed": 0}
# Synthetic pixels: class templates spread over [48, 208], plus Gaussian noise of this standard deviation.
SYNTHETIC_TEMPLATE_LOW = 48.0
SYNTHETIC_TEMPLATE_RANGE = 160.0
SYNTHETIC_NOISE_STD = 32.0
SYNTHETIC_PATTERN_CELLS = 4   # the templates are a 4x4 grid of random colours, upsampled: low-frequency on purpose


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset."""

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


TENSOR_DATASET_INFO = {
    "cifar10": DatasetInfo("cifar10", 3, 10, 32, (0.49139968, 0.48215827, 0.44653124),
                           (0.24703233, 0.24348505, 0.26158768)),
    "cifar100": DatasetInfo("cifar100", 3, 100, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": DatasetInfo("svhn", 3, 10, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "fashion_mnist": DatasetInfo("fashion_mnist", 1, 10, 28, (0.2860,), (0.3530,)),
}

# Directory names torchvision expects under `root`, quoted in "not found" messages.
TORCHVISION_LAYOUT = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python",
                      "svhn": "train_32x32.mat / test_32x32.mat"}


# ---------------------------------------------------------------------------------------------------------------
# Config access
# ---------------------------------------------------------------------------------------------------------------
def _option(cfg, key: str, default=None):
    """``cfg[key]`` for a DictConfig, a dict or any object with attributes; ``default`` when absent or unset."""
    if hasattr(cfg, "get"):
        # DictConfig.get returns None for a mandatory '???' value instead of raising, as a missing key should.
        value = cfg.get(key, default)
    else:
        value = getattr(cfg, key, default)
    return default if value is None else value


def _required_root(cfg) -> Path:
    root = _option(cfg, "root")
    if root is None or str(root) in ("", "???"):
        raise DartsError(f"dataset {_option(cfg, 'name')!r} needs dataset.root (a directory); it is not set")
    return Path(os.path.expanduser(str(root)))


def _positive_int(cfg, key: str, default: int, name: str) -> int:
    value = _option(cfg, key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DartsError(f"dataset.{key} for {name} must be a positive integer, got {value!r}")
    return value


def _float_tuple(values, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(value) for value in values)
    except (TypeError, ValueError) as err:
        raise DartsError(f"{what} must be a list of numbers, got {values!r}") from err


# ---------------------------------------------------------------------------------------------------------------
# Loading a split
# ---------------------------------------------------------------------------------------------------------------
def load_split(cfg, split: str) -> tuple[ImageTensors | Dataset, DatasetInfo]:
    """Load one split ('train' or 'test') of the dataset that ``cfg.name`` names.

    Tensor datasets (cifar10, cifar100, svhn, fashion_mnist, synthetic) come back as :class:`ImageTensors`;
    folder datasets (imagefolder, imagenet) as a torchvision Dataset whose transforms already augment
    (train) or centre-crop (test) and normalise.
    """
    return _load(cfg, split, training_transforms=split == "train")


def _load(cfg, split: str, training_transforms: bool, cutout: int = 0) -> tuple[ImageTensors | Dataset, DatasetInfo]:
    """:func:`load_split`, but a folder dataset's transforms are chosen apart from the split it reads.

    The search evaluates on part of the *training* split without augmentation, and final training adds
    cutout to the folder datasets' transforms; neither is part of the public signature.
    """
    name = _option(cfg, "name")
    if name not in DATASETS:
        raise DartsError(choices_message("dataset", name, DATASETS))
    if split not in SPLITS:
        raise DartsError(choices_message("split", split, SPLITS))
    if name in ("cifar10", "cifar100", "svhn"):
        return _load_torchvision_tensors(cfg, name, split), TENSOR_DATASET_INFO[name]
    if name == "fashion_mnist":
        return _load_fashion_mnist(cfg, split), TENSOR_DATASET_INFO[name]
    if name == "synthetic":
        return _load_synthetic(cfg, split)
    return _load_folder(cfg, name, split, training_transforms, cutout)


def _load_torchvision_tensors(cfg, name: str, split: str) -> ImageTensors:
    """CIFAR-10/100 or SVHN through torchvision, converted once to uint8 (N, 3, 32, 32) tensors."""
    import torchvision.datasets as tv_datasets

    root = _required_root(cfg)
    download = bool(_option(cfg, "download", False))
    try:
        if name == "svhn":
            dataset = tv_datasets.SVHN(str(root), split=split, download=download)
        else:
            dataset_class = tv_datasets.CIFAR10 if name == "cifar10" else tv_datasets.CIFAR100
            dataset = dataset_class(str(root), train=split == "train", download=download)
    except ImportError as err:
        # torchvision reads SVHN's .mat files with scipy, which is optional.
        raise DartsError(f"dataset {name} needs the package {err.name or 'scipy'}: pip install "
                         f"{err.name or 'scipy'}") from err
    except (RuntimeError, OSError) as err:
        # RuntimeError: torchvision's "Dataset not found or corrupted"; OSError covers URLError and socket errors.
        if not download:
            raise DartsError(f"dataset {name} ({split}) not found under {str(root)!r} (expected "
                             f"{TORCHVISION_LAYOUT[name]} there) and dataset.download is false; set "
                             f"dataset.download=true or dataset.root=<the directory holding it>") from err
        raise DartsError(f"could not download dataset {name} into {str(root)!r}: {err}; check the network "
                         f"connection, or place the files there by hand and set dataset.download=false") from err
    if name == "svhn":
        images = torch.from_numpy(dataset.data)                       # already (N, 3, 32, 32)
        labels = torch.as_tensor(dataset.labels, dtype=torch.int64)
    else:
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2)  # (N, 32, 32, 3) -> (N, 3, 32, 32)
        labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
    return ImageTensors(images.contiguous(), labels)


# -- Fashion-MNIST -------------------------------------------------------------------------------------------------
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


def _find_idx_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_fashion_mnist_idx(images_path: Path, labels_path: Path) -> ImageTensors:
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


def _load_fashion_mnist(cfg, split: str) -> ImageTensors:
    """IDX files from torchvision's layout under root, else the Debian package's directory, else a download."""
    root_value = _option(cfg, "root")
    images_stem, labels_stem = FASHION_MNIST_FILES[split]
    places: list[Path] = []
    if root_value is not None and str(root_value) not in ("", "???"):
        places.append(Path(os.path.expanduser(str(root_value))) / "FashionMNIST" / "raw")
    places.append(Path(os.path.expanduser(str(_option(cfg, "idx_dir", DEBIAN_FASHION_MNIST_DIR)))))
    for directory in places:
        images_path = _find_idx_file(directory, images_stem)
        labels_path = _find_idx_file(directory, labels_stem)
        if images_path is not None and labels_path is not None:
            return _read_fashion_mnist_idx(images_path, labels_path)

    looked = ", ".join(repr(str(place)) for place in places)
    if not bool(_option(cfg, "download", False)) or len(places) == 1:
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
    return ImageTensors(dataset.data.unsqueeze(1).contiguous(), dataset.targets.to(torch.int64))


# -- synthetic -------------------------------------------------------------------------------------------------------
def _load_synthetic(cfg, split: str) -> tuple[ImageTensors, DatasetInfo]:
    """Class templates (shared by both splits) plus per-image noise: learnable, deterministic, generated in memory.

    Each class is a 4x4 grid of random colours upsampled to the image size; an image is its class's
    template plus Gaussian noise, rounded and clipped to uint8. The split's seed differs from the
    templates' seed, so train and test hold different images of the same classes.
    """
    size = _positive_int(cfg, "image_size", SYNTHETIC_DEFAULTS["image_size"], "synthetic")
    channels = _positive_int(cfg, "channels", SYNTHETIC_DEFAULTS["channels"], "synthetic")
    num_classes = _positive_int(cfg, "num_classes", SYNTHETIC_DEFAULTS["num_classes"], "synthetic")
    count_key = "num_train" if split == "train" else "num_test"
    count = _positive_int(cfg, count_key, SYNTHETIC_DEFAULTS[count_key], "synthetic")
    seed = int(_option(cfg, "seed", SYNTHETIC_DEFAULTS["seed"]))

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


# -- ImageFolder / ImageNet ------------------------------------------------------------------------------------------
class SampleCutout:
    """Cutout for one normalised (C, H, W) tensor inside a Dataset's transforms (torch's global RNG)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Tensor) -> Tensor:
        height, width = image.shape[-2:]
        centre_y = torch.randint(0, height, (1,))
        centre_x = torch.randint(0, width, (1,))
        return cut_out(image.unsqueeze(0), self.size, centre_y, centre_x).squeeze(0)


def _folder_root(root: Path, name: str, split: str) -> Path:
    if not root.is_dir():
        raise DartsError(f"dataset {name}: root {str(root)!r} is not a directory; set dataset.root=<directory "
                         f"holding train/ and {'val/' if name == 'imagenet' else 'test/ (or val/)'}>")
    if split == "train":
        candidates = ["train"]
    else:
        candidates = ["val"] if name == "imagenet" else ["test", "val"]
    for candidate in candidates:
        if (root / candidate).is_dir():
            return root / candidate
    raise DartsError(f"dataset {name}: no {' or '.join(candidates)} directory under {str(root)!r}; expected "
                     f"{str(root)}/{candidates[0]}/<class>/<image files>")


def _folder_transforms(cfg, name: str, training: bool, cutout: int, mean, std):
    import torchvision.transforms as T

    augment = _option(cfg, "augment", {})
    if name == "imagenet":
        # The published DARTS ImageNet pipeline.
        if training:
            steps = [T.RandomResizedCrop(224), T.RandomHorizontalFlip(),
                     T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2)]
        else:
            steps = [T.Resize(256), T.CenterCrop(224)]
    else:
        image_size = int(_option(cfg, "image_size", 32))
        crop_padding = int(_option(augment, "crop_padding", 0))
        if training:
            if crop_padding > 0:
                # CIFAR-style: bring the image to the working size, then shift it within a zero border.
                steps = [T.Resize(image_size), T.CenterCrop(image_size), T.RandomCrop(image_size, crop_padding)]
            else:
                steps = [T.RandomResizedCrop(image_size)]
            if bool(_option(augment, "flip", True)):
                steps.append(T.RandomHorizontalFlip())
        else:
            # Test views match the training scale: whole images for padded crops, ImageNet's 256/224 otherwise.
            resize = image_size if crop_padding > 0 else round(image_size * 256 / 224)
            steps = [T.Resize(resize), T.CenterCrop(image_size)]
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if training and cutout > 0:
        steps.append(SampleCutout(cutout))   # after Normalize, as the published Cutout
    return T.Compose(steps)


def _load_folder(cfg, name: str, split: str, training_transforms: bool, cutout: int) -> tuple[Dataset, DatasetInfo]:
    import torchvision.datasets as tv_datasets

    directory = _folder_root(_required_root(cfg), name, split)
    if name == "imagenet":
        mean, std, image_size = IMAGENET_MEAN, IMAGENET_STD, 224
    else:
        mean = _float_tuple(_option(cfg, "mean", IMAGENET_MEAN), "dataset.mean")
        std = _float_tuple(_option(cfg, "std", IMAGENET_STD), "dataset.std")
        image_size = int(_option(cfg, "image_size", 32))
    transform = _folder_transforms(cfg, name, training_transforms, cutout, mean, std)
    try:
        dataset = tv_datasets.ImageFolder(str(directory), transform=transform)
    except (FileNotFoundError, OSError) as err:
        raise DartsError(f"dataset {name}: cannot read {str(directory)!r} as class folders of images: {err}") from err
    # ImageFolder converts every image to RGB.
    return dataset, DatasetInfo(name, 3, len(dataset.classes), image_size, mean, std)


def _with_transform(dataset: Dataset, transform) -> Dataset:
    """A shallow copy of an ImageFolder with other transforms: shares the file list, so no second scan."""
    from torchvision.datasets.vision import StandardTransform

    view = copy.copy(dataset)
    view.transform = transform
    view.transforms = StandardTransform(transform, view.target_transform)
    return view


# ---------------------------------------------------------------------------------------------------------------
# Batched augmentation on the device
# ---------------------------------------------------------------------------------------------------------------
def pad_and_crop(images: Tensor, padding: int, top: Tensor, left: Tensor) -> Tensor:
    """Zero-pad (B, C, H, W) by ``padding`` on every side and cut an H x W window per sample.

    top, left: (B,) int64 in [0, 2 * padding], the window's corner in the padded image (as
    torchvision's ``crop(pad(image, padding), top, left, H, W)``). Returns (B, C, H, W), same dtype.
    """
    batch, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))              # (B, C, H+2p, W+2p)
    rows = top.to(device)[:, None] + torch.arange(height, device=device)     # (B, H)
    cols = left.to(device)[:, None] + torch.arange(width, device=device)     # (B, W)
    batch_index = torch.arange(batch, device=device)[:, None, None, None]    # (B, 1, 1, 1)
    channel_index = torch.arange(channels, device=device)[None, :, None, None]  # (1, C, 1, 1)
    return padded[batch_index, channel_index, rows[:, None, :, None], cols[:, None, None, :]]


def flip_horizontally(images: Tensor, flip: Tensor) -> Tensor:
    """Mirror left-right the samples of (B, C, H, W) where the (B,) bool ``flip`` is true."""
    return torch.where(flip.to(images.device)[:, None, None, None], images.flip(-1), images)


def cut_out(images: Tensor, size: int, centre_y: Tensor, centre_x: Tensor) -> Tensor:
    """Zero a size x size square per sample of (B, C, H, W), centred at (centre_y, centre_x), (B,) int64.

    The square spans rows [centre_y - size // 2, centre_y - size // 2 + size), clipped at the border
    (for an even size this is exactly the published Cutout's square).
    """
    height, width = images.shape[-2:]
    device = images.device
    top = centre_y.to(device)[:, None] - size // 2                           # (B, 1)
    left = centre_x.to(device)[:, None] - size // 2
    rows = torch.arange(height, device=device)[None, :]                      # (1, H)
    cols = torch.arange(width, device=device)[None, :]
    inside_rows = (rows >= top) & (rows < top + size)                        # (B, H)
    inside_cols = (cols >= left) & (cols < left + size)                      # (B, W)
    square = inside_rows[:, None, :, None] & inside_cols[:, None, None, :]   # (B, 1, H, W)
    return images.masked_fill(square, 0.0)


@dataclass
class AugmentDraw:
    """The random numbers of one batch's augmentation, each (B,) on the images' device; None when off."""

    top: Tensor | None = None
    left: Tensor | None = None
    flip: Tensor | None = None
    centre_y: Tensor | None = None
    centre_x: Tensor | None = None


class Augment:
    """Random crop with zero padding, horizontal flip, normalisation and cutout on a whole uint8 batch."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], crop_padding: int = 0, flip: bool = False,
                 cutout: int = 0):
        self.mean = _float_tuple(mean, "mean")
        self.std = _float_tuple(std, "std")
        if len(self.mean) != len(self.std) or not self.mean:
            raise DartsError(f"mean {self.mean} and std {self.std} need the same, non-zero length")
        if any(value <= 0 for value in self.std):
            raise DartsError(f"std {self.std} must be positive")
        if int(crop_padding) < 0 or int(cutout) < 0:
            raise DartsError(f"crop_padding ({crop_padding}) and cutout ({cutout}) must be >= 0")
        self.crop_padding = int(crop_padding)
        self.flip = bool(flip)
        self.cutout = int(cutout)

    def sample(self, shape: Sequence[int], generator: torch.Generator | None, device=None) -> AugmentDraw:
        """Draw the randomness for a batch of ``shape`` (B, C, H, W) on the CPU, in a fixed order.

        Drawn on the CPU from ``generator`` (torch's default CPU generator when None) and then moved to
        ``device`` in one transfer, so a batch is augmented identically on the CPU and the GPU.
        """
        batch, _, height, width = shape
        names, draws = [], []
        if self.crop_padding > 0:
            span = 2 * self.crop_padding + 1
            names += ["top", "left"]
            draws += [torch.randint(0, span, (batch,), generator=generator),
                      torch.randint(0, span, (batch,), generator=generator)]
        if self.flip:
            names.append("flip")
            draws.append((torch.rand(batch, generator=generator) < 0.5).to(torch.int64))
        if self.cutout > 0:
            names += ["centre_y", "centre_x"]
            draws += [torch.randint(0, height, (batch,), generator=generator),
                      torch.randint(0, width, (batch,), generator=generator)]
        if not draws:
            return AugmentDraw()
        moved = torch.stack(draws).to(device) if device is not None else torch.stack(draws)   # (k, B)
        fields = dict(zip(names, moved.unbind(0)))
        if "flip" in fields:
            fields["flip"] = fields["flip"].bool()
        return AugmentDraw(**fields)

    def apply(self, images_uint8: Tensor, draw: AugmentDraw) -> Tensor:
        """(B, C, H, W) uint8 -> float32 normalised (B, C, H, W), on the same device, with ``draw``'s randomness."""
        if images_uint8.dtype != torch.uint8 or images_uint8.dim() != 4:
            raise ValueError(f"Augment wants uint8 (B, C, H, W), got {images_uint8.dtype} "
                             f"{tuple(images_uint8.shape)}")
        channels = images_uint8.shape[1]
        if len(self.mean) not in (1, channels):
            raise DartsError(f"normalisation has {len(self.mean)} channels but the images have {channels}")
        images = images_uint8
        # Crop and flip move uint8 pixels: a quarter of the memory traffic of doing it in float.
        if draw.top is not None:
            images = pad_and_crop(images, self.crop_padding, draw.top, draw.left)
        if draw.flip is not None:
            images = flip_horizontally(images, draw.flip)
        device = images.device
        mean = torch.tensor(self.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        normalised = (images.to(torch.float32) / 255.0 - mean) / std
        if draw.centre_y is not None:
            normalised = cut_out(normalised, self.cutout, draw.centre_y, draw.centre_x)
        return normalised

    def __call__(self, images_uint8: Tensor, generator: torch.Generator | None) -> Tensor:
        """(B, C, H, W) uint8 on any device -> float32 normalised (B, C, H, W) on the same device."""
        return self.apply(images_uint8, self.sample(images_uint8.shape, generator, images_uint8.device))

    def __repr__(self) -> str:
        return (f"Augment(mean={self.mean}, std={self.std}, crop_padding={self.crop_padding}, flip={self.flip}, "
                f"cutout={self.cutout})")


# ---------------------------------------------------------------------------------------------------------------
# Seeds and epoch orders
# ---------------------------------------------------------------------------------------------------------------
def stream_seed(seed: int, stream: str, epoch: int) -> int:
    """A seed for one named random stream in one epoch: a stable hash (the same in every process), < 2**63."""
    digest = hashlib.sha256(f"{int(seed)}\x1f{stream}\x1f{int(epoch)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _batch_seed(seed: int, stream: str, epoch: int, batch: int) -> int:
    """Each batch its own generator, so starting at batch k needs no replay of batches 0..k-1."""
    return stream_seed(seed, f"{stream}/batch{batch}", epoch)


def _epoch_order(num_examples: int, seed: int, stream: str, epoch: int, shuffle: bool) -> Tensor:
    """(num_examples,) int64 positions in the order one epoch visits them."""
    if not shuffle:
        return torch.arange(num_examples)
    generator = torch.Generator().manual_seed(stream_seed(seed, stream, epoch))
    return torch.randperm(num_examples, generator=generator)


def _num_batches(num_examples: int, batch_size: int, drop_last: bool) -> int:
    return num_examples // batch_size if drop_last else math.ceil(num_examples / batch_size)


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise DartsError(f"batch size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def _check_indices(indices: Tensor | None, num_examples: int) -> Tensor:
    """(M,) int64 positions into a split of ``num_examples``; all of them when ``indices`` is None."""
    if indices is None:
        return torch.arange(num_examples)
    indices = torch.as_tensor(indices, dtype=torch.int64).flatten()
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= num_examples):
        raise ValueError(f"indices fall outside the dataset's {num_examples} examples")
    return indices


def _check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    rank, world_size = (int(v) for v in shard)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"shard {shard} is not (rank, world_size) with 0 <= rank < world_size")
    return rank, world_size


def shard_slice(length: int, shard: tuple[int, int]) -> slice:
    """This rank's contiguous part of a global batch of ``length``: equal parts when ``length``
    divides evenly (training batches), the last ranks one shorter otherwise (evaluation tails)."""
    rank, world_size = shard
    return slice(rank * length // world_size, (rank + 1) * length // world_size)


def _rank_suffix(shard: tuple[int, int]) -> str:
    return f"/rank{shard[0]}" if shard[1] > 1 else ""


def _check_start(start: int, num_batches: int) -> None:
    if not 0 <= start <= num_batches:
        raise ValueError(f"start batch {start} is outside 0..{num_batches}")


# ---------------------------------------------------------------------------------------------------------------
# Mini-batch sources
# ---------------------------------------------------------------------------------------------------------------
class DeviceBatches:
    """Mini-batches from a device-resident uint8 dataset, no DataLoader.

    The selected images (N, C, H, W) uint8 and labels (N,) int64 move to ``device`` once; each batch is
    gathered there and augmented by ``augment`` with a generator derived from (seed, stream, epoch, batch).
    ``batch_size`` is the global batch; with ``shard=(rank, world_size)`` a rank yields its contiguous part
    of every global batch, augmented with the global batch's random draws, so N ranks together see exactly
    the batches one process sees.
    """

    def __init__(self, data: ImageTensors, indices: Tensor | None, batch_size: int, augment: Augment, seed: int,
                 stream: str, device, shuffle: bool = True, drop_last: bool = True,
                 shard: tuple[int, int] = (0, 1)):
        self.device = torch.device(device)
        self.batch_size = _check_batch_size(batch_size)
        if indices is None:
            # No copy when the tensors already live on the device (the search's two alpha-half views share them).
            images, labels = data.images, data.labels
        else:
            indices = _check_indices(indices, len(data))
            images, labels = data.images[indices], data.labels[indices]
        self.images = images.to(self.device)    # (N, C, H, W) uint8
        self.labels = labels.to(self.device)    # (N,) int64
        self.augment = augment
        self.seed = int(seed)
        self.stream = stream
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.shard = _check_shard(shard)

    @property
    def num_examples(self) -> int:
        return self.labels.shape[0]

    def __len__(self) -> int:
        return _num_batches(self.num_examples, self.batch_size, self.drop_last)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches (x float32 (B, C, H, W) normalised, y int64 (B,)) of ``epoch`` from batch ``start`` on."""
        _check_start(start, len(self))
        return self._batches(epoch, start)

    def _batches(self, epoch: int, start: int) -> Iterator[tuple[Tensor, Tensor]]:
        order = _epoch_order(self.num_examples, self.seed, self.stream, epoch, self.shuffle).to(self.device)
        for batch in range(start, len(self)):
            positions = order[batch * self.batch_size:(batch + 1) * self.batch_size]
            generator = torch.Generator().manual_seed(_batch_seed(self.seed, self.stream, epoch, batch))
            draw = self.augment.sample((len(positions), *self.images.shape[1:]), generator, self.device)
            part = shard_slice(len(positions), self.shard)
            if self.shard[1] > 1:
                if part.start == part.stop:   # an evaluation tail shorter than the number of ranks
                    continue
                positions = positions[part]
                draw = AugmentDraw(**{name: None if value is None else value[part]
                                      for name, value in vars(draw).items()})
            yield self.augment.apply(self.images[positions], draw), self.labels[positions]

    def __repr__(self) -> str:
        return (f"DeviceBatches({self.num_examples} examples, batch {self.batch_size}, {len(self)} batches, "
                f"stream {self.stream!r}, {self.augment})")


class EpochBatchSampler(Sampler):
    """Lists of dataset indices for one epoch at a time; the epoch and start batch are set before each pass.

    The order is :func:`_epoch_order`'s, the same function as DeviceBatches', so a (seed, stream, epoch)
    visits the same examples in the same order whichever source serves them.
    """

    def __init__(self, indices: Tensor, batch_size: int, seed: int, stream: str, shuffle: bool, drop_last: bool,
                 shard: tuple[int, int] = (0, 1)):
        self.indices = indices
        self.shard = _check_shard(shard)
        self.batch_size = batch_size
        self.seed = seed
        self.stream = stream
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.current_epoch = 0
        self.current_start = 0

    def __len__(self) -> int:
        return _num_batches(len(self.indices), self.batch_size, self.drop_last)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.current_epoch, self.current_start = epoch, start

    def batches(self, epoch: int, start: int = 0) -> list[list[int]]:
        order = self.indices[_epoch_order(len(self.indices), self.seed, self.stream, epoch, self.shuffle)]
        batches = [order[batch * self.batch_size:(batch + 1) * self.batch_size] for batch in range(start, len(self))]
        shards = [chunk[shard_slice(len(chunk), self.shard)].tolist() for chunk in batches]
        return [indices for indices in shards if indices]   # an evaluation tail may leave a rank nothing

    def __iter__(self) -> Iterator[list[int]]:
        # Eager: a DataLoader with persistent workers asks for its sampler's iterator when the pass is
        # reset, and the epoch it must see is the one set at that moment.
        return iter(self.batches(self.current_epoch, self.current_start))


class LoaderBatches:
    """Mini-batches from a torch Dataset through a DataLoader, with DeviceBatches' interface.

    The order of an epoch is a pure function of (seed, stream, epoch); the randomness of the Dataset's
    own transforms comes from the DataLoader's worker seeds (or torch's global RNG without workers).
    One pass at a time: with persistent workers a new ``epoch()`` call ends the previous pass.
    """

    def __init__(self, dataset: Dataset, indices: Tensor | None, batch_size: int, seed: int, stream: str, device,
                 shuffle: bool = True, drop_last: bool = True, num_workers: int = 0,
                 shard: tuple[int, int] = (0, 1)):
        self.dataset = dataset
        self.device = torch.device(device)
        self.batch_size = _check_batch_size(batch_size)
        self.indices = _check_indices(indices, len(dataset))
        self.seed = int(seed)
        self.stream = stream
        self.sampler = EpochBatchSampler(self.indices, self.batch_size, self.seed, stream, shuffle, drop_last, shard)
        num_workers = int(num_workers)
        self.loader = DataLoader(
            dataset, batch_sampler=self.sampler, num_workers=num_workers,
            pin_memory=self.device.type == "cuda", persistent_workers=num_workers > 0,
            # Seeds the workers' RNGs, so the transforms' randomness does not depend on the global RNG.
            # Each rank its own worker seeds: the same seeds would give every shard the same crops.
            generator=torch.Generator().manual_seed(
                stream_seed(self.seed, f"{stream}/workers{_rank_suffix(shard)}", 0)))

    @property
    def num_examples(self) -> int:
        return len(self.indices)

    def __len__(self) -> int:
        return len(self.sampler)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches (x float32 (B, C, H, W), y int64 (B,)) of ``epoch`` from batch ``start`` on, on the device."""
        _check_start(start, len(self))
        self.sampler.set_epoch(epoch, start)
        # iter() now, not on the first next(): the sampler state above belongs to this call.
        return self._moved(iter(self.loader))

    def _moved(self, batches: Iterator) -> Iterator[tuple[Tensor, Tensor]]:
        for images, labels in batches:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def __repr__(self) -> str:
        return (f"LoaderBatches({self.num_examples} examples, batch {self.batch_size}, {len(self)} batches, "
                f"stream {self.stream!r}, {self.loader.num_workers} workers)")


class EndlessStream:
    """An endless iterator over a DeviceBatches/LoaderBatches walking its epochs 0, 1, 2, ... in turn.

    ``cycle`` counts the passes (the epoch given to ``batches.epoch``), ``position`` the batches already
    taken from the current pass; together they are the whole state, so a resumed stream continues exactly.
    """

    def __init__(self, batches: DeviceBatches | LoaderBatches):
        self.batches = batches
        self.cycle = 0
        self.position = 0
        self._current: Iterator[tuple[Tensor, Tensor]] | None = None

    def __iter__(self) -> EndlessStream:
        return self

    def __next__(self) -> tuple[Tensor, Tensor]:
        if len(self.batches) == 0:
            raise DartsError(f"the stream {getattr(self.batches, 'stream', '?')!r} has no full batch of "
                             f"{self.batches.batch_size} from {self.batches.num_examples} examples; lower the "
                             f"batch size")
        if self._current is None:
            self._current = self.batches.epoch(self.cycle, start=self.position)
        batch = next(self._current)
        self.position += 1
        if self.position == len(self.batches):
            # Roll over now rather than at the next call: the saved state never points past a pass's end.
            self.cycle, self.position, self._current = self.cycle + 1, 0, None
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"cycle": self.cycle, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        try:
            cycle, position = int(state["cycle"]), int(state["position"])
        except (KeyError, TypeError, ValueError) as err:
            raise DartsError(f"stream state {state!r} lacks integer 'cycle' and 'position'") from err
        if cycle < 0 or not 0 <= position < max(len(self.batches), 1):
            raise DartsError(f"stream state {state!r} does not fit a stream of {len(self.batches)} batches a pass; "
                             f"was it saved with another dataset or batch size?")
        self.cycle, self.position, self._current = cycle, position, None


# ---------------------------------------------------------------------------------------------------------------
# Search and training data
# ---------------------------------------------------------------------------------------------------------------
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
    augment = _option(cfg, "augment", {})
    return Augment(info.mean, info.std, crop_padding=int(_option(augment, "crop_padding", 0)),
                   flip=bool(_option(augment, "flip", False)), cutout=cutout)


def build_search_data(cfg, batch_size: int, portion: float, seed: int, device,
                      eval_batch_size: int | None = None, shard: tuple[int, int] = (0, 1),
                      cutout: int = 0) -> SearchData:
    """The search's batches from the training split only (the test split is never loaded).
    ``batch_size`` is the global batch; ``shard=(rank, world_size)`` gives this rank's part of each.
    ``cutout`` > 0 adds cutout to the weight half's augmentation (random sampling trains its candidates
    there as final training does); a folder dataset's halves share one transform, so its alpha stream
    gets cutout too."""
    eval_batch_size = eval_batch_size or batch_size
    num_workers = int(_option(cfg, "num_workers", 2))
    train, info = _load(cfg, "train", training_transforms=True, cutout=cutout)
    weight_indices, alpha_indices = search_split(len(train), portion, seed)
    if isinstance(train, ImageTensors):
        augment = _train_augment(cfg, info)
        weight_batches = DeviceBatches(train, weight_indices, batch_size, _train_augment(cfg, info, cutout), seed,
                                       "search/weights", device, shard=shard)
        # One device copy of the alpha half, shared by the stream and the evaluation pass.
        device = torch.device(device)
        alpha_half = ImageTensors(train.images[alpha_indices].to(device), train.labels[alpha_indices].to(device))
        alpha_batches = DeviceBatches(alpha_half, None, batch_size, augment, seed, "search/alphas", device,
                                      shard=shard)
        alpha_eval_batches = DeviceBatches(alpha_half, None, eval_batch_size, Augment(info.mean, info.std), seed,
                                           "search/alpha_eval", device, shuffle=False, drop_last=False, shard=shard)
    else:
        eval_view = _with_transform(train, _folder_transforms(cfg, info.name, False, 0, info.mean, info.std))
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
    """Final training's data: the whole training split to learn from, the test split to report."""

    info: DatasetInfo
    train_batches: DeviceBatches | LoaderBatches   # training augmentation (+ cutout), shuffled, drop_last
    test_batches: DeviceBatches | LoaderBatches    # no augmentation, in order, every example


def build_train_data(cfg, batch_size: int, seed: int, device, cutout: int = 0,
                     eval_batch_size: int | None = None, shard: tuple[int, int] = (0, 1)) -> TrainData:
    """Batches of the full training split (augmented, with cutout when > 0) and of the test split;
    ``batch_size`` is the global batch and ``shard=(rank, world_size)`` this rank's part of each."""
    eval_batch_size = eval_batch_size or batch_size
    num_workers = int(_option(cfg, "num_workers", 2))
    train, info = _load(cfg, "train", training_transforms=True, cutout=cutout)
    test, _ = _load(cfg, "test", training_transforms=False)
    if isinstance(train, ImageTensors):
        train_batches = DeviceBatches(train, None, batch_size, _train_augment(cfg, info, cutout), seed,
                                      "train/train", device, shard=shard)
        test_batches = DeviceBatches(test, None, eval_batch_size, Augment(info.mean, info.std), seed,
                                     "train/test", device, shuffle=False, drop_last=False, shard=shard)
    else:
        train_batches = LoaderBatches(train, None, batch_size, seed, "train/train", device, num_workers=num_workers,
                                      shard=shard)
        test_batches = LoaderBatches(test, None, eval_batch_size, seed, "train/test", device, shuffle=False,
                                     drop_last=False, num_workers=num_workers, shard=shard)
    return TrainData(info, train_batches, test_batches)
