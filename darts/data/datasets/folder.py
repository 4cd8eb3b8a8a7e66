"""What the folder datasets (``imagefolder``, ``imagenet``) share: finding a split's directory, the
common tail of their transforms, and reading class folders into a Dataset (:class:`FolderImages`)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from darts.data.augment import SampleCutout
from darts.data.datasets.base import View
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
