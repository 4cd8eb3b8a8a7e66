"""Evaluation of a model (a discrete network, or a supernet under fixed architecture weights)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from darts.distributed import Distributed
from darts.tracking import MetricAccumulator


@torch.no_grad()
def evaluate(model: nn.Module, batches, criterion=None, topk=(1,), epoch: int = 0,
             max_batches: int | None = None, dist: Distributed | None = None,
             forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
    """Loss and top-k accuracy (%) of ``model`` in eval mode over one pass of ``batches``
    (its first ``max_batches`` batches when given); under DDP each rank passes its shard and the
    sums are added over ranks. ``forward`` (default: ``model``) maps inputs to logits: a supernet
    passes its architecture weights there."""
    criterion = criterion or nn.CrossEntropyLoss()
    was_training = model.training
    model.eval()
    totals = MetricAccumulator()
    for index, (inputs, targets) in enumerate(batches.epoch(epoch)):
        if max_batches is not None and index >= max_batches:
            break
        logits = (forward or model)(inputs)
        logits = logits[0] if isinstance(logits, tuple) else logits
        count = torch.full((), float(targets.shape[0]), device=targets.device)
        step = {"loss_sum": criterion(logits, targets).float() * count, "count": count}
        # With fewer classes than k, top-k holds every class: clamp rather than fail.
        top = logits.topk(min(max(topk), logits.shape[1]), dim=1).indices
        hits = top == targets[:, None]
        for k in topk:
            step[f"top{k}_sum"] = hits[:, :k].any(dim=1).sum().float()
        totals.add(step)
    model.train(was_training)
    reduced = (dist or Distributed()).sum_metrics(totals.sums)
    sums = {key: value.item() for key, value in reduced.items()}
    results = {"loss": sums["loss_sum"] / sums["count"]}
    for k in topk:
        results[f"top{k}"] = 100.0 * sums[f"top{k}_sum"] / sums["count"]
    return results


def entropy(weights: torch.Tensor) -> float:
    """Mean over edges of the entropy (nats) of each edge's op distribution, weights (edges, ops)."""
    return float(-(weights * weights.clamp_min(1e-12).log()).sum(-1).mean())
