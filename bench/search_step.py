"""Time one search step (alpha step + weight step) of the supernet.

    python bench/search_step.py --order 1 --batch 32 --device cpu
    python bench/search_step.py --order 2 --batch 32 --json

Random CIFAR-shaped batches (3x32x32, 10 classes), the CIFAR-10 search
configuration (C=16, 8 cells, 4 nodes, all 8 ops) unless told otherwise.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from darts.genotypes import PRIMITIVES  # noqa: E402
from darts.strategies import build_strategy  # noqa: E402

OPTIM = dict(weights=dict(lr=0.025, lr_min=0.001, momentum=0.9, weight_decay=3e-4, grad_clip=5.0),
             alphas=dict(lr=3e-4, betas=[0.5, 0.999], weight_decay=1e-3))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--order", type=int, default=1, choices=(1, 2))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--strategy", default="darts")
    parser.add_argument("--C", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)

    space = OmegaConf.create(dict(name="darts", primitives=list(PRIMITIVES), C=args.C, layers=args.layers,
                                  steps=4, multiplier=4, stem_multiplier=3))
    strategy = build_strategy(OmegaConf.create(dict(name=args.strategy, order=args.order)))
    model = strategy.build_supernet(space, 10, 3).to(device)
    strategy.setup(model, OmegaConf.create(OPTIM), epochs=50, steps_per_epoch=100)
    make = lambda: (torch.randn(args.batch, 3, 32, 32, device=device),
                    torch.randint(0, 10, (args.batch,), device=device))
    train_batch, alpha_batch = make(), make()
    alpha_batches = iter(lambda: alpha_batch, None)

    for _ in range(args.warmup):
        strategy.step(train_batch, alpha_batches, epoch=0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        metrics = strategy.step(train_batch, alpha_batches, epoch=0)
    float(metrics["loss_sum"])  # one sync at the end
    elapsed = (time.perf_counter() - start) / args.steps
    result = {"strategy": args.strategy, "order": args.order, "batch": args.batch, "device": str(device),
              "threads": torch.get_num_threads(), "ms_per_step": 1000 * elapsed,
              "images_per_s": args.batch / elapsed, "peak_mem_mb": peak_memory_mb(device),
              # The paper's search: 50 epochs of 25,000 / 64 steps at batch 64.
              "paper_search_hours_extrapolated": elapsed * (64 / args.batch) * 50 * (25000 // 64) / 3600}
    print(f"{'strategy':>10} {'order':>5} {'batch':>5} {'device':>6} {'ms/step':>9} {'img/s':>8} {'peak MB':>8}")
    print(f"{args.strategy:>10} {args.order:>5} {args.batch:>5} {device.type:>6} {result['ms_per_step']:9.1f} "
          f"{result['images_per_s']:8.1f} {result['peak_mem_mb']:8.0f}")
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
