"""Atomic checkpoints, RNG capture and readable failures."""
from __future__ import annotations

import contextlib
import os
import pickle
import random
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from darts.errors import DartsError

CHECKPOINT_NAME = "checkpoint.pt"


def save_atomic(obj: Any, path: str | os.PathLike, what: str | None = None,
                umask_permissions: bool = False) -> None:
    """Write ``obj`` with torch.save to a temp file beside ``path``, then rename it over ``path``.

    A crash mid-write leaves the previous file intact and removes the temp file.

    ``what`` names the file for the user ("model export"): an OSError (an unwritable directory, a
    full disk) then becomes a DartsError naming it and ``path``; without it the OSError propagates.
    ``umask_permissions``: the file gets a plain open's permissions (the umask's), for files other
    people read; otherwise it stays owner-only (0600), as tempfile.mkstemp creates it.
    """
    path = Path(path)
    temporary: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if umask_permissions:
            # An exclusive open of a unique name, not mkstemp, so the kernel applies the umask.
            # ``temporary`` is set once the file is ours: a failed open must not delete another's.
            candidate = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
            handle = open(candidate, "xb")
            temporary = candidate
        else:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            temporary = Path(name)
            handle = os.fdopen(fd, "wb")
        with handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as err:
        if temporary is not None:
            with contextlib.suppress(OSError):   # the original error is the one to report
                temporary.unlink(missing_ok=True)
        if what is not None and isinstance(err, OSError):
            raise DartsError(f"cannot write {what} {path}: {err.strerror or err}") from None
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
