"""Time one final-training step of a genotype's network (forward, auxiliary loss, backward, clip, SGD).

    python bench/final_step.py --batch 96 --device cpu              # DARTS_V2, C=36, 20 cells, aux head
    python bench/final_step.py --batch 96 --device cpu --baseline   # eager float32
    python bench/final_step.py --batch 96 --device cuda --json
    python bench/final_step.py --batch 128 --C 16 --layers 6 --in-channels 1 --image-size 28 --stem-stride 2 \
        --no-auxiliary --drop-path 0 --genotype outputs/demo/DATE/search    # make demo's final step

Unless --no-check, it checks on a fixed batch that the configured path's loss
matches the eager float32 baseline's, and prints the extrapolated wall time of
the paper's CIFAR-10 training (600 epochs of 50,000 / 96 steps at batch 96).
"""
from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn as nn
from omegaconf import OmegaConf

from common import base_parser, make_runtime, report, time_steps
from darts.fastpath import apply_fast_path
from darts.machine import peak_memory_mb
from darts.spaces import DartsSpace
from darts.spaces.darts_cnn.genotype import PRIMITIVES
from darts.spaces.darts_cnn.network import NetworkCIFAR

PAPER_STEPS = 600 * (50000 // 96)


def training_step(network, forward, runtime, optimizer, batch, drop_path_prob=0.2):
    criterion = nn.CrossEntropyLoss()
    inputs, targets = batch
    network.drop_path_prob = drop_path_prob
    with runtime.autocast():
        logits, logits_aux = forward(inputs)
    loss = criterion(logits.float(), targets)
    if logits_aux is not None:
        loss = loss + 0.4 * criterion(logits_aux.float(), targets)
    optimizer.zero_grad(set_to_none=True)
    runtime.scaler.scale(loss).backward()
    runtime.scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(network.parameters(), 5.0, foreach=True)
    runtime.scaler.step(optimizer)
    runtime.scaler.update()
    return loss.detach()


def main(argv=None) -> dict:
    parser = base_parser(__doc__)
    parser.add_argument("--batch", type=int, default=96)
    parser.add_argument("--genotype", default="DARTS_V2")
    parser.add_argument("--C", type=int, default=36)
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--in-channels", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--stem-stride", type=int, default=1)
    parser.add_argument("--no-auxiliary", action="store_true", help="without the auxiliary head")
    parser.add_argument("--drop-path", type=float, default=0.2)
    parser.add_argument("--no-shared-edges", action="store_true",
                        help="the fast path without shared cell edges (darts/spaces/shared_edges.py)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runtime = make_runtime(args)
    device = runtime.device
    torch.manual_seed(0)
    space = DartsSpace(OmegaConf.create(dict(name="darts", primitives=list(PRIMITIVES))))
    network = NetworkCIFAR(args.C, 10, args.layers, not args.no_auxiliary, space.resolve_genotype(args.genotype),
                           in_channels=args.in_channels, stem_stride=args.stem_stride)
    pristine = copy.deepcopy(network)
    forward = runtime.prepare(network)
    if args.no_shared_edges:
        apply_fast_path(network, dataclasses.replace(runtime.fast_path, shared_cell_edges=False))
    optimizer = torch.optim.SGD(network.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4, foreach=True)
    generator = torch.Generator().manual_seed(1)
    shape = (args.batch, args.in_channels, args.image_size, args.image_size)
    batch = (torch.randn(*shape, generator=generator).to(device, memory_format=runtime.memory_format),
             torch.randint(0, 10, (args.batch,), generator=generator).to(device))
    network.train()
    seconds = time_steps(lambda: training_step(network, forward, runtime, optimizer, batch, args.drop_path), device,
                         args.warmup, args.steps)
    path = "baseline" if args.baseline else "fast, no shared edges" if args.no_shared_edges else "fast"
    result = {"path": path, "batch": args.batch, "device": device.type,
              "ms_per_step": 1000 * seconds, "images_per_s": args.batch / seconds,
              "peak_mem_mb": peak_memory_mb(device), "runtime": runtime.describe(),
              "threads": torch.get_num_threads(), "paper_training_hours": seconds * PAPER_STEPS / 3600}
    if not args.no_check:
        losses = []
        for baseline in (False, True):
            check_runtime = make_runtime(args, baseline=baseline)
            model = copy.deepcopy(pristine)
            check_forward = check_runtime.prepare(model)
            model.train()
            model.drop_path_prob = 0.0  # no randomness, so both paths see the same function
            inputs = batch[0].contiguous(memory_format=check_runtime.memory_format)
            with torch.no_grad(), check_runtime.autocast():
                logits, _ = check_forward(inputs)
            losses.append(float(nn.functional.cross_entropy(logits.float(), batch[1])))
        tolerance = 1e-3 if runtime.amp_dtype is None else 5e-2
        error = abs(losses[0] - losses[1]) / abs(losses[1])
        result.update(check_loss_rel_error=error, check_tolerance=tolerance, check_passed=error <= tolerance)
    report(result, ["path", "batch", "device", "ms_per_step", "images_per_s", "peak_mem_mb"], args.json)
    return result


if __name__ == "__main__":
    main()
