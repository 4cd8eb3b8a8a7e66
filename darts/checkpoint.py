"""Atomic checkpoints, RNG capture and readable failures."""
from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from darts.errors import DartsError

CHECKPOINT_NAME = "checkpoint.pt"


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` with torch.save to a temp file beside ``path``, then rename it over ``path``.

    A crash mid-write leaves the previous checkpoint intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_atomic`, or raise a readable DartsError."""
    path = Path(path)
    if not path.is_file():
        raise DartsError(f"no checkpoint at {path}: nothing to resume (run without resume=true to start afresh)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise DartsError(f"checkpoint {path} is corrupt or truncated ({type(err).__name__}); "
                         f"it was left untouched") from None
    if not isinstance(state, dict) or "epoch" not in state:
        raise DartsError(f"{path} is not a checkpoint of this codebase (no 'epoch' entry)")
    return state


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def load_state_dicts(objects: dict[str, Any], states: dict[str, Any], what: str) -> None:
    """``objects[k].load_state_dict(states[k])`` for every k, with a readable error on mismatch."""
    missing = set(objects) - set(states)
    if missing:
        raise DartsError(f"{what} lacks state for: {', '.join(sorted(missing))}")
    for key, obj in objects.items():
        try:
            obj.load_state_dict(states[key])
        except (RuntimeError, KeyError, ValueError) as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DartsError(f"{what} does not match this run's {key}: {first_line}") from None
