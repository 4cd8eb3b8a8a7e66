"""How a run executes: precision, memory layout, compilation, which gradients to compute.

The defaults are the fast path; ``fast.enabled=false`` gives the eager float32
baseline (full gradients, NCHW, no autocast, no compilation) for comparison.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from darts.distributed import Distributed
from darts.errors import DartsError
from darts.kernels import DEPTHWISE_GRADS, use_conv_grads

AMP_MODES = ("auto", "bf16", "fp16", "off")
COMPILE_MODES = ("auto", "on", "off")


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
    fused_mixed_ops: bool = True           # one shared ReLU and an in-place weighted sum per mixed op (eager)
    dist: Distributed = field(default_factory=Distributed)   # the ranks that average gradients

    def __post_init__(self):
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to the device and layout; return the callable to run it with."""
        model.to(self.device, memory_format=self.memory_format)
        if hasattr(model, "checkpoint_cells"):
            model.checkpoint_cells = self.checkpoint_cells
        use_conv_grads(model, self.depthwise_conv_grads)
        for module in model.modules():
            if hasattr(module, "fused"):
                module.fused = self.fused_mixed_ops
        if self.compile:
            return torch.compile(model, mode=self.compile_mode)
        return model

    def describe(self) -> dict:
        return {"device": str(self.device), "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off",
                "channels_last": self.channels_last, "compile": self.compile, "selective_grads": self.selective_grads,
                "checkpoint_cells": self.checkpoint_cells, "depthwise_conv_grads": self.depthwise_conv_grads,
                "fused_mixed_ops": self.fused_mixed_ops,
                "world_size": self.dist.world_size}


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
                   dist=dist)
