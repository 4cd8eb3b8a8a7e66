"""Progressive search stages: a schedule of stages and the op pruning between two of them.

A stage schedule splits a search's epochs into stages; each stage names how many ops every edge
keeps (``keep_ops``: the top ones by architecture weight, pruned at the stage's start) and the
strategy options it runs with (DrNAS: the partial-channel K). DrNAS (xiangning-chen/DrNAS,
DARTS-space/train_search.py lines 118-159: ``ks = [6, 4]``, ``num_keeps = [7, 4]``,
``train_epochs = [25, 25]``) and P-DARTS search this way. This module is the pure logic; the engine
part that rebuilds the supernet and carries its state over is :mod:`darts.engine.stages`.

A strategy that searches in stages is a :class:`StagedStrategy`: it holds its schedule and takes
each stage's options in :meth:`StagedStrategy.enter_stage` before the stage's supernet is built.
"""
from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from darts.errors import DartsError

EdgeOps = tuple[tuple[str, ...], ...]
STAGE_KEYS = ("epochs", "keep_ops", "options")


@dataclass(frozen=True)
class Stage:
    """epochs: how long the stage runs; keep_ops: ops per edge from the stage's start (None: as the
    previous stage left them); options: strategy options of the stage ({"partial_channels": 4})."""

    epochs: int
    keep_ops: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


def parse_stages(raw, option_names: Sequence[str]) -> tuple[Stage, ...]:
    """The stages of a ``stages`` config list ([{epochs, keep_ops, options}, ...]); () for null.
    DartsError naming the first bad entry and the valid keys or options."""
    if raw is None:
        return ()
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence) or not raw:
        raise DartsError(f"strategy.stages must be null or a non-empty list of stages "
                         f"({{epochs, keep_ops, options}}), got {raw!r}")
    stages = []
    for index, entry in enumerate(raw):
        where = f"strategy.stages[{index}]"
        if not isinstance(entry, Mapping):
            raise DartsError(f"{where} must be a mapping with keys {', '.join(STAGE_KEYS)}, got {entry!r}")
        unknown = sorted(set(map(str, entry)) - set(STAGE_KEYS))
        if unknown:
            raise DartsError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(STAGE_KEYS)}")
        epochs, keep = entry.get("epochs"), entry.get("keep_ops")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise DartsError(f"{where}.epochs must be a positive integer, got {epochs!r}")
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise DartsError(f"{where}.keep_ops must be null or a positive integer, got {keep!r}")
        options = dict(entry.get("options") or {})
        bad = sorted(set(map(str, options)) - set(option_names))
        if bad:
            raise DartsError(f"{where}.options: unknown option(s) {', '.join(bad)}; valid choices: "
                             f"{', '.join(option_names) or 'none'}")
        stages.append(Stage(epochs, keep, options))
    return tuple(stages)


def check_schedule(stages: Sequence[Stage], epochs: int) -> None:
    """The stages must fill the search exactly: their epochs add up to ``search.epochs``."""
    total = sum(stage.epochs for stage in stages)
    if stages and total != epochs:
        raise DartsError(f"strategy.stages run {total} epochs ({' + '.join(str(s.epochs) for s in stages)}) "
                         f"but search.epochs is {epochs}: set search.epochs={total} or change the stages")


def stage_starts(stages: Sequence[Stage]) -> list[int]:
    """The first epoch of each stage: [0, epochs_0, epochs_0 + epochs_1, ...]."""
    starts, start = [], 0
    for stage in stages:
        starts.append(start)
        start += stage.epochs
    return starts


def stage_of_epoch(stages: Sequence[Stage], epoch: int) -> int:
    """The index of the stage that epoch ``epoch`` belongs to (the last one past the end)."""
    starts = stage_starts(stages)
    return max(index for index, start in enumerate(starts) if start <= epoch)


def top_ops(weights: torch.Tensor, keep: int) -> list[list[int]]:
    """(edges, ops) architecture weights -> per edge the column indices of its ``keep`` largest
    weights, in column order (DrNAS utils.py ``prune``: ``x.topk(k=num_keep, dim=-1)`` and a mask
    that keeps the surviving columns in place). Equal weights: the lower column wins (a stable sort)."""
    edges, ops = weights.shape
    if keep > ops:
        raise DartsError(f"a stage keeps {keep} ops per edge but the edges hold only {ops}: "
                         f"keep_ops must not grow from one stage to the next")
    order = torch.sort(torch.as_tensor(weights, dtype=torch.float64), dim=-1, descending=True, stable=True).indices
    return [sorted(order[edge, :keep].tolist()) for edge in range(edges)]


def pruned_edge_ops(edge_ops: Mapping[str, EdgeOps], kept: Mapping[str, list[list[int]]]) -> dict[str, EdgeOps]:
    """{cell type: each edge's ops} reduced to the kept columns of each edge, in their order."""
    return {cell: tuple(tuple(rows[edge][k] for k in kept[cell][edge]) for edge in range(len(rows)))
            for cell, rows in edge_ops.items()}


class StagedStrategy(abc.ABC):
    """A strategy that searches in stages (mixed in with :class:`~darts.strategies.base.SupernetStrategy`).

    ``stages``: its schedule (() = one stage, no pruning). The engine calls :meth:`enter_stage` before
    it builds each stage's supernet, on a fresh run, at each stage boundary and on resume."""

    stages: tuple[Stage, ...] = ()

    @abc.abstractmethod
    def enter_stage(self, index: int, start_epoch: int) -> None:
        """Take stage ``index``'s options; the stage starts at (global) epoch ``start_epoch``."""

    def pruning_weights(self) -> dict[str, torch.Tensor]:
        """{cell type: (edges, ops)} the weights whose per-edge ranking the pruning keeps; default:
        the strategy's mixing weights."""
        return self.mixing_weights()  # type: ignore[attr-defined]
