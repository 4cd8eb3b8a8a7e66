"""Where and how a run executes: its device, process group, directory and whether it resumes."""
from __future__ import annotations

import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy
import torch
from omegaconf import OmegaConf

from darts.checkpoint import CHECKPOINT_NAME
from darts.distributed import Distributed, init_distributed
from darts.errors import DartsError

RESUME_CHOICES = ("true", "false", "auto")


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else CPU; 'cuda' on a machine without it is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DartsError(f"unknown device {name!r}; valid choices: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DartsError(f"device {name!r} requested but CUDA is not available here; use device=auto or device=cpu")
    return device


def in_layout(batches, layout: torch.memory_format):
    """Yield ``(inputs, targets)`` with the inputs in ``layout`` (a no-op copy when already there)."""
    for inputs, targets in batches:
        yield inputs.contiguous(memory_format=layout), targets


def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
                "numpy": numpy.__version__, "cuda": str(torch.version.cuda), "cudnn": str(torch.backends.cudnn.version())}
    for module in ("torchvision", "hydra", "omegaconf", "tensorboard"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = "missing"
    return versions


@dataclass
class RunContext:
    """Where and how a run executes: its process group, device, directory and whether it resumes."""

    dist: Distributed
    device: torch.device
    run_dir: Path
    checkpoint_path: Path
    resume: bool

    @property
    def writes(self) -> bool:
        """Only rank 0 writes the run directory."""
        return self.dist.is_main


def resume_requested(value) -> str:
    """``resume`` as one of true, false, auto (YAML hands booleans for the first two)."""
    text = {True: "true", False: "false"}.get(value, str(value).lower())
    if text not in RESUME_CHOICES:
        raise DartsError(f"unknown resume={value!r}; valid choices: {', '.join(RESUME_CHOICES)} "
                         "(auto: resume when the run directory holds a checkpoint, else start afresh)")
    return text


def remove_hydra_only_directory(directory: Path) -> None:
    """Delete a directory that holds nothing but what Hydra writes at start-up (``.hydra/`` and the
    job's log): the stray directory of a rank whose ``${now:}`` fell on another second than rank 0's."""
    if not directory.is_dir():
        return
    entries = list(directory.iterdir())
    if all(entry.name == ".hydra" or entry.suffix == ".log" for entry in entries):
        shutil.rmtree(directory, ignore_errors=True)


def start_run(cfg, run_dir: Path) -> RunContext:
    """Join the process group (when launched by torchrun), agree on rank 0's run directory, pick
    the device, and decide whether to resume. Writes nothing."""
    dist, device_name = init_distributed(cfg.get("distributed"), str(cfg.device))
    # Ranks may have resolved a different ${now:} into their directory; rank 0's is the run's.
    own_dir, run_dir = Path(run_dir), Path(dist.broadcast_object(str(run_dir)))
    if own_dir.resolve() != run_dir.resolve():
        remove_hydra_only_directory(own_dir)
    checkpoint_path = run_dir / CHECKPOINT_NAME
    mode = resume_requested(cfg.resume)
    resume = dist.broadcast_object(mode == "true" or (mode == "auto" and checkpoint_path.is_file()))
    refuse_to_overwrite(run_dir, checkpoint_path, resume)
    return RunContext(dist, resolve_device(device_name), run_dir, checkpoint_path, resume)


def scaled_learning_rates(node, factor: float, keys: tuple[str, ...] = ("lr", "lr_min")):
    """A copy of the config ``node`` with its learning rates ``keys`` multiplied by ``factor``
    (the DDP learning-rate scaling rule); ``node`` itself is left as it is."""
    if factor == 1.0:
        return node
    copy = OmegaConf.create(OmegaConf.to_container(node, resolve=True))
    for key in keys:
        if copy.get(key) is not None:
            copy[key] = float(copy[key]) * factor
    return copy


def refuse_to_overwrite(run_dir: Path, checkpoint: Path, resume: bool) -> None:
    if checkpoint.exists() and not resume:
        raise DartsError(f"{run_dir} already holds a checkpoint: pass resume=true (or auto) to continue it, "
                         f"or choose another directory with hydra.run.dir=...")
