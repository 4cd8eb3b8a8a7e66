"""Seeds and epoch orders: every random choice of the data pipeline is a pure function of
(seed, stream name, epoch[, batch]), the same in every process, so a resumed run replays nothing."""
from __future__ import annotations

import hashlib

import torch
from torch import Tensor


def stream_seed(seed: int, stream: str, epoch: int) -> int:
    """A seed for one named random stream in one epoch: a stable hash (the same in every process), < 2**63."""
    digest = hashlib.sha256(f"{int(seed)}\x1f{stream}\x1f{int(epoch)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def batch_seed(seed: int, stream: str, epoch: int, batch: int) -> int:
    """Each batch its own generator, so starting at batch k needs no replay of batches 0..k-1."""
    return stream_seed(seed, f"{stream}/batch{batch}", epoch)


def epoch_order(num_examples: int, seed: int, stream: str, epoch: int, shuffle: bool) -> Tensor:
    """(num_examples,) int64 positions in the order one epoch visits them."""
    if not shuffle:
        return torch.arange(num_examples)
    generator = torch.Generator().manual_seed(stream_seed(seed, stream, epoch))
    return torch.randperm(num_examples, generator=generator)
