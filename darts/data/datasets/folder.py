"""What the folder datasets (``imagefolder``, ``imagenet``) share: finding a split's directory, the
common tail of their transforms, reading class folders into a Dataset (:class:`FolderImages`), and
keeping a fixed fraction of every class of the training split (``dataset.subset``)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from darts.data.augment import SampleCutout
from darts.data.datasets.base import View
from darts.data.options import option
from darts.errors import DartsError

# ImageNet's channel statistics: the imagenet dataset's own, and the default of other folder datasets.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def split_directory(root: Path, name: str, split: str, test_dirs: tuple[str, ...]) -> Path:
    """``root/train`` for the training split, else the first of ``root/<test_dirs>`` that exists."""
    layout = f"{test_dirs[0]}/" + "".join(f" (or {other}/)" for other in test_dirs[1:])
    if not root.is_dir():
        raise DartsError(f"dataset {name}: root {str(root)!r} is not a directory; set dataset.root=<directory "
                         f"holding train/ and {layout}>")
    candidates = ["train"] if split == "train" else list(test_dirs)
    for candidate in candidates:
        if (root / candidate).is_dir():
            return root / candidate
    raise DartsError(f"dataset {name}: no {' or '.join(candidates)} directory under {str(root)!r}; expected "
                     f"{str(root)}/{candidates[0]}/<class>/<image files>")


def compose(steps: list, view: View, mean: tuple[float, ...], std: tuple[float, ...]):
    """``steps`` (PIL -> PIL) followed by ToTensor, Normalize and, when ``view`` asks, cutout."""
    import torchvision.transforms as T

    steps = [*steps, T.ToTensor(), T.Normalize(mean, std)]
    if view.augment and view.cutout > 0:
        steps.append(SampleCutout(view.cutout))   # after Normalize, as the published Cutout
    return T.Compose(steps)


def read_image_folder(name: str, directory: Path, view: View, transforms_for: Callable[[View], Callable]):
    """``directory/<class>/<image files>`` as a FolderImages Dataset with ``transforms_for(view)``.

    ImageFolder converts every image to RGB: a folder dataset has 3 input channels.
    """
    from darts.data.datasets.folder_images import FolderImages

    transform = transforms_for(view)
    try:
        return FolderImages(str(directory), transform, transforms_for)
    except (FileNotFoundError, OSError) as err:
        raise DartsError(f"dataset {name}: cannot read {str(directory)!r} as class folders of images: {err}") from err


def class_subset_indices(targets: list[int], fraction: float, seed: int) -> list[int]:
    """Positions (ascending) of ``round(fraction * n_c)`` (at least 1) examples of every class c of
    ``targets``, drawn without replacement by a generator seeded with ``seed``: the same files every run."""
    by_class: dict[int, list[int]] = {}
    for position, target in enumerate(targets):
        by_class.setdefault(int(target), []).append(position)
    generator = torch.Generator().manual_seed(int(seed))
    kept = []
    for target in sorted(by_class):
        members = by_class[target]
        count = max(1, round(fraction * len(members)))
        kept.extend(members[i] for i in torch.randperm(len(members), generator=generator)[:count].tolist())
    return sorted(kept)


def apply_subset(cfg, split: str, dataset, name: str):
    """The training split of a folder dataset cut to ``dataset.subset.fraction`` of every class
    (``dataset.subset.seed`` picks which files); the test split and ``subset: null`` pass unchanged.

    PC-DARTS searches ImageNet on such a sample (yuhuixu1993/PC-DARTS train_search_imagenet.py: "we random
    sample 10% and 2.5% from training set (each class) as train and val").
    """
    subset = option(cfg, "subset")
    if subset is None or split != "train":
        return dataset
    fraction = option(subset, "fraction")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise DartsError(f"dataset.subset.fraction for {name} must be a number in (0, 1], got {fraction!r}")
    seed = option(subset, "seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DartsError(f"dataset.subset.seed for {name} must be an integer, got {seed!r}")
    kept = class_subset_indices(dataset.targets, float(fraction), seed)
    dataset.samples = [dataset.samples[i] for i in kept]
    dataset.imgs = dataset.samples
    dataset.targets = [dataset.targets[i] for i in kept]
    return dataset
