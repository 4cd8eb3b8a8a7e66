"""Pieces shared by the search and the final-training loops."""
from __future__ import annotations

import platform
import sys
from pathlib import Path

import torch
import torch.nn as nn

from darts.errors import DartsError
from darts.tracking import MetricAccumulator


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
    import numpy

    versions = {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
                "numpy": numpy.__version__, "cuda": str(torch.version.cuda), "cudnn": str(torch.backends.cudnn.version())}
    for module in ("torchvision", "hydra", "omegaconf", "tensorboard"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = "missing"
    return versions


@torch.no_grad()
def evaluate(model: nn.Module, batches, criterion=None, topk=(1,), epoch: int = 0,
             max_batches: int | None = None) -> dict[str, float]:
    """Loss and top-k accuracy (%) of ``model`` in eval mode over one pass of ``batches``
    (its first ``max_batches`` batches when given)."""
    criterion = criterion or nn.CrossEntropyLoss()
    was_training = model.training
    model.eval()
    totals = MetricAccumulator()
    for index, (inputs, targets) in enumerate(batches.epoch(epoch)):
        if max_batches is not None and index >= max_batches:
            break
        logits = model(inputs)
        logits = logits[0] if isinstance(logits, tuple) else logits
        count = torch.full((), float(targets.shape[0]), device=targets.device)
        step = {"loss_sum": criterion(logits, targets).float() * count, "count": count}
        # With fewer classes than k, top-k holds every class: clamp rather than fail.
        top = logits.topk(min(max(topk), logits.shape[1]), dim=1).indices
        hits = top == targets[:, None]
        for k in topk:
            step[f"top{k}_sum"] = hits[:, :k].any(dim=1).sum().float()
        totals.add(step)
    model.train(was_training)
    sums = {key: value.item() for key, value in totals.sums.items()}
    results = {"loss": sums["loss_sum"] / sums["count"]}
    for k in topk:
        results[f"top{k}"] = 100.0 * sums[f"top{k}_sum"] / sums["count"]
    return results


def entropy(weights: torch.Tensor) -> float:
    """Mean over edges of the entropy (nats) of each edge's op distribution, weights (edges, ops)."""
    return float(-(weights * weights.clamp_min(1e-12).log()).sum(-1).mean())


def refuse_to_overwrite(run_dir: Path, checkpoint: Path, resume: bool) -> None:
    if checkpoint.exists() and not resume:
        raise DartsError(f"{run_dir} already holds a checkpoint: pass resume=true to continue it, "
                         f"or choose another directory with hydra.run.dir=...")
