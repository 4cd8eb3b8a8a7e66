"""The engine part of a progressive search: the space of a stage (its overrides, its pruned edges),
and carrying a supernet's state (weights, architecture parameters, optimizer and scheduler state)
into the next stage's where the stage carries ``state``.

At a stage boundary DrNAS (xiangning-chen/DrNAS, DARTS-space/train_search.py lines 147-159) prunes
each edge to its top ops (``model.pruning``), widens the surviving ops to the new partial-channel K
(``model.wider``), builds a new weight SGD that takes the old momentum buffers
(net2wider.py ``configure_optimizer``) and a new cosine schedule that loads the old one's state
(``configure_scheduler``); the Adam of the alphas goes on. They mask pruned ops in place; we build
the stage's supernet with the kept ops as per-edge op lists (``space.edge_primitives``), the same
function: a masked-and-renormalised Dirichlet sample is a Dirichlet sample of the kept
concentrations, a masked softmax the softmax of the kept alphas. What carries over:

* the supernet: every tensor outside the edges by name; each kept op from its old column, widened
  by :mod:`darts.net2wider` where K changed;
* the strategy's architecture parameters: alpha matrices gather their kept columns, the rest
  (PC-DARTS betas) copy;
* each optimizer's per-parameter state through the same maps (momentum buffers widened, Adam moments
  gathered, step counts copied); its param-group settings stay the new optimizer's, as their new SGD
  has ``lr = args.learning_rate``; every other checkpointable (scheduler, grad scaler) loads the old
  one's state dict.

A stage that carries ``none`` (P-DARTS, chenxin061/pdarts train_search.py lines 124-141: each stage
a new ``Network`` with ``layers + add_layers[sp]`` cells and fresh ``1e-3 * randn`` alphas over the
surviving ops, a new SGD, Adam and ``CosineAnnealingLR(optimizer, args.epochs)``) takes nothing but
its edges' op lists: its supernet, alphas, optimisers and schedule are new, the schedule over the
epochs up to the next stage that starts afresh. Its space may differ from the previous stage's
(``space`` overrides: depth); a stage that carries ``state`` must keep the previous stage's space.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn
from omegaconf import OmegaConf

from darts.errors import DartsError
from darts.net2wider import widen, widening_plan
from darts.spaces.base import SearchSpace, build_space
from darts.stages import (CARRY, FIXED_SPACE_KEYS, EdgeOps, StagedStrategy, check_schedule, kept_columns,
                          stage_starts)

# new tensor -> (old tensor, how the old one becomes the new one)
TensorMap = dict[int, tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]]
Kept = dict[str, list[list[int]]]


def stage_space_configs(space_cfg, stages) -> list:
    """Each stage's space config: ``space_cfg`` merged with the ``space`` overrides of that stage and
    of every stage before it (depth set once stays). DartsError for a key the space config lacks."""
    configs, current = [], space_cfg
    for index, stage in enumerate(stages):
        keys = [key for key in map(str, space_cfg) if key not in FIXED_SPACE_KEYS]
        unknown = sorted(set(stage.space) - set(keys))
        if unknown:
            raise DartsError(f"strategy.stages[{index}].space: unknown key(s) {', '.join(unknown)}; valid keys of "
                             f"the {space_cfg.get('name')} space: {', '.join(keys)}")
        if stage.space:
            current = OmegaConf.merge(current, stage.space)
        configs.append(current)
    return configs or [space_cfg]


def changed_keys(before, after) -> list[str]:
    """The keys whose values differ between two space configs, as ``key a -> b``."""
    return [f"{key} {before.get(key)} -> {after.get(key)}" for key in map(str, after)
            if key != "edge_primitives" and before.get(key) != after.get(key)]


def stage_space(space_cfg, edge_ops: dict[str, EdgeOps] | None) -> SearchSpace:
    """The configured space, or with ``edge_ops`` as its per-edge op lists (a pruned stage)."""
    if edge_ops is None:
        return build_space(space_cfg)
    refusal = DartsError(f"the {space_cfg.get('name')} space cannot hold per-edge op lists, which pruning "
                         "between stages needs: search in stages in a space with space.edge_primitives "
                         "(darts, nb201)")
    if "edge_primitives" not in space_cfg:
        raise refusal
    rows = {cell: [list(ops) for ops in edges] for cell, edges in edge_ops.items()}
    space = build_space(OmegaConf.merge(space_cfg, {"edge_primitives": rows}))
    if {cell: tuple(map(tuple, ops)) for cell, ops in space.edge_ops().items()} != dict(edge_ops):
        raise refusal
    return space


def edges_of(model: nn.Module) -> list[tuple[str, int, nn.Module]]:
    """(cell type, edge index, mixed op) of every edge of a supernet's cells (DARTS, NB201), cell by
    cell; a cell without a ``reduction`` flag (NB201's, one cell type) is a normal cell."""
    cells = getattr(model, "cells", None)
    if cells is None:
        raise DartsError(f"a {type(model).__name__} supernet has no cells of mixed edges to prune")
    return [("reduce" if getattr(cell, "reduction", False) else "normal", index, edge)
            for cell in cells if hasattr(cell, "edges") for index, edge in enumerate(cell.edges)]


def carry_supernet(new: nn.Module, old: nn.Module, kept: Kept) -> TensorMap:
    """Fill ``new`` (the next stage's supernet) from ``old``; returns the map of every parameter."""
    mapping: TensorMap = {}
    in_edges: set[int] = set()
    for (cell, index, new_edge), (_, _, old_edge) in zip(edges_of(new), edges_of(old)):
        in_edges.update(id(t) for t in list(old_edge.parameters()) + list(old_edge.buffers()))
        in_edges.update(id(t) for t in list(new_edge.parameters()) + list(new_edge.buffers()))
        for column, source in enumerate(kept[cell][index]):
            for new_tensor, old_tensor, steps in widening_plan(new_edge.ops[column], old_edge.ops[source]):
                mapping[id(new_tensor)] = (old_tensor, lambda t, steps=steps: widen(t, steps))
    old_tensors = dict(old.named_parameters()) | dict(old.named_buffers())
    for name, tensor in list(new.named_parameters()) + list(new.named_buffers()):
        if id(tensor) not in in_edges:
            mapping[id(tensor)] = (old_tensors[name], lambda t: t)
    copy_mapped(list(new.parameters()) + list(new.buffers()), mapping)
    return mapping


def copy_mapped(tensors: list[torch.Tensor], mapping: TensorMap) -> None:
    with torch.no_grad():
        for tensor in tensors:
            if id(tensor) in mapping:
                old, transform = mapping[id(tensor)]
                tensor.copy_(transform(old.detach().to(tensor.device)))


def carry_arch(new: nn.Module, old: nn.Module, kept: Kept) -> TensorMap:
    """Architecture parameters: each ``alphas_<cell>`` (edges, ops) keeps its edges' kept columns;
    a parameter of unchanged shape (edge betas) copies."""
    mapping: TensorMap = {}
    old_params = dict(old.named_parameters())
    for name, param in new.named_parameters():
        source = old_params[name]
        cell = name.removeprefix("alphas_")
        if source.shape != param.shape and name.startswith("alphas_") and cell in kept:
            index = torch.tensor(kept[cell], dtype=torch.long)
            mapping[id(param)] = (source, lambda t, index=index: t.gather(1, index.to(t.device)))
        elif source.shape == param.shape:
            mapping[id(param)] = (source, lambda t: t)
        else:
            raise DartsError(f"architecture parameter {name} changes from {tuple(source.shape)} to "
                             f"{tuple(param.shape)} between stages, and only alpha columns can be pruned")
    copy_mapped(list(new.parameters()), mapping)
    return mapping


def carry_optimizer(new: torch.optim.Optimizer, old: torch.optim.Optimizer, mapping: TensorMap) -> None:
    """Per-parameter state through ``mapping``: a tensor of its parameter's shape transformed as the
    parameter was, anything else (a step count) copied."""
    for group in new.param_groups:
        for param in group["params"]:
            if id(param) not in mapping:
                continue
            source, transform = mapping[id(param)]
            state = old.state.get(source)
            if not state:
                continue
            new.state[param] = {key: transform(value) if torch.is_tensor(value) and value.shape == source.shape
                                else (value.clone() if torch.is_tensor(value) else value)
                                for key, value in state.items()}


def carry_strategy(new: dict[str, Any], old: dict[str, Any], model_map: TensorMap, kept: Kept) -> None:
    """The strategy's checkpointables (``Strategy.checkpointables``) of the next stage from this one's."""
    mapping = dict(model_map)
    for key, obj in new.items():
        if isinstance(obj, nn.Module):
            mapping.update(carry_arch(obj, old[key], kept))
    for key, obj in new.items():
        if isinstance(obj, torch.optim.Optimizer):
            carry_optimizer(obj, old[key], mapping)
        elif not isinstance(obj, nn.Module):
            obj.load_state_dict(old[key].state_dict())


class StagePlan:
    """Where a search is in its strategy's stage schedule (one stage for a strategy without one).

    ``index``: the current stage; ``edge_ops``: its pruned per-edge op lists (None: the configured
    space's); ``space_cfgs``: each stage's space config (``space_cfg`` with the stages' overrides)."""

    def __init__(self, strategy, epochs: int, space_cfg):
        self.strategy = strategy if isinstance(strategy, StagedStrategy) else None
        self.stages = self.strategy.stages if self.strategy is not None else ()
        check_schedule(self.stages, epochs)
        self.epochs = epochs
        self.space_cfgs = stage_space_configs(space_cfg, self.stages)
        if self.strategy is not None and self.strategy.carry not in CARRY:
            raise DartsError(f"strategy {type(strategy).__name__} carries {self.strategy.carry!r} between stages; "
                             f"valid choices: {', '.join(CARRY)}")
        for index in range(1, len(self.stages)):
            changed = changed_keys(self.space_cfgs[index - 1], self.space_cfgs[index])
            if self.carries_state(index) and changed:
                raise DartsError(f"strategy.stages[{index}] carries the previous stage's state (carry: state) but "
                                 f"changes the space ({', '.join(changed)}): a supernet of another shape cannot "
                                 "take over the old one's weights; set carry: none on that stage (a fresh "
                                 "supernet) or drop its space overrides")
        first_keep = self.stages[0].keep_ops if self.stages else None
        widths = {len(ops) for rows in build_space(self.space_cfgs[0]).edge_ops().values() for ops in rows}
        if first_keep is not None and widths != {first_keep}:
            raise DartsError(f"strategy.stages[0].keep_ops={first_keep}, but the configured space's edges hold "
                             f"{' or '.join(map(str, sorted(widths)))} ops: the first stage cannot prune (no "
                             "weights to rank yet); set it to null or to the op count")
        self.starts = stage_starts(self.stages)
        self.index = 0
        self.edge_ops: dict[str, EdgeOps] | None = None

    def carries_state(self, index: int) -> bool:
        """Whether stage ``index`` takes over the previous stage's state (``carry: state``)."""
        return index > 0 and (self.stages[index].carry or self.strategy.carry) == "state"

    def schedule_epochs(self, index: int) -> int:
        """The epochs of the weight schedule stage ``index`` runs under: from the last stage at or
        before it that starts afresh (the first, or one that carries ``none``) up to the next such."""
        if not self.stages:
            return self.epochs
        first = max(i for i in range(index + 1) if not self.carries_state(i))
        last = next((i for i in range(index + 1, len(self.stages)) if not self.carries_state(i)), len(self.stages))
        return sum(stage.epochs for stage in self.stages[first:last])

    def enter(self, index: int, edge_ops: dict[str, EdgeOps] | None) -> SearchSpace:
        """Stage ``index`` from now on: the strategy takes its options (before its supernet is built);
        returns the stage's space (its overrides, its edges' op lists)."""
        self.index, self.edge_ops = index, edge_ops
        if self.stages:   # a staged strategy without a schedule keeps its own options
            self.strategy.enter_stage(index, self.starts[index])
        return stage_space(self.space_cfgs[index], edge_ops)

    def ends_stage(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` is the last of a stage that another stage follows."""
        return epoch + 1 in self.starts[1:]

    def kept_ops(self, space: SearchSpace) -> Kept:
        """Per cell type and edge the columns the next stage keeps: its ``keep_ops`` by the strategy's
        pruning weights and rule (``none`` first where the stage says so), or every column where the
        stage keeps the op count."""
        stage = self.stages[self.index + 1]
        weights = self.strategy.pruning_weights()
        return {cell: kept_columns(weights[cell], stage.keep_ops, self.strategy.pruning, rows, stage.drop_none_first)
                if stage.keep_ops is not None else [list(range(len(ops))) for ops in rows]
                for cell, rows in space.edge_ops().items()}

    def state(self) -> dict:
        edge_ops = None if self.edge_ops is None else {cell: [list(ops) for ops in rows]
                                                       for cell, rows in self.edge_ops.items()}
        return {"index": self.index, "edge_ops": edge_ops}


def edge_ops_of(state: dict) -> dict[str, EdgeOps] | None:
    """The pruned per-edge op lists of a :meth:`StagePlan.state`."""
    rows = state.get("edge_ops")
    return None if rows is None else {cell: tuple(tuple(ops) for ops in edges) for cell, edges in rows.items()}
