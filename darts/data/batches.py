"""Mini-batch sources with one interface, ``len(batches)`` and ``batches.epoch(epoch, start)``.

:class:`DeviceBatches` serves a split held as tensors straight from the device, augmenting on the device;
:class:`LoaderBatches` serves a torch Dataset through a DataLoader. Both make the order of an epoch a pure
function of ``(seed, stream, epoch)`` (:mod:`darts.data.seeds`), so a resumed run sees exactly the batches
an uninterrupted one would have seen, and both can serve one rank's part of every global batch.
:class:`EndlessStream` walks either source epoch after epoch, with a resumable state.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from darts.data.augment import Augment, AugmentDraw
from darts.data.datasets.base import ImageTensors
from darts.data.seeds import batch_seed, epoch_order, stream_seed
from darts.errors import DartsError


def _num_batches(num_examples: int, batch_size: int, drop_last: bool) -> int:
    return num_examples // batch_size if drop_last else math.ceil(num_examples / batch_size)


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise DartsError(f"batch size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def _check_indices(indices: Tensor | None, num_examples: int) -> Tensor:
    """(M,) int64 positions into a split of ``num_examples``; all of them when ``indices`` is None."""
    if indices is None:
        return torch.arange(num_examples)
    indices = torch.as_tensor(indices, dtype=torch.int64).flatten()
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= num_examples):
        raise ValueError(f"indices fall outside the dataset's {num_examples} examples")
    return indices


def _check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    rank, world_size = (int(v) for v in shard)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"shard {shard} is not (rank, world_size) with 0 <= rank < world_size")
    return rank, world_size


def shard_slice(length: int, shard: tuple[int, int]) -> slice:
    """This rank's contiguous part of a global batch of ``length``: equal parts when ``length``
    divides evenly (training batches), the last ranks one shorter otherwise (evaluation tails)."""
    rank, world_size = shard
    return slice(rank * length // world_size, (rank + 1) * length // world_size)


def _rank_suffix(shard: tuple[int, int]) -> str:
    """Names a rank's own random stream; empty for one process, whose seeds stay those of an unsharded run."""
    return f"/rank{shard[0]}" if shard[1] > 1 else ""


def _check_start(start: int, num_batches: int) -> None:
    if not 0 <= start <= num_batches:
        raise ValueError(f"start batch {start} is outside 0..{num_batches}")


class DeviceBatches:
    """Mini-batches from a device-resident uint8 dataset, no DataLoader.

    The selected images (N, C, H, W) uint8 and labels (N,) int64 move to ``device`` once; each batch is
    gathered there and augmented by ``augment`` with a generator derived from (seed, stream, epoch, batch).
    ``batch_size`` is the global batch; with ``shard=(rank, world_size)`` a rank yields its contiguous part
    of every global batch, augmented with the global batch's random draws, so N ranks together see exactly
    the batches one process sees.
    """

    def __init__(self, data: ImageTensors, indices: Tensor | None, batch_size: int, augment: Augment, seed: int,
                 stream: str, device, shuffle: bool = True, drop_last: bool = True,
                 shard: tuple[int, int] = (0, 1)):
        self.device = torch.device(device)
        self.batch_size = _check_batch_size(batch_size)
        if indices is None:
            # No copy when the tensors already live on the device (the search's two alpha-half views share them).
            images, labels = data.images, data.labels
        else:
            indices = _check_indices(indices, len(data))
            images, labels = data.images[indices], data.labels[indices]
        self.images = images.to(self.device)    # (N, C, H, W) uint8
        self.labels = labels.to(self.device)    # (N,) int64
        self.augment = augment
        self.seed = int(seed)
        self.stream = stream
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.shard = _check_shard(shard)

    @property
    def num_examples(self) -> int:
        return self.labels.shape[0]

    def __len__(self) -> int:
        return _num_batches(self.num_examples, self.batch_size, self.drop_last)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches (x float32 (B, C, H, W) normalised, y int64 (B,)) of ``epoch`` from batch ``start`` on."""
        _check_start(start, len(self))
        return self._batches(epoch, start)

    def _batches(self, epoch: int, start: int) -> Iterator[tuple[Tensor, Tensor]]:
        order = epoch_order(self.num_examples, self.seed, self.stream, epoch, self.shuffle).to(self.device)
        for batch in range(start, len(self)):
            positions = order[batch * self.batch_size:(batch + 1) * self.batch_size]
            generator = torch.Generator().manual_seed(batch_seed(self.seed, self.stream, epoch, batch))
            draw = self.augment.sample((len(positions), *self.images.shape[1:]), generator, self.device)
            part = shard_slice(len(positions), self.shard)
            if self.shard[1] > 1:
                if part.start == part.stop:   # an evaluation tail shorter than the number of ranks
                    continue
                positions = positions[part]
                draw = AugmentDraw(**{name: None if value is None else value[part]
                                      for name, value in vars(draw).items()})
            yield self.augment.apply(self.images[positions], draw), self.labels[positions]

    def __repr__(self) -> str:
        return (f"DeviceBatches({self.num_examples} examples, batch {self.batch_size}, {len(self)} batches, "
                f"stream {self.stream!r}, {self.augment})")


class EpochBatchSampler(Sampler):
    """Lists of dataset indices for one epoch at a time; the epoch and start batch are set before each pass.

    The order is :func:`~darts.data.seeds.epoch_order`'s, the same function as DeviceBatches', so a
    (seed, stream, epoch) visits the same examples in the same order whichever source serves them.
    """

    def __init__(self, indices: Tensor, batch_size: int, seed: int, stream: str, shuffle: bool, drop_last: bool,
                 shard: tuple[int, int] = (0, 1)):
        self.indices = indices
        self.shard = _check_shard(shard)
        self.batch_size = batch_size
        self.seed = seed
        self.stream = stream
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.current_epoch = 0
        self.current_start = 0

    def __len__(self) -> int:
        return _num_batches(len(self.indices), self.batch_size, self.drop_last)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.current_epoch, self.current_start = epoch, start

    def batches(self, epoch: int, start: int = 0) -> list[list[int]]:
        order = self.indices[epoch_order(len(self.indices), self.seed, self.stream, epoch, self.shuffle)]
        batches = [order[batch * self.batch_size:(batch + 1) * self.batch_size] for batch in range(start, len(self))]
        shards = [chunk[shard_slice(len(chunk), self.shard)].tolist() for chunk in batches]
        return [indices for indices in shards if indices]   # an evaluation tail may leave a rank nothing

    def __iter__(self) -> Iterator[list[int]]:
        # Eager: a DataLoader with persistent workers asks for its sampler's iterator when the pass is
        # reset, and the epoch it must see is the one set at that moment.
        return iter(self.batches(self.current_epoch, self.current_start))


class LoaderBatches:
    """Mini-batches from a torch Dataset through a DataLoader, with DeviceBatches' interface.

    The order of an epoch is a pure function of (seed, stream, epoch); the randomness of the Dataset's
    own transforms comes from the DataLoader's worker seeds (or torch's global RNG without workers).
    One pass at a time: with persistent workers a new ``epoch()`` call ends the previous pass.
    """

    def __init__(self, dataset: Dataset, indices: Tensor | None, batch_size: int, seed: int, stream: str, device,
                 shuffle: bool = True, drop_last: bool = True, num_workers: int = 0,
                 shard: tuple[int, int] = (0, 1)):
        self.dataset = dataset
        self.device = torch.device(device)
        self.batch_size = _check_batch_size(batch_size)
        self.indices = _check_indices(indices, len(dataset))
        self.seed = int(seed)
        self.stream = stream
        self.sampler = EpochBatchSampler(self.indices, self.batch_size, self.seed, stream, shuffle, drop_last, shard)
        num_workers = int(num_workers)
        self.loader = DataLoader(
            dataset, batch_sampler=self.sampler, num_workers=num_workers,
            pin_memory=self.device.type == "cuda", persistent_workers=num_workers > 0,
            # Seeds the workers' RNGs, so the transforms' randomness does not depend on the global RNG.
            # Each rank its own worker seeds: the same seeds would give every shard the same crops.
            generator=torch.Generator().manual_seed(
                stream_seed(self.seed, f"{stream}/workers{_rank_suffix(shard)}", 0)))

    @property
    def num_examples(self) -> int:
        return len(self.indices)

    def __len__(self) -> int:
        return len(self.sampler)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches (x float32 (B, C, H, W), y int64 (B,)) of ``epoch`` from batch ``start`` on, on the device."""
        _check_start(start, len(self))
        self.sampler.set_epoch(epoch, start)
        # iter() now, not on the first next(): the sampler state above belongs to this call.
        return self._moved(iter(self.loader))

    def _moved(self, batches: Iterator) -> Iterator[tuple[Tensor, Tensor]]:
        for images, labels in batches:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def __repr__(self) -> str:
        return (f"LoaderBatches({self.num_examples} examples, batch {self.batch_size}, {len(self)} batches, "
                f"stream {self.stream!r}, {self.loader.num_workers} workers)")


class EndlessStream:
    """An endless iterator over a DeviceBatches/LoaderBatches walking its epochs 0, 1, 2, ... in turn.

    ``cycle`` counts the passes (the epoch given to ``batches.epoch``), ``position`` the batches already
    taken from the current pass; together they are the whole state, so a resumed stream continues exactly.
    """

    def __init__(self, batches: DeviceBatches | LoaderBatches):
        self.batches = batches
        self.cycle = 0
        self.position = 0
        self._current: Iterator[tuple[Tensor, Tensor]] | None = None

    def __iter__(self) -> EndlessStream:
        return self

    def __next__(self) -> tuple[Tensor, Tensor]:
        if len(self.batches) == 0:
            raise DartsError(f"the stream {getattr(self.batches, 'stream', '?')!r} has no full batch of "
                             f"{self.batches.batch_size} from {self.batches.num_examples} examples; lower the "
                             f"batch size")
        if self._current is None:
            self._current = self.batches.epoch(self.cycle, start=self.position)
        batch = next(self._current)
        self.position += 1
        if self.position == len(self.batches):
            # Roll over now rather than at the next call: the saved state never points past a pass's end.
            self.cycle, self.position, self._current = self.cycle + 1, 0, None
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"cycle": self.cycle, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        try:
            cycle, position = int(state["cycle"]), int(state["position"])
        except (KeyError, TypeError, ValueError) as err:
            raise DartsError(f"stream state {state!r} lacks integer 'cycle' and 'position'") from err
        if cycle < 0 or not 0 <= position < max(len(self.batches), 1):
            raise DartsError(f"stream state {state!r} does not fit a stream of {len(self.batches)} batches a pass; "
                             f"was it saved with another dataset or batch size?")
        self.cycle, self.position, self._current = cycle, position, None
