"""Data-parallel runs launched by torchrun (or by SLURM through submitit): one process per device.

Every rank builds the same model from the same seed and walks the same global
batch order; each takes a contiguous shard of every global batch. After each
backward pass the gradients (weights and alphas alike) are averaged across
ranks in one all-reduce, so every rank applies the same update and the
parameters stay bit-identical: no rank can drift to another architecture.
Samplers that draw from torch's global RNG (GDAS, DrNAS, random search) stay
in lockstep too, because every rank seeds and consumes it identically.

Gradients are averaged by hand rather than through ``DistributedDataParallel``:
the search takes alpha-only and weight-only backward passes and second-order
Hessian-vector products, and DDP's reducer expects every parameter to get a
gradient in every backward.

BatchNorm: by default each rank normalises with its own shard's statistics
(what the original DARTS code did under ``nn.DataParallel``), and rank 0's
running statistics are copied to the others before evaluation and
checkpointing. ``distributed.sync_bn=true`` normalises with the statistics of
the whole global batch (:class:`GlobalBatchNorm2d`), which makes an N-rank run
compute what a single process computes on the same global batch.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from darts.errors import DartsError

BATCH_MODES = ("global", "per_rank")
LR_SCALING = ("none", "linear", "sqrt")


@dataclass
class Distributed:
    """The process group of a run; a single process is ``Distributed()`` (rank 0 of 1) and every
    collective below is then a no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    sync_bn: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files: checkpoints, genotypes, TensorBoard, results."""
        return self.rank == 0

    def average_gradients(self, params) -> None:
        """Replace each parameter's ``.grad`` by its mean over ranks, in one flat all-reduce.
        Parameters without a gradient on this step are skipped (the same ones on every rank)."""
        if not self.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat.div_(self.world_size)
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset:offset + grad.numel()].view(grad.shape))
            offset += grad.numel()

    def average_tensors(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Means over ranks of ``tensors`` (new tensors; the inputs are left as they are)."""
        if not self.enabled:
            return list(tensors)
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat.div_(self.world_size)
        return [chunk.view(t.shape) for chunk, t in zip(flat.split([t.numel() for t in tensors]), tensors)]

    def sum_metrics(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Metric sums added over ranks (one all-reduce), so every rank reads global means."""
        if not self.enabled or not sums:
            return sums
        keys = list(sums)
        stacked = torch.stack([sums[k].float() for k in keys])
        dist.all_reduce(stacked)
        return dict(zip(keys, stacked.unbind(0)))

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when ``flag`` is true on any rank (a stop request seen by one rank)."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank (a run directory, a resume decision)."""
        if not self.enabled:
            return obj
        holder = [obj]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
        if not self.enabled:
            return
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)

    def broadcast_parameters(self, module: nn.Module) -> None:
        """Start every rank from rank 0's parameters and buffers."""
        self.broadcast_tensors(list(module.parameters()) + list(module.buffers()))

    def broadcast_tensors(self, tensors: list[torch.Tensor]) -> None:
        """Overwrite ``tensors`` on every rank with rank 0's, in place."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in tensors:
                dist.broadcast(tensor.data, src=0)

    def max_divergence(self, tensors: list[torch.Tensor]) -> float:
        """The largest absolute difference, over ranks and entries, between this rank's ``tensors``
        and rank 0's: 0.0 when the ranks agree bit for bit."""
        if not self.enabled:
            return 0.0
        mine = torch.cat([t.detach().reshape(-1).float() for t in tensors])
        reference = mine.clone()
        dist.broadcast(reference, src=0)
        gap = (mine - reference).abs().max().reshape(1)
        dist.all_reduce(gap, op=dist.ReduceOp.MAX)
        return float(gap.item())

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Global-batch BatchNorm when asked for. Called before the optimisers hold the parameters
        (the swap makes new ones) and before the move to the device; ``broadcast_parameters`` follows
        the move, since NCCL broadcasts only device tensors."""
        if self.enabled and self.sync_bn:
            model = convert_to_global_batchnorm(model)
        return model



def shutdown_distributed() -> None:
    """Leave the process group, if this process joined one (a no-op otherwise)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def _export_slurm_environment() -> None:
    """Inside a multi-task SLURM job started by submitit (hydra/launcher=slurm with tasks_per_node > 1),
    set the variables torchrun would have set, from submitit's view of the job."""
    if "RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    try:
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError:
        return
    try:
        TorchDistributedEnvironment().export()
    except RuntimeError:  # not inside a submitit job
        return


def init_distributed(cfg, device_name: str) -> tuple[Distributed, str]:
    """Join the process group that torchrun describes in the environment (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT), or return a single-process ``Distributed``.

    Returns the group and the device name this rank should use (``cuda:LOCAL_RANK`` on GPUs).
    """
    _export_slurm_environment()
    world_size = _env_int("WORLD_SIZE") or 1
    sync_bn = bool(cfg.get("sync_bn", False)) if cfg is not None else False
    if world_size <= 1:
        return Distributed(sync_bn=sync_bn), device_name
    rank, local_rank = _env_int("RANK") or 0, _env_int("LOCAL_RANK") or 0
    backend = str(cfg.get("backend", "auto")) if cfg is not None else "auto"
    wants_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if backend == "auto":
        backend = "nccl" if wants_cuda else "gloo"
    if backend not in ("nccl", "gloo"):
        raise DartsError(f"unknown distributed.backend {backend!r}; valid choices: auto, gloo, nccl")
    if wants_cuda:
        if device_name not in ("auto", "cuda"):
            raise DartsError(f"device={device_name} names one GPU, but torchrun starts one process per GPU: "
                             "use device=auto or device=cuda (each rank takes cuda:LOCAL_RANK)")
        torch.cuda.set_device(local_rank)
        device_name = f"cuda:{local_rank}"
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=int(cfg.get("timeout_s", 1800)) if cfg is not None else 1800)
        dist.init_process_group(backend=backend, timeout=timeout)
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank, sync_bn=sync_bn), device_name


def shard_sizes(cfg, batch_size: int, world_size: int, what: str) -> int:
    """The global batch size the data pipeline walks, given the config's ``batch_size``.

    ``distributed.batch=global``: ``batch_size`` is the global batch, split evenly across ranks.
    ``distributed.batch=per_rank``: every rank takes ``batch_size``; the global batch grows with the ranks.
    """
    mode = str(cfg.get("batch", "global")) if cfg is not None else "global"
    if mode not in BATCH_MODES:
        raise DartsError(f"unknown distributed.batch {mode!r}; valid choices: {', '.join(BATCH_MODES)}")
    global_batch = batch_size * world_size if mode == "per_rank" else batch_size
    if global_batch % world_size:
        raise DartsError(f"{what} {batch_size} does not split evenly across {world_size} ranks; pick a "
                         f"multiple of {world_size} or distributed.batch=per_rank")
    return global_batch


def lr_scale(cfg, global_batch: int, reference_batch: int) -> float:
    """The factor applied to the weights' learning rates when the global batch differs from the
    config's: ``none`` (1), ``linear`` (global / reference, Goyal et al. 2017) or ``sqrt``."""
    rule = str(cfg.get("lr_scaling", "none")) if cfg is not None else "none"
    if rule not in LR_SCALING:
        raise DartsError(f"unknown distributed.lr_scaling {rule!r}; valid choices: {', '.join(LR_SCALING)}")
    ratio = global_batch / reference_batch
    return {"none": 1.0, "linear": ratio, "sqrt": ratio ** 0.5}[rule]


class _SumOverRanks(torch.autograd.Function):
    """y = sum over ranks of x; the gradient of x is the sum over ranks of y's gradients, since every
    rank's loss depends on every rank's x."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the global batch across every rank.

    Per channel, the shard's count, sum and sum of squares are added over ranks by one
    differentiable all-reduce (its backward all-reduces the gradients), which works on gloo
    (CPU) as on NCCL, unlike ``nn.SyncBatchNorm``. Shapes: x (B_shard, C, H, W) -> same.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        # Statistics in float32 at least: half-precision sums of squares overflow and lose bits.
        x32 = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        count = torch.full((1,), float(x.numel() // channels), device=x.device, dtype=x32.dtype)
        stats = torch.cat([count, x32.sum(dim=(0, 2, 3)), (x32 * x32).sum(dim=(0, 2, 3))])
        stats = _SumOverRanks.apply(stats)
        total = stats[0]
        mean = stats[1:1 + channels] / total
        var = (stats[1 + channels:] / total - mean * mean).clamp_min(0.0)
        if self.track_running_stats:
            with torch.no_grad():
                momentum = 0.1 if self.momentum is None else self.momentum
                unbiased = var * (total / (total - 1).clamp_min(1.0))
                self.running_mean.mul_(1 - momentum).add_(mean.to(self.running_mean.dtype), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.to(self.running_var.dtype), alpha=momentum)
                self.num_batches_tracked.add_(1)
        scale = torch.rsqrt(var + self.eps)
        shift = -mean * scale
        if self.affine:
            scale = scale * self.weight
            shift = shift * self.weight + self.bias
        out = x32 * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
        return out.to(x.dtype)


def convert_to_global_batchnorm(module: nn.Module) -> nn.Module:
    """Swap every ``nn.BatchNorm2d`` in ``module`` for a :class:`GlobalBatchNorm2d` holding the same
    parameters and buffers."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlobalBatchNorm2d):
        reference = _first_tensor(module)
        replacement = GlobalBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                        module.track_running_stats,
                                        device=None if reference is None else reference.device,
                                        dtype=None if reference is None else reference.dtype)
        replacement.load_state_dict(module.state_dict())
        replacement.train(module.training)
        return replacement
    for name, child in module.named_children():
        setattr(module, name, convert_to_global_batchnorm(child))
    return module


def _first_tensor(module: nn.Module) -> torch.Tensor | None:
    """A floating-point parameter or buffer: the dtype and device the replacement must keep."""
    tensors = [t for t in list(module.parameters()) + list(module.buffers()) if t.is_floating_point()]
    return tensors[0] if tensors else None

