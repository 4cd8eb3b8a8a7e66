"""DARTS-PT (Wang et al., ICLR 2021): perturbation-based architecture selection on a trained supernet.

What is decided and how, with no engine in it (``darts.engine.projection`` runs it as a task):

* :class:`CellProjection` / :class:`Projection` hold the decisions of every cell type (an op per
  decided edge, the edges a topology decision removed) and are the transform a strategy is
  constrained with (``strategy.constrain(projection)``): every forward weight it builds then has
  decided edges one-hot on their op and removed edges off, the others as the strategy made them.
  As ``get_projected_weights`` in ruocwang/darts-pt sota/cnn/model_search_darts_proj.py and
  nasbench201/search_model_darts_proj.py (``proj_weights`` one-hot rows, ``candidate_flags``).
* :func:`supernet_score` is their ``infer(proj_queue, model, _eval=False, weights_dict=...)``: top-1
  and loss of the supernet under given weights on the alpha split, train mode, no gradients.
* :func:`op_decision` is ``project_op`` (sota/cnn/projection.py, nasbench201/projection.py): on one
  edge, each op's mixing weight zeroed in turn; the op whose removal gives the lowest accuracy
  (``metric=accuracy``; ``loss``: the highest loss) is kept, ties to the first op.
* :func:`topology_decision` is ``project_edge``: while a node has more than two inputs, each one is
  zeroed in turn and the one whose removal leaves the highest accuracy (``loss``: the lowest loss)
  is dropped, ties to the later edge (their ``not compare(crit, crit_extrema)``).
* :class:`Schedule` is ``pt_project``'s loop: a decision event (one decision per cell type, in
  ``cell_types`` order) at tuning epochs 0, interval, 2 interval, ... and the last one at the last
  tuning epoch; op decisions first (one per edge), then topology decisions (one per node with more
  than two inputs, DARTS space only); ``tune_epochs`` = interval (events - 1) + 1 as in sota/cnn
  (``proj_intv * num_projs + 1``: 81 epochs for 14 + 3 events at interval 5).

Deviations from their code, each on purpose:

* BN running statistics are restored after every scoring pass (theirs move in train mode but are
  read by nothing that decides); the decision is the same.
* Scores come from the alpha split without augmentation, in a fixed order (``alpha_eval_batches``);
  theirs draw the training augmentation anew each pass, so two ops are compared on other crops.
* The random edge (and node) comes from a seeded ``torch.Generator`` that is checkpointed, not the
  global NumPy stream, so a stopped selection resumes with the same draws.
* Where a genotype cannot hold ``none`` (the DARTS space: ``random_op_choices`` leaves it out) it is
  no candidate of an op decision: their DARTS space s5 (sota/cnn/spaces.py) has no ``none`` at all,
  and a kept ``none`` would turn into another op in the derived cell. It stays in the mixture of the
  undecided edges. In NAS-Bench-201 it is a candidate, as in theirs.
* Within one topology decision each round measures the removal of one edge from the node as it
  stands before the decision, as theirs does (an edge dropped in an earlier round is still in).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn as nn

from darts.distributed import Distributed
from darts.errors import DartsError
from darts.metrics import check_metric
from darts.spaces.base import skip_cap
from darts.spaces.mixed import ArchWeights
from darts.strategies.darts import preserved_bn_stats

EDGE_ORDERS = ("random",)
TOPOLOGY_CHOICES = ("auto", True, False)
# The spaces whose cells keep two inputs per node (the DARTS rule); NAS-Bench-201 keeps every edge.
TOPOLOGY_SPACES = ("darts",)
# Supernet strategies with no architecture weights to project: random_ws samples whole cells.
UNPROJECTABLE_STRATEGIES = ("random_ws",)

# (top-1 %, mean cross-entropy) of the supernet under some architecture weights.
Score = tuple[float, float]
Measure = Callable[[ArchWeights], Score]


@dataclass(frozen=True)
class Settings:
    """The ``selection`` config node of ``selection=darts_pt`` (conf/selection/darts_pt.yaml)."""

    metric: str
    interval: int
    tune_epochs: int | None
    lr_factor: float
    lr_min: float | None
    edge_order: str
    topology: str | bool
    update_alphas: bool
    eval_batch_size: int | None
    eval_max_batches: int | None
    seed: int | None
    max_skip_connects: int | None

    @classmethod
    def from_cfg(cls, cfg) -> "Settings":
        def positive(key, value, allow_none=False):
            if value is None and allow_none:
                return None
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DartsError(f"selection.{key} must be a positive integer{' or null' * allow_none}, got {value!r}")
            return value

        metric = cfg.get("metric", "accuracy")
        check_metric(metric)
        edge_order = cfg.get("edge_order", "random")
        if edge_order not in EDGE_ORDERS:
            raise DartsError(f"unknown selection.edge_order {edge_order!r}; valid choices: {', '.join(EDGE_ORDERS)}")
        topology = cfg.get("topology", "auto")
        if topology not in TOPOLOGY_CHOICES:
            raise DartsError(f"selection.topology must be auto, true or false, got {topology!r}")
        lr_factor = float(cfg.get("lr_factor", 0.1))
        if not lr_factor > 0:
            raise DartsError(f"selection.lr_factor must be positive, got {lr_factor}")
        lr_min = cfg.get("lr_min")
        seed = cfg.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise DartsError(f"selection.seed must be an integer or null (the run's seed), got {seed!r}")
        return cls(metric=metric, interval=positive("interval", cfg.get("interval", 5)),
                   tune_epochs=positive("tune_epochs", cfg.get("tune_epochs"), allow_none=True),
                   lr_factor=lr_factor, lr_min=None if lr_min is None else float(lr_min), edge_order=edge_order,
                   topology=topology, update_alphas=bool(cfg.get("update_alphas", True)),
                   eval_batch_size=positive("eval_batch_size", cfg.get("eval_batch_size"), allow_none=True),
                   eval_max_batches=positive("eval_max_batches", cfg.get("eval_max_batches"), allow_none=True),
                   seed=seed, max_skip_connects=skip_cap(cfg.get("max_skip_connects")))

    def topology_nodes(self, space_name: str, node_edges: Sequence[range]) -> list[int]:
        """The nodes that get a topology decision: those with more than two inputs, where it applies."""
        applies = space_name in TOPOLOGY_SPACES if self.topology == "auto" else bool(self.topology)
        return [node for node, edges in enumerate(node_edges) if applies and len(edges) > 2]


class Schedule:
    """When the decision events fall. ``events`` = edges + topology nodes (one decision per cell type
    each); event i < edges decides an op, the rest a node's inputs. Event i is made at the start of
    tuning epoch i * interval, the last one at the last epoch (``tune_epochs - 1``)."""

    def __init__(self, num_edges: int, num_nodes: int, interval: int, tune_epochs: int | None = None):
        self.num_edges, self.events, self.interval = num_edges, num_edges + num_nodes, interval
        shortest = interval * (self.events - 2) + 2 if self.events > 1 else 1
        self.epochs = tune_epochs if tune_epochs is not None else interval * (self.events - 1) + 1
        if self.epochs < shortest:
            raise DartsError(f"selection.tune_epochs={self.epochs} leaves no room for {self.events} decisions "
                             f"{interval} epochs apart, the last at the last epoch: use at least {shortest} (or null)")
        self.epoch_of = [i * interval for i in range(self.events - 1)] + [self.epochs - 1]

    def events_at(self, epoch: int) -> list[int]:
        return [event for event, at in enumerate(self.epoch_of) if at == epoch]

    def is_op_event(self, event: int) -> bool:
        return event < self.num_edges


class CellProjection:
    """The decisions of one cell type. ``ops[e]``: edge e's op column, None while undecided;
    ``removed[e]``: dropped by a topology decision; ``open_nodes``: nodes still to decide."""

    def __init__(self, node_edges: Sequence[range], topology_nodes: Sequence[int]):
        self.node_edges = [list(edges) for edges in node_edges]
        self.num_edges = self.node_edges[-1][-1] + 1
        self.ops: list[int | None] = [None] * self.num_edges
        self.removed = [False] * self.num_edges
        self.open_nodes = list(topology_nodes)
        self.version = 0      # bumped by every decision: the cached device masks follow it
        self._cache: dict = {}

    def undecided(self) -> list[int]:
        return [edge for edge, op in enumerate(self.ops) if op is None]

    def decide_op(self, edge: int, op: int) -> None:
        self.ops[edge] = op
        self.version += 1

    def keep_inputs(self, node: int, kept: Sequence[int]) -> None:
        for edge in self.node_edges[node]:
            if edge not in kept:
                self.removed[edge] = True
        self.open_nodes.remove(node)
        self.version += 1

    def masks(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """keep (edges, 1) bool: rows left as given; fixed (edges, k) in ``like``'s dtype and device:
        one-hot rows of decided edges, zero rows of removed ones. Built once per decision."""
        key = (like.device, like.dtype, like.shape[-1])
        cached = self._cache.get(key)
        if cached is None or cached[0] != self.version:
            keep = torch.tensor([op is None and not gone for op, gone in zip(self.ops, self.removed)])
            fixed = torch.zeros(self.num_edges, like.shape[-1], dtype=like.dtype)
            for edge, op in enumerate(self.ops):
                if op is not None and not self.removed[edge]:
                    fixed[edge, op] = 1
            cached = (self.version, keep[:, None].to(like.device), fixed.to(like.device))
            self._cache[key] = cached
        return cached[1], cached[2]

    def project(self, weights: torch.Tensor) -> torch.Tensor:
        """(edges, k) -> (edges, k): decided rows one-hot, removed rows zero, the rest ``weights``'
        own values (and gradients)."""
        keep, fixed = self.masks(weights)
        return torch.where(keep, weights, fixed)

    def project_active(self, active: list[int | None] | None) -> list[int | None] | None:
        """A sampling strategy's op list with decided edges on their op and removed edges off."""
        if active is None:
            return None
        return [None if gone else (active[edge] if op is None else op)
                for edge, (op, gone) in enumerate(zip(self.ops, self.removed))]

    def state_dict(self) -> dict:
        return {"ops": list(self.ops), "removed": list(self.removed), "open_nodes": list(self.open_nodes)}

    def load_state_dict(self, state: dict) -> None:
        if len(state["ops"]) != self.num_edges:
            raise DartsError(f"a projection of {len(state['ops'])} edges does not fit this cell of {self.num_edges}")
        self.ops, self.removed = list(state["ops"]), list(state["removed"])
        self.open_nodes = list(state["open_nodes"])
        self.version += 1


class Projection:
    """Every cell type's :class:`CellProjection`; called on architecture weights, it is the transform
    of ``strategy.constrain``: ``projection(arch) -> arch`` (cell types it does not hold pass through)."""

    def __init__(self, cell_types: Sequence[str], node_edges: Sequence[range], topology_nodes: Sequence[int]):
        self.cells = {cell: CellProjection(node_edges, topology_nodes) for cell in cell_types}

    def __call__(self, arch: ArchWeights) -> ArchWeights:
        projected = dict(arch)
        for cell, state in self.cells.items():
            if cell in arch:
                edge_weights = arch[cell]
                projected[cell] = edge_weights._replace(weights=state.project(edge_weights.weights),
                                                        active=state.project_active(edge_weights.active))
        return projected

    def project_weights(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{cell: (edges, k)} mixing weights (what a genotype is derived from), projected."""
        return {cell: self.cells[cell].project(w) if cell in self.cells else w for cell, w in weights.items()}

    def state_dict(self) -> dict:
        return {cell: state.state_dict() for cell, state in self.cells.items()}

    def load_state_dict(self, state: dict) -> None:
        for cell, cell_state in self.cells.items():
            cell_state.load_state_dict(state[cell])


# -- perturbations and scores ---------------------------------------------------------------------
def without_op(arch: ArchWeights, cell: str, edge: int, op: int) -> ArchWeights:
    """``arch`` with op column ``op`` of ``edge`` zeroed (the other ops keep their weights, not
    renormalised, as their ``proj_mask``)."""
    weights = arch[cell].weights
    mask = torch.ones_like(weights)
    mask[edge, op] = 0
    return {**arch, cell: arch[cell]._replace(weights=weights * mask)}


def without_edge(arch: ArchWeights, cell: str, edge: int) -> ArchWeights:
    """``arch`` with ``edge`` off: a zero row (their ``weights[eid].data.fill_(0)``) and, for a
    sampling strategy's op list, no op run there."""
    weights, active = arch[cell].weights, arch[cell].active
    mask = torch.ones_like(weights)
    mask[edge] = 0
    if active is not None:
        active = [None if index == edge else op for index, op in enumerate(active)]
    return {**arch, cell: arch[cell]._replace(weights=weights * mask, active=active)}


@torch.no_grad()
def supernet_score(model: nn.Module, forward: Callable, arch: ArchWeights, batches: Iterable,
                   max_batches: int | None = None, dist: Distributed | None = None) -> Score:
    """(top-1 %, mean loss) of ``forward(x, arch)`` over ``batches`` (the first ``max_batches``),
    in train mode (batch statistics) with ``model``'s BN running statistics left as they were;
    under DDP each rank scores its shard and the sums are added."""
    criterion = nn.CrossEntropyLoss(reduction="sum")
    was_training = model.training
    model.train()
    loss_sum = correct = count = None
    try:
        with preserved_bn_stats(model):
            for index, (inputs, targets) in enumerate(batches):
                if max_batches is not None and index >= max_batches:
                    break
                logits = forward(inputs, arch)
                logits = logits[0] if isinstance(logits, tuple) else logits
                batch = (criterion(logits.float(), targets), (logits.argmax(1) == targets).sum().float(),
                         torch.full((), float(targets.shape[0]), device=targets.device))
                loss_sum, correct, count = batch if count is None else (loss_sum + batch[0], correct + batch[1],
                                                                        count + batch[2])
    finally:
        model.train(was_training)
    if count is None:
        raise DartsError("the alpha split gave no batch to score the projection on")
    sums = (dist or Distributed()).sum_metrics({"loss": loss_sum, "correct": correct, "count": count})
    total = float(sums["count"])
    return 100.0 * float(sums["correct"]) / total, float(sums["loss"]) / total


def _worst(scores: Sequence[Score], metric: str) -> int:
    """The index whose removal hurts most: lowest accuracy / highest loss, ties to the first."""
    if metric == "accuracy":
        return min(range(len(scores)), key=lambda i: (scores[i][0], i))
    return min(range(len(scores)), key=lambda i: (-scores[i][1], i))


def _least_harmful(scores: Sequence[Score], metric: str) -> int:
    """The index whose removal hurts least: highest accuracy / lowest loss, ties to the last."""
    if metric == "accuracy":
        return max(range(len(scores)), key=lambda i: (scores[i][0], i))
    return max(range(len(scores)), key=lambda i: (-scores[i][1], i))


def op_decision(measure: Measure, arch: ArchWeights, cell: str, edge: int, ops: Sequence[int],
                metric: str) -> tuple[int, list[Score]]:
    """The op column (one of ``ops``) to keep on ``edge`` of ``cell`` and the score with each of
    ``ops`` removed, in that order."""
    scores = [measure(without_op(arch, cell, edge, op)) for op in ops]
    return ops[_worst(scores, metric)], scores


def topology_decision(measure: Measure, arch: ArchWeights, cell: str, edges: Sequence[int],
                      metric: str) -> tuple[list[int], list[list[tuple[int, Score]]]]:
    """The two inputs of a node (``edges``) to keep and, per round, each candidate's score when removed."""
    remaining, rounds = list(edges), []
    while len(remaining) > 2:
        scored = [(edge, measure(without_edge(arch, cell, edge))) for edge in remaining]
        rounds.append(scored)
        remaining.remove(scored[_least_harmful([score for _, score in scored], metric)][0])
    return remaining, rounds


def draw(candidates: Sequence[int], generator: torch.Generator) -> int:
    """One of ``candidates`` uniformly (their ``np.random.choice(remain_eids)``)."""
    if not candidates:
        raise DartsError("no undecided edge or node is left to project")
    return candidates[int(torch.randint(len(candidates), (), generator=generator))]
