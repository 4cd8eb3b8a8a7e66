"""How a run executes: precision, memory layout, compilation, which gradients to compute.

The defaults are the fast path; ``fast.enabled=false`` gives the eager float32
baseline (full gradients, NCHW, no autocast, no compilation) for comparison.
"""
from __future__ import annotations

import contextlib
import ctypes
import platform
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from darts.distributed import Distributed
from darts.errors import DartsError
from darts.fastpath import FastPathOptions, apply_fast_path
from darts.kernels import DEPTHWISE_GRADS

AMP_MODES = ("auto", "bf16", "fp16", "off")
COMPILE_MODES = ("auto", "on", "off")
CPU_MALLOC_MODES = ("auto", "retain", "system")
# glibc's mallopt parameters, and the largest mmap threshold it accepts on 64-bit systems.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
GLIBC_MAX_MMAP_THRESHOLD = 32 * 2**20


@dataclass
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None = None   # None: float32
    channels_last: bool = True
    compile: bool = False
    compile_mode: str = "default"          # "reduce-overhead" adds CUDA graphs for static shapes
    selective_grads: bool = True           # each backward asks only for the gradients its step uses
    checkpoint_cells: bool = False
    depthwise_conv_grads: bool = False     # depthwise-conv gradients by forward convolutions (darts.kernels)
    fused_mixed_ops: bool = True           # eager fusion: mixed ops and a discrete cell's edges share activations
    retain_cpu_memory: bool = False        # glibc keeps freed tensor memory mapped (see retain_freed_memory)
    dist: Distributed = field(default_factory=Distributed)   # the ranks that average gradients

    def __post_init__(self):
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        if self.retain_cpu_memory:
            self.retain_cpu_memory = retain_freed_memory()

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @property
    def fast_path(self) -> FastPathOptions:
        # One switch for both eager fusions (a compiled model leaves them to the compiler).
        return FastPathOptions(fused_mixed_ops=self.fused_mixed_ops, depthwise_conv_grads=self.depthwise_conv_grads,
                               checkpoint_cells=self.checkpoint_cells, shared_cell_edges=self.fused_mixed_ops)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to the device and layout, hand it the fast-path options
        (:func:`darts.fastpath.apply_fast_path`); return the callable to run it with."""
        model.to(self.device, memory_format=self.memory_format)
        apply_fast_path(model, self.fast_path)
        if self.compile:
            return torch.compile(model, mode=self.compile_mode)
        return model

    def describe(self) -> dict:
        return {"device": str(self.device), "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off",
                "channels_last": self.channels_last, "compile": self.compile, "selective_grads": self.selective_grads,
                "checkpoint_cells": self.checkpoint_cells, "depthwise_conv_grads": self.depthwise_conv_grads,
                "fused_mixed_ops": self.fused_mixed_ops, "retain_cpu_memory": self.retain_cpu_memory,
                "world_size": self.dist.world_size}


def retain_freed_memory() -> bool:
    """Have glibc serve tensors of up to 32 MiB from its heap and never hand freed memory back.

    By default glibc maps each large allocation afresh and unmaps it when freed. A search step
    allocates and frees gigabytes of activations, so every step faulted (and zeroed) their pages
    again, and every large tensor started at the same offset within its page, which makes the
    streams of an elementwise kernel collide in the cache. Kept on the heap, freed activations
    are reused by the next pass; the peak footprint is unchanged (the CPU search step, first
    order at batch 32: 1.90 s with glibc's default, 1.83 s with this). Process-wide and idempotent. Returns False where the C library is not glibc.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, GLIBC_MAX_MMAP_THRESHOLD)
                and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def resolve_cpu_malloc(mode: str, device: torch.device) -> bool:
    """auto and retain: keep freed memory (:func:`retain_freed_memory`) when running on the CPU."""
    if mode not in CPU_MALLOC_MODES:
        raise DartsError(f"unknown fast.cpu_malloc {mode!r}; valid choices: {', '.join(CPU_MALLOC_MODES)}")
    return mode != "system" and device.type == "cpu"


def upcast(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits to float32 for the loss; float32 and float64 pass unchanged."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 on GPUs that support it, fp16 (with a gradient scaler) on older GPUs, off on the CPU."""
    if mode not in AMP_MODES:
        raise DartsError(f"unknown fast.amp {mode!r}; valid choices: {', '.join(AMP_MODES)}")
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


def resolve_depthwise_grads(mode: str, device: torch.device) -> bool:
    """auto: on the CPU, where oneDNN's depthwise backward kernels are the slow part of a search step."""
    if mode not in DEPTHWISE_GRADS:
        raise DartsError(f"unknown fast.depthwise_grads {mode!r}; valid choices: {', '.join(DEPTHWISE_GRADS)}")
    return mode == "conv" or (mode == "auto" and device.type == "cpu")


def build_runtime(fast_cfg, device: torch.device, deterministic: bool,
                  dist: Distributed | None = None) -> Runtime:
    dist = dist or Distributed()
    if not fast_cfg.enabled:
        return Runtime(device, amp_dtype=None, channels_last=False, compile=False, selective_grads=False,
                       checkpoint_cells=bool(fast_cfg.checkpoint_cells), fused_mixed_ops=False, dist=dist)
    compile_mode = fast_cfg.compile
    # YAML reads on/off/true/false as booleans.
    compile_mode = {True: "on", False: "off"}.get(compile_mode, str(compile_mode))
    if compile_mode not in COMPILE_MODES:
        raise DartsError(f"unknown fast.compile {compile_mode!r}; valid choices: {', '.join(COMPILE_MODES)}")
    # torch.compile pays off on GPUs; on a small CPU its minutes of compilation do not come back.
    use_compile = compile_mode == "on" or (compile_mode == "auto" and device.type == "cuda" and not deterministic)
    return Runtime(device, amp_dtype=resolve_amp(str(fast_cfg.amp), device), channels_last=bool(fast_cfg.channels_last),
                   compile=use_compile, compile_mode=str(fast_cfg.compile_mode),
                   selective_grads=True, checkpoint_cells=bool(fast_cfg.checkpoint_cells),
                   depthwise_conv_grads=resolve_depthwise_grads(str(fast_cfg.get("depthwise_grads", "auto")), device),
                   fused_mixed_ops=not use_compile,  # a compiled supernet leaves fusion to the compiler
                   retain_cpu_memory=resolve_cpu_malloc(str(fast_cfg.get("cpu_malloc", "auto")), device),
                   dist=dist)
