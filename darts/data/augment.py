"""Augmentation: batched on the device for tensor datasets (:class:`Augment`), per sample inside a
Dataset's transforms for folder datasets (:class:`SampleCutout`).

Tensor datasets are augmented a whole uint8 batch at a time with tensor ops, so the GPU, not a
DataLoader's workers, does the work; the random numbers of a batch (:class:`AugmentDraw`) are drawn on
the CPU from a given generator, so a batch comes out the same on the CPU and the GPU.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from darts.data.options import float_tuple
from darts.errors import DartsError


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
        self.mean = float_tuple(mean, "mean")
        self.std = float_tuple(std, "std")
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


class SampleCutout:
    """Cutout for one normalised (C, H, W) tensor inside a Dataset's transforms (torch's global RNG)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Tensor) -> Tensor:
        height, width = image.shape[-2:]
        centre_y = torch.randint(0, height, (1,))
        centre_x = torch.randint(0, width, (1,))
        return cut_out(image.unsqueeze(0), self.size, centre_y, centre_x).squeeze(0)
