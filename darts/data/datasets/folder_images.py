"""torchvision's ImageFolder, able to hand out its files under another view's transforms.

Kept apart from the loaders, which import it on first use: torchvision takes seconds to import, and
runs on the tensor datasets never need it.
"""
from __future__ import annotations

import copy
from typing import Callable

from torchvision.datasets import ImageFolder
from torchvision.datasets.vision import StandardTransform

from darts.data.datasets.base import View

Transform = Callable[[object], object]   # PIL image -> float32 (C, H, W) tensor


class FolderImages(ImageFolder):
    """``root/<class>/<image files>`` as (image, class index) pairs, transformed by ``transforms_for(view)``.

    ``transforms_for`` maps a :class:`View` to the dataset's transforms; kept so that :meth:`with_view`
    can build another view's.
    """

    def __init__(self, root: str, transform: Transform, transforms_for: Callable[[View], Transform]):
        super().__init__(root, transform=transform)
        self.transforms_for = transforms_for

    def with_view(self, view: View) -> FolderImages:
        """A shallow copy with ``view``'s transforms: it shares the file list, so the folders are not scanned again."""
        transform = self.transforms_for(view)
        other = copy.copy(self)
        other.transform = transform
        other.transforms = StandardTransform(transform, other.target_transform)
        return other
