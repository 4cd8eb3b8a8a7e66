"""Run logging: TensorBoard, JSON files and a console line with ETA."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically so a killed run never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_to_jsonable) + "\n")
    tmp.replace(path)


def _to_jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def format_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:d}:{secs:02d}"


class MetricAccumulator:
    """Sums device tensors across steps; reading them is the only host sync."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for key, value in metrics.items():
            value = value.detach()
            self.sums[key] = value.clone() if key not in self.sums else self.sums[key] + value

    def read(self, combine=None) -> dict[str, float]:
        """Means: ``{prefix}loss`` and ``{prefix}acc`` for every ``{prefix}count`` present.
        ``combine`` maps the sums first (``Distributed.sum_metrics``: the sums over every rank)."""
        if not self.sums:
            return {}
        sums = combine(self.sums) if combine else self.sums
        keys = list(sums)
        values = torch.stack([sums[k].float() for k in keys]).cpu().tolist()
        totals = dict(zip(keys, values))
        means = {}
        for key in keys:
            if key.endswith("count") and totals[key] > 0:
                prefix = key[: -len("count")]
                means[f"{prefix}loss"] = totals[f"{prefix}loss_sum"] / totals[key]
                means[f"{prefix}acc"] = 100.0 * totals[f"{prefix}correct"] / totals[key]
        return means


class RunLogger:
    """TensorBoard writer plus console output; a no-op writer on non-zero ranks."""

    def __init__(self, run_dir: Path, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir / "tb"))
        self.start = time.time()

    def scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(f"{prefix}{key}", value, step)

    def image(self, tag: str, image_hwc: np.ndarray, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, image_hwc, step, dataformats="HWC")

    def text(self, tag: str, text: str, step: int) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text, step)

    def console(self, line: str) -> None:
        if self.enabled:
            print(line, file=self.stream, flush=True)

    def progress(self, what: str, done: int, total: int, values: dict[str, float]) -> None:
        """One line: progress, metrics, elapsed time and ETA from the mean pace so far."""
        elapsed = time.time() - self.start
        eta = elapsed / max(done, 1) * (total - done)
        shown = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
        self.console(f"[{what} {done}/{total}] {shown}  elapsed {format_seconds(elapsed)}  eta {format_seconds(eta)}")

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
