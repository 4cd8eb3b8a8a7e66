"""Shared pieces of the step benchmarks: options, the runtime, timing, the report."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from darts.runtime import Runtime, build_runtime  # noqa: E402


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--baseline", action="store_true", help="eager float32: full gradients, NCHW, no autocast")
    parser.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"))
    parser.add_argument("--compile", default="auto", choices=("auto", "on", "off"))
    parser.add_argument("--checkpoint-cells", action="store_true")
    parser.add_argument("--depthwise-grads", default="auto", choices=("auto", "conv", "native"))
    parser.add_argument("--cpu-malloc", default="auto", choices=("auto", "retain", "system"))
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-check", action="store_true", help="skip the fast-vs-baseline numerical check")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    return parser


def make_runtime(args, baseline: bool | None = None) -> Runtime:
    """The runtime a run with these options would get (``build_runtime``), or the eager baseline."""
    baseline = args.baseline if baseline is None else baseline
    fast = OmegaConf.create(dict(enabled=not baseline, channels_last=True, amp=args.amp, compile=args.compile,
                                 compile_mode="default", checkpoint_cells=args.checkpoint_cells,
                                 depthwise_grads=args.depthwise_grads, cpu_malloc=args.cpu_malloc))
    return build_runtime(fast, torch.device(args.device), deterministic=False)


def time_steps(step, device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per call of ``step`` (which returns a device tensor), one sync at the end."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        out = step()
    float(out)
    return (time.perf_counter() - start) / steps


def report(result: dict, columns: list[str], as_json: bool) -> None:
    widths = [max(len(c), 10) for c in columns]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    cells = []
    for c, w in zip(columns, widths):
        value = result[c]
        cells.append((f"{value:.1f}" if isinstance(value, float) else str(value)).rjust(w))
    print("  ".join(cells))
    for key, value in result.items():
        if key not in columns:
            print(f"  {key}: {value}")
    if as_json:
        print(json.dumps(result))
