"""Progressive search stages: a schedule of stages and the op pruning between two of them.

A stage schedule splits a search's epochs into stages; each stage names how many ops every edge
keeps (``keep_ops``: the top ones by architecture weight, pruned at the stage's start), the
strategy options it runs with (DrNAS: the partial-channel K; P-DARTS: the skip-dropout rate), the
space overrides its supernet is built with (``space``: P-DARTS's ``{layers: 11}``, merged into the
space config on top of the earlier stages' overrides) and what carries over from the previous stage
(``carry``: ``state``, the weights, alphas, optimiser moments and schedule, as DrNAS; ``none``, a
fresh supernet, fresh alphas, new optimisers and a new schedule over the stage's own epochs, as
P-DARTS; null: the strategy's :attr:`StagedStrategy.carry`). DrNAS (xiangning-chen/DrNAS,
DARTS-space/train_search.py lines 118-159: ``ks = [6, 4]``, ``num_keeps = [7, 4]``,
``train_epochs = [25, 25]``) and P-DARTS (chenxin061/pdarts train_search.py lines 109-125) search
this way. This module is the pure logic; the engine part that rebuilds the supernet and carries its
state over is :mod:`darts.engine.stages`.

Pruning ranks each edge's ops by the strategy's :meth:`StagedStrategy.pruning_weights` under its
:attr:`StagedStrategy.pruning` rule (:data:`PRUNING_RULES`): ``top`` keeps the ``keep_ops`` largest
(DrNAS's ``topk``; on a tie the lower column stays), ``drop_lowest`` drops the smallest one at a
time (P-DARTS's ``get_min_k``, ``np.argmin``: on a tie the lower column goes). A stage with
``drop_none_first: true`` drops ``none`` before any other op where the edge still holds it, and the
rest by the rule (P-DARTS's ``get_min_k_no_zero``, train_search.py lines 372-389).

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
STAGE_KEYS = ("epochs", "keep_ops", "options", "space", "carry", "drop_none_first")
CARRY = ("state", "none")
PRUNING_RULES = ("top", "drop_lowest")
# Space keys a stage cannot override: the space itself, and the per-edge op lists that pruning writes.
FIXED_SPACE_KEYS = ("name", "edge_primitives")


@dataclass(frozen=True)
class Stage:
    """epochs: how long the stage runs; keep_ops: ops per edge from the stage's start (None: as the
    previous stage left them); options: strategy options of the stage ({"partial_channels": 4});
    space: overrides of the space config from this stage on ({"layers": 11}); carry: what the stage
    takes over from the previous one (``state`` | ``none``; None: the strategy's choice);
    drop_none_first: the pruning at the stage's start drops ``none`` before any other op."""

    epochs: int
    keep_ops: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    space: dict[str, Any] = field(default_factory=dict)
    carry: str | None = None
    drop_none_first: bool = False


def parse_stages(raw, option_names: Sequence[str]) -> tuple[Stage, ...]:
    """The stages of a ``stages`` config list ([{epochs, keep_ops, options, space, carry,
    drop_none_first}, ...]); () for null. DartsError naming the first bad entry and the valid keys,
    options or choices. (Whether a ``space`` key exists is checked against the space config by
    :class:`darts.engine.stages.StagePlan`.)"""
    if raw is None:
        return ()
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence) or not raw:
        raise DartsError(f"strategy.stages must be null or a non-empty list of stages "
                         f"({{{', '.join(STAGE_KEYS)}}}), got {raw!r}")
    return tuple(parse_stage(entry, f"strategy.stages[{index}]", option_names) for index, entry in enumerate(raw))


def parse_stage(entry, where: str, option_names: Sequence[str]) -> Stage:
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
    space = entry.get("space") or {}
    if not isinstance(space, Mapping):
        raise DartsError(f"{where}.space must be a mapping of space config overrides ({{layers: 11}}), got {space!r}")
    fixed = sorted(set(map(str, space)) & set(FIXED_SPACE_KEYS))
    if fixed:
        raise DartsError(f"{where}.space cannot override {', '.join(fixed)}: a stage keeps the space, and its "
                         "per-edge ops come from keep_ops")
    carry = entry.get("carry")
    if carry is not None and carry not in CARRY:
        raise DartsError(f"{where}.carry must be null (the strategy's choice) or one of {', '.join(CARRY)}, "
                         f"got {carry!r}")
    none_first = entry.get("drop_none_first", False)
    if not isinstance(none_first, bool):
        raise DartsError(f"{where}.drop_none_first must be true or false, got {none_first!r}")
    if none_first and keep is None:
        raise DartsError(f"{where}.drop_none_first needs keep_ops: it says how the stage's pruning ranks ops")
    return Stage(epochs, keep, options, {str(key): value for key, value in space.items()}, carry, none_first)


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
    return kept_columns(weights, keep, "top")


def kept_columns(weights: torch.Tensor, keep: int, rule: str = "top",
                 edge_ops: Sequence[Sequence[str]] | None = None, none_first: bool = False) -> list[list[int]]:
    """(edges, ops) weights of one cell type -> per edge the columns that stay, in column order:
    ``keep`` of them, chosen by ``rule`` (:data:`PRUNING_RULES`); ``edge_ops``: each edge's op
    names, which ``none_first`` needs.

    ``drop_lowest`` is P-DARTS's ``get_min_k`` (train_search.py lines 363-371): ``ops - keep`` times
    ``np.argmin`` over the row, each found entry then set to 1 so that it is not found again; on a tie
    the lower column is dropped first, so a stable ascending sort's first ``ops - keep`` columns go.
    ``none_first`` is their ``get_min_k_no_zero`` (lines 372-389): where the edge still holds
    ``none`` it is dropped whatever its weight and counts as one of the drops, the others go by the
    rule among the remaining ops; an edge without ``none`` is pruned by the rule alone."""
    if rule not in PRUNING_RULES:
        raise DartsError(f"unknown pruning rule {rule!r}; valid choices: {', '.join(PRUNING_RULES)}")
    rows = torch.as_tensor(weights, dtype=torch.float64)
    edges, ops = rows.shape
    if keep > ops:
        raise DartsError(f"a stage keeps {keep} ops per edge but the edges hold only {ops}: "
                         f"keep_ops must not grow from one stage to the next")
    if none_first and edge_ops is None:
        raise DartsError("dropping none first needs each edge's op names")
    kept = []
    for edge in range(edges):
        candidates = list(range(ops))
        names = list(edge_ops[edge]) if none_first else []
        if "none" in names and keep == ops:
            raise DartsError(f"a stage that drops none first must drop at least one op; its edges hold "
                             f"{ops} ops and keep_ops is {keep}")
        if "none" in names:
            candidates.remove(names.index("none"))
        values = rows[edge, candidates]
        if rule == "top":
            order = torch.sort(values, descending=True, stable=True).indices[:keep]
        else:
            order = torch.sort(values, stable=True).indices[len(candidates) - keep:]
        kept.append(sorted(candidates[i] for i in order.tolist()))
    return kept


def pruned_edge_ops(edge_ops: Mapping[str, EdgeOps], kept: Mapping[str, list[list[int]]]) -> dict[str, EdgeOps]:
    """{cell type: each edge's ops} reduced to the kept columns of each edge, in their order."""
    return {cell: tuple(tuple(rows[edge][k] for k in kept[cell][edge]) for edge in range(len(rows)))
            for cell, rows in edge_ops.items()}


class StagedStrategy(abc.ABC):
    """A strategy that searches in stages (mixed in with :class:`~darts.strategies.base.SupernetStrategy`).

    ``stages``: its schedule (() = one stage, no pruning). ``carry``: what a stage takes over from the
    previous one where the stage does not say (``state``: DrNAS; ``none``: P-DARTS). ``pruning``: the
    rule that ranks an edge's ops (:data:`PRUNING_RULES`). The engine calls :meth:`enter_stage` before
    it builds each stage's supernet, on a fresh run, at each stage boundary and on resume."""

    stages: tuple[Stage, ...] = ()
    carry: str = "state"
    pruning: str = "top"

    @abc.abstractmethod
    def enter_stage(self, index: int, start_epoch: int) -> None:
        """Take stage ``index``'s options; the stage starts at (global) epoch ``start_epoch``."""

    def pruning_weights(self) -> dict[str, torch.Tensor]:
        """{cell type: (edges, ops)} the weights whose per-edge ranking the pruning keeps; default:
        the strategy's mixing weights."""
        return self.mixing_weights()  # type: ignore[attr-defined]
