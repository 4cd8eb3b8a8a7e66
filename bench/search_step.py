"""Time one search step (alpha step + weight step) of the DARTS supernet.

    python bench/search_step.py --order 1 --batch 32 --device cpu            # the fast path
    python bench/search_step.py --order 1 --batch 32 --device cpu --baseline # eager float32, full gradients
    python bench/search_step.py --order 2 --batch 64 --device cuda --json

CIFAR-10 search configuration (C=16, 8 cells, 4 nodes, all 8 ops, 3x32x32, 10
classes) on fixed random batches. Unless --no-check, it then checks on a fixed
batch that the configured path's loss and alpha gradient match the eager
float32 baseline's, and prints the extrapolated wall time of the paper's search
(50 epochs of 25,000 / 64 steps at batch 64; time per image taken as constant).
The second-order check uses the exact Hessian-vector product on both paths (see below).
"""
from __future__ import annotations

import copy
import inspect

import torch
from omegaconf import OmegaConf

from common import base_parser, make_runtime, report, time_steps
from darts.machine import peak_memory_mb
from darts.spaces import build_space
from darts.spaces.darts_cnn.genotype import PRIMITIVES
from darts.strategies import STRATEGIES, build_strategy

OPTIM = OmegaConf.create(dict(weights=dict(lr=0.025, lr_min=0.001, momentum=0.9, weight_decay=3e-4, grad_clip=5.0),
                              alphas=dict(lr=3e-4, betas=[0.5, 0.999], weight_decay=1e-3)))
PAPER_STEPS = 50 * (25000 // 64)


def build(args, runtime, model=None, arch_state=None, hessian="finite_difference"):
    """The strategy set up on a supernet: a fresh one (seed 0), or ``model`` with the architecture
    parameters ``arch_state`` (a copy of another build's, so that both compute the same function)."""
    space = build_space(OmegaConf.create(dict(name="darts", primitives=list(PRIMITIVES), C=args.C, layers=args.layers,
                                              steps=4, multiplier=4, stem_multiplier=3)))
    options = dict(name=args.strategy)
    accepted = inspect.signature(STRATEGIES.get(args.strategy).__init__).parameters
    # Strategies without an order (GDAS, DrNAS, random_ws) are first-order methods.
    if "order" in accepted:
        options.update(order=args.order, **({"hessian": hessian} if args.order == 2 else {}))
    elif args.order == 2:
        raise SystemExit(f"strategy {args.strategy!r} has no second order")
    strategy = build_strategy(OmegaConf.create(options))
    if model is None:
        torch.manual_seed(0)
        model = strategy.build_supernet(space, 10, 3)
    strategy.setup(space, model, OPTIM, epochs=50, steps_per_epoch=PAPER_STEPS // 50, runtime=runtime)
    if arch_state is not None:
        strategy.arch.load_state_dict(arch_state)
    return strategy, model


def arch_state_of(strategy):
    """A CPU copy of the strategy's architecture parameters (None for one without any: random_ws)."""
    arch = getattr(strategy, "arch", None)
    return None if arch is None else {name: value.detach().cpu().clone() for name, value in arch.state_dict().items()}


def loss_and_alpha_gradient(strategy, train_batch, alpha_batch):
    if strategy.order == 2:
        grads, loss, _ = strategy.unrolled_alpha_gradient(train_batch, alpha_batch)
        return loss.detach(), grads
    loss, _ = strategy.loss(alpha_batch)
    return loss.detach(), torch.autograd.grad(loss, strategy.arch_parameters())


def main(argv=None) -> dict:
    parser = base_parser(__doc__)
    parser.add_argument("--order", type=int, default=1, choices=(1, 2))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--strategy", default="darts")
    parser.add_argument("--C", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runtime = make_runtime(args)
    device = runtime.device
    strategy, model = build(args, runtime)
    pristine, pristine_arch = copy.deepcopy(model).cpu(), arch_state_of(strategy)
    generator = torch.Generator().manual_seed(1)
    make = lambda: (torch.randn(args.batch, 3, 32, 32, generator=generator).to(device, memory_format=runtime.memory_format),
                    torch.randint(0, 10, (args.batch,), generator=generator).to(device))
    train_batch, alpha_batch = make(), make()
    alpha_batches = iter(lambda: alpha_batch, None)
    # Time a step of an epoch where the alphas move (PC-DARTS freezes them for its first 15 epochs).
    epoch = getattr(strategy, "arch_start_epoch", 0)
    strategy.start_epoch(epoch)
    seconds = time_steps(lambda: strategy.step(train_batch, alpha_batches, epoch)["loss_sum"], device, args.warmup,
                         args.steps)
    result = {"path": "baseline" if args.baseline else "fast", "strategy": args.strategy, "order": args.order,
              "batch": args.batch, "device": device.type, "ms_per_step": 1000 * seconds,
              "images_per_s": args.batch / seconds, "peak_mem_mb": peak_memory_mb(device),
              "runtime": runtime.describe(), "threads": torch.get_num_threads(),
              "paper_search_hours": seconds * (64 / args.batch) * PAPER_STEPS / 3600}

    if not args.no_check:
        # Same weights, same batch: the configured path against eager float32. Second order is
        # compared with the exact Hessian-vector product: the published finite difference moves the
        # weights by 0.01 across ReLU kinks, so float rounding alone changes it by several per cent.
        fast, _ = build(args, make_runtime(args), copy.deepcopy(pristine), pristine_arch, hessian="exact")
        base, _ = build(args, make_runtime(args, baseline=True), copy.deepcopy(pristine), pristine_arch,
                        hessian="exact")
        fast_loss, fast_grad = loss_and_alpha_gradient(fast, train_batch, alpha_batch)
        contiguous = lambda batch: (batch[0].contiguous(), batch[1])  # the baseline's own NCHW layout
        base_loss, base_grad = loss_and_alpha_gradient(base, contiguous(train_batch), contiguous(alpha_batch))
        # float32 NHWC vs NCHW: the forward agrees to rounding, but max-pool windows full of ReLU
        # zeros are ties that the two kernels route to different inputs, which moves the alpha
        # gradient by ~0.3 % (first order) and ~2.5 % (second order, through the Hessian term)
        # on this batch; a dropped or mis-scaled term moves it by far more.
        tolerance = (1e-2 if args.order == 1 else 5e-2) if runtime.amp_dtype is None else 1e-1
        loss_error = abs(float(fast_loss) - float(base_loss)) / abs(float(base_loss))
        grad_error = max(float((f - b).norm() / b.norm()) for f, b in zip(fast_grad, base_grad))
        result.update(check_loss_rel_error=loss_error, check_alpha_grad_rel_error=grad_error,
                      check_tolerance=tolerance, check_passed=loss_error <= tolerance and grad_error <= tolerance)
    report(result, ["path", "order", "batch", "device", "ms_per_step", "images_per_s", "peak_mem_mb"], args.json)
    return result


if __name__ == "__main__":
    main()
