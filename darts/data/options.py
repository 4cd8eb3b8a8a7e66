"""Reading the ``dataset`` config node: a DictConfig, a plain dict or any object with attributes."""
from __future__ import annotations

import os
from pathlib import Path

from darts.errors import DartsError


def option(cfg, key: str, default=None):
    """``cfg[key]`` for a DictConfig, a dict or any object with attributes; ``default`` when absent or unset."""
    if hasattr(cfg, "get"):
        # DictConfig.get returns None for a mandatory '???' value instead of raising, as a missing key should.
        value = cfg.get(key, default)
    else:
        value = getattr(cfg, key, default)
    return default if value is None else value


def is_set(value) -> bool:
    """False for a missing path: None, empty, or OmegaConf's mandatory marker '???' read as a string."""
    return value is not None and str(value) not in ("", "???")


def required_root(cfg) -> Path:
    """``dataset.root`` as a path with ``~`` expanded; DartsError when it is not set."""
    root = option(cfg, "root")
    if not is_set(root):
        raise DartsError(f"dataset {option(cfg, 'name')!r} needs dataset.root (a directory); it is not set")
    return Path(os.path.expanduser(str(root)))


def positive_int(cfg, key: str, default: int, name: str) -> int:
    """``dataset.<key>`` of dataset ``name`` as an int >= 1 (bools refused), else DartsError."""
    value = option(cfg, key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DartsError(f"dataset.{key} for {name} must be a positive integer, got {value!r}")
    return value


def float_tuple(values, what: str) -> tuple[float, ...]:
    """``values`` (any iterable of numbers) as a tuple of floats; DartsError naming ``what`` otherwise."""
    try:
        return tuple(float(value) for value in values)
    except (TypeError, ValueError) as err:
        raise DartsError(f"{what} must be a list of numbers, got {values!r}") from err
