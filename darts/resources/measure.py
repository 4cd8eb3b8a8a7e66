"""Measuring what a module costs: parameters, multiply-adds and latency, and the lookup table that
keeps op latencies measured once per (device, op, shape).

Every count here is measured, not derived from formulas: parameters by counting tensors, multiply-adds
with torch's FLOP counter (``FlopCounterMode``; a multiply-add is two FLOPs, and pools, BN and
element-wise ops count zero there, as papers count MACs), latency by timing eval-mode forwards.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from darts.errors import DartsError
from darts.machine import cpu_model

# Timing settings when a run configures none (final training's results.json).
DEFAULT_WARMUP = 3
DEFAULT_REPEATS = 20
DEFAULT_CACHE = "~/.cache/darts/latency.json"


def count_macs(model: nn.Module, input_shape: tuple[int, ...], device, forward=None) -> int:
    """Multiply-adds of one eval-mode forward of a batch of one (FLOPs / 2 by torch's FLOP counter).

    input_shape: (C, H, W) of one input; ``forward`` (default: ``model``) takes the (1, C, H, W) batch."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            (forward or model)(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency_ms(model: nn.Module, input_shape: tuple[int, ...], device, batch: int = 1,
                       warmup: int = DEFAULT_WARMUP, repeats: int = DEFAULT_REPEATS) -> float:
    """Median wall time, in milliseconds, of an eval-mode forward of ``batch`` inputs of ``input_shape``
    ((C, H, W)) on ``device``, after ``warmup`` untimed forwards. The median, not the mean: a timer
    interrupted by another process on the machine then moves one sample, not the figure."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    x = torch.randn(batch, *input_shape, device=device)
    samples = []
    try:
        with torch.no_grad():
            for index in range(warmup + repeats):
                synchronize(device)
                started = time.perf_counter()
                model(x)
                synchronize(device)
                if index >= warmup:
                    samples.append((time.perf_counter() - started) * 1e3)
    finally:
        model.train(was_training)
    return statistics.median(samples)


def device_key(device: torch.device) -> str:
    """What a latency depends on besides the op: the device (GPU name, or CPU model and threads) and torch."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{cpu_model()}, {torch.get_num_threads()} threads"
    return f"{device.type}: {name}, torch {torch.__version__}"


class LatencyTable:
    """Op latencies on one device, measured once per (device, op, shape) and kept in a JSON file.

    ``get(name, module, input_shape)`` returns the cached figure for this device, or measures
    ``module`` (:func:`measure_latency_ms`) and stores it. ``save()`` merges the new entries into the
    file as it is then (another run may have added some) and replaces it atomically.
    ``path`` None keeps the table in memory only.
    """

    def __init__(self, device, path: str | os.PathLike | None = DEFAULT_CACHE, batch: int = 1,
                 warmup: int = DEFAULT_WARMUP, repeats: int = DEFAULT_REPEATS):
        self.device = torch.device(device)
        self.path = None if path is None else Path(os.path.expanduser(str(path)))
        self.batch, self.warmup, self.repeats = batch, warmup, repeats
        self.prefix = f"{device_key(self.device)} | batch {batch}"
        self.entries = self._read()
        self.measured = 0   # entries measured by this table (not found in the cache)

    def _read(self) -> dict[str, float]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            raise DartsError(f"the latency cache {self.path} is not readable JSON: delete it (it is rebuilt by "
                             "measuring) or point resource.latency.cache elsewhere") from None
        if not isinstance(data, dict) or not all(isinstance(v, (int, float)) for v in data.values()):
            raise DartsError(f"the latency cache {self.path} is not a table of op latencies: delete it or point "
                             "resource.latency.cache elsewhere")
        return data

    def key(self, name: str, input_shape: tuple[int, ...], stride: int) -> str:
        return f"{self.prefix} | {name} | in {'x'.join(map(str, input_shape))} | stride {stride}"

    def get(self, name: str, module: nn.Module, input_shape: tuple[int, ...], stride: int) -> float:
        """Milliseconds of ``module`` (op ``name`` at ``stride``) on a (batch, *input_shape) input."""
        key = self.key(name, input_shape, stride)
        if key not in self.entries:
            self.entries[key] = measure_latency_ms(module.to(self.device), input_shape, self.device, self.batch,
                                                   self.warmup, self.repeats)
            self.measured += 1
        return self.entries[key]

    def save(self) -> None:
        if self.path is None or not self.measured:
            return
        merged = self._read() | self.entries
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(merged, indent=1, sort_keys=True))
        os.replace(partial, self.path)
