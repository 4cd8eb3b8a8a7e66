"""Time one search step of the original DARTS code (Liu et al.'s ``cnn/`` folder) for comparison.

    python bench/original_step.py --original ~/src/darts/cnn --order 1 --batch 32 --device cpu
    python bench/original_step.py --original ~/src/darts/cnn --order 2 --json

The original code is not part of this repository: point ``--original`` at a checkout of
its ``cnn/`` folder (``model_search.py``, ``architect.py``, ``operations.py``,
``genotypes.py``), unmodified. On a machine without CUDA its ``.cuda()`` calls are made
no-ops for the run, the only change it needs on torch 2.x. One step is the body of its
``train_search.py`` loop: ``architect.step`` (first order: one ``loss.backward()`` on the
search batch; second order: the unrolled model built with ``model.new()`` and the
finite-difference Hessian-vector product), then the weight step with gradient clipping at 5.
Same supernet (C=16, 8 cells), hyperparameters and fixed random CIFAR-shaped batches as
``bench/search_step.py``, so the two print comparable rows.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from common import report, time_steps
from darts.machine import peak_memory_mb
from search_step import OPTIM, PAPER_STEPS


def import_original(folder: Path):
    """The original's ``Network`` and ``Architect`` classes, imported from ``folder``."""
    missing = [name for name in ("model_search.py", "architect.py", "operations.py", "genotypes.py")
               if not (folder / name).is_file()]
    if missing:
        raise SystemExit(f"error: --original {folder} is not the original DARTS cnn/ folder "
                         f"(missing {', '.join(missing)})")
    sys.path.insert(0, str(folder))
    from architect import Architect  # noqa: E402 (the original's modules)
    from model_search import Network  # noqa: E402
    return Network, Architect


def cpu_only_cuda_calls() -> None:
    """Make ``.cuda()`` return its receiver unchanged: the original moves every tensor it makes."""
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    nn.Module.cuda = lambda self, *args, **kwargs: self


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original", type=Path, required=True, help="the original DARTS repository's cnn/ folder")
    parser.add_argument("--order", type=int, default=1, choices=(1, 2))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--C", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cpu":
        cpu_only_cuda_calls()
    Network, Architect = import_original(args.original.expanduser().resolve())
    # Its architect uses the Tensor.add_(Number, Tensor) overloads that torch 2.x still runs, with a warning.
    warnings.filterwarnings("ignore", message="This overload of")

    # search_step.py's optimiser settings, named as the original's train_search.py flags.
    hyper = argparse.Namespace(momentum=OPTIM.weights.momentum, weight_decay=OPTIM.weights.weight_decay,
                               arch_learning_rate=OPTIM.alphas.lr, arch_weight_decay=OPTIM.alphas.weight_decay)
    lr, grad_clip = OPTIM.weights.lr, OPTIM.weights.grad_clip
    torch.manual_seed(0)
    criterion = nn.CrossEntropyLoss()
    model = Network(args.C, 10, args.layers, criterion).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr, momentum=hyper.momentum, weight_decay=hyper.weight_decay)
    architect = Architect(model, hyper)
    generator = torch.Generator().manual_seed(1)
    make = lambda: (torch.randn(args.batch, 3, 32, 32, generator=generator).to(device),
                    torch.randint(0, 10, (args.batch,), generator=generator).to(device))
    (inputs, targets), (search_inputs, search_targets) = make(), make()

    def step() -> torch.Tensor:
        model.train()
        architect.step(inputs, targets, search_inputs, search_targets, lr, optimizer, unrolled=args.order == 2)
        optimizer.zero_grad()
        loss = criterion(model(inputs), targets)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        return loss.detach()

    seconds = time_steps(step, device, args.warmup, args.steps)
    result = {"path": "original", "order": args.order, "batch": args.batch, "device": device.type,
              "ms_per_step": 1000 * seconds, "images_per_s": args.batch / seconds,
              "peak_mem_mb": peak_memory_mb(device), "threads": torch.get_num_threads(),
              "paper_search_hours": seconds * (64 / args.batch) * PAPER_STEPS / 3600}
    report(result, ["path", "order", "batch", "device", "ms_per_step", "images_per_s", "peak_mem_mb"], args.json)
    return result


if __name__ == "__main__":
    main()
