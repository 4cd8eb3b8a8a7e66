"""Random search with weight sharing (Li & Talwalkar, 2019).

Training: every step samples one architecture uniformly from the cell space
and takes a weight step with only its ops running. The space defines what a
random cell is (``random_architecture``, ``architecture_genotype``): in the
DARTS space, for each intermediate node, two distinct input edges uniformly
among its i+2 and one non-``none`` op for each; the node's other edges are
switched off (their ``active`` entry is None and their weight row zero),
exactly the cell the genotype describes. In NAS-Bench-201, one op per edge
drawn from all ops. There are no alphas and no alpha optimiser.

Selection: ``num_candidates`` random architectures are scored with the shared
weights on the same few alpha-split batches and the best one is the genotype:
``metric=accuracy`` (the authors' criterion) ranks by top-1 with ties to the
lower loss, ``metric=loss`` by mean cross-entropy; remaining ties go to the
earlier candidate. With a cap on skip connections (``genotype(max_skip_connects)``)
the best candidate within the cap wins.
BatchNorm runs on batch statistics there (the running statistics mix every
architecture sampled in training) and its running buffers are left untouched.

Where the ranking batches come from: the engine hands alpha batches only to
``step()``, not to ``genotype()``. So the strategy takes one alpha batch in
each of the last ``eval_batches`` steps of every epoch into a small ring buffer
(it never trains on them) and ranks on the buffer. Ranking runs in
``end_epoch`` every ``rank_every`` epochs and after the last one, so the
engine's evaluation that follows runs the freshly chosen architecture, and
``genotype()`` returns the cached choice. The buffer and the choice are part of
the checkpoint; the sampling generator too.
"""
from __future__ import annotations

import collections
from typing import Iterator

import torch
import torch.nn as nn

from darts.diagnostics import normal_cell_counts
from darts.errors import DartsError
from darts.metrics import check_metric, ranking_order
from darts.runtime import Runtime
from darts.spaces.base import Architecture, SearchSpace
from darts.spaces.mixed import ArchWeights, EdgeWeights
from darts.strategies.base import STRATEGIES, Batch, GeneratorState, one_hot_rows, seed_from_global_rng
from darts.strategies.darts import DARTS, preserved_bn_stats
from darts.strategies.optim import WeightSchedule, weight_optimizer


class RankingState:
    """The checkpointed part of selection: the buffered alpha batches and the ranked architectures."""

    def __init__(self, strategy: "RandomWS"):
        self.strategy = strategy

    def state_dict(self) -> dict:
        return {"alpha_batches": [list(batch) for batch in self.strategy.ranking_batches],
                "ranked": self.strategy.ranked, "step_in_epoch": self.strategy.step_in_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.strategy.ranking_batches.clear()
        self.strategy.ranking_batches.extend(tuple(batch) for batch in state["alpha_batches"])
        self.strategy.ranked = list(state["ranked"])
        # A checkpoint taken mid-epoch (at a stop signal) resumes at that step of the epoch.
        self.strategy.step_in_epoch = int(state.get("step_in_epoch", 0))


@STRATEGIES.register("random_ws")
class RandomWS(DARTS):
    """num_candidates: random architectures ranked at selection.
    eval_batches: alpha batches (the ring buffer's length) each candidate is scored on.
    rank_every: epochs between rankings (the last epoch always ranks).
    metric: accuracy | loss, what ranks the candidates (``selection.metric``)."""

    name = "random_ws"

    def __init__(self, num_candidates: int = 100, eval_batches: int = 4, rank_every: int = 1,
                 metric: str = "accuracy"):
        super().__init__(order=1)
        self.metric = check_metric(metric)
        for option, value in (("num_candidates", num_candidates), ("eval_batches", eval_batches),
                              ("rank_every", rank_every)):
            if not isinstance(value, int) or value < 1:
                raise DartsError(f"strategy.{option} must be a positive integer, got {value!r}")
        self.num_candidates = num_candidates
        self.eval_batches = eval_batches
        self.rank_every = rank_every
        self.generator = torch.Generator()
        self.ranking_batches: collections.deque[Batch] = collections.deque(maxlen=eval_batches)
        self.ranked: list[Architecture] = []   # the last ranking's candidates, best first
        self.step_in_epoch = 0

    # -- construction ------------------------------------------------------------------------
    def setup(self, space: SearchSpace, model: nn.Module, optim_cfg, epochs: int, steps_per_epoch: int,
              runtime: Runtime) -> None:
        self.space = space
        self.model = model
        self.runtime = runtime
        runtime.prepare(model)
        # Eager, never compiled: the sampled op list decides which kernels run, so a compiled
        # model would recompile for every new architecture.
        self.forward = model
        self.weights = list(model.parameters())
        self.alphas = []
        w_cfg = optim_cfg.weights
        self.grad_clip = w_cfg.grad_clip
        self.w_optimizer = weight_optimizer(self.weights, w_cfg)
        self.scheduler = WeightSchedule(self.w_optimizer, w_cfg, epochs, steps_per_epoch)
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.primitives = list(space.primitives)
        self.op_choices = space.random_op_choices()
        if not any(self.primitives[k] != "none" for k in self.op_choices):
            raise DartsError("strategy random_ws needs an op other than 'none' in space.primitives")
        self.generator.manual_seed(seed_from_global_rng())

    def checkpointables(self) -> dict:
        return {"w_optimizer": self.w_optimizer, "scheduler": self.scheduler, "grad_scaler": self.runtime.scaler,
                "sampling_generator": GeneratorState(self.generator), "ranking": RankingState(self)}

    def learning_rates(self) -> dict[str, float]:
        return {"lr/weights": self.w_optimizer.param_groups[0]["lr"]}

    def arch_parameters(self) -> list[torch.Tensor]:
        return []

    def arch_record(self) -> dict[str, list]:
        return {}  # DARTS's reads the alphas this strategy does not have

    # -- architectures ------------------------------------------------------------------------
    def sampled_weights(self, architecture: Architecture) -> ArchWeights:
        """The one-hot weights (edges, ops) and op list per cell of ``architecture``."""
        device = self.runtime.device
        return {cell: EdgeWeights(one_hot_rows(active, len(self.primitives)).to(device, non_blocking=True), active)
                for cell, active in architecture.items()}

    def forward_weights(self) -> ArchWeights:
        """A fresh uniformly random architecture for a training forward that ``step()`` did not prepare."""
        return self.sampled_weights(self.space.random_architecture(self.generator))

    def eval_arch_weights(self) -> ArchWeights:
        """The ranked winner or, before any ranking, a fixed architecture from its own generator
        (the training stream is left alone)."""
        winner = self.ranked[0] if self.ranked else self.space.random_architecture(torch.Generator().manual_seed(0))
        return self.sampled_weights(winner)

    def hessian_objective(self, batch: Batch):
        return None  # no architecture parameters to take a Hessian in

    # -- training ----------------------------------------------------------------------------------
    def step(self, train_batch: Batch, alpha_batches: Iterator[Batch], epoch: int) -> dict[str, torch.Tensor]:
        # Only the last eval_batches steps of an epoch feed the buffer: earlier batches would be
        # pushed out of it before any ranking reads them.
        if self.step_in_epoch >= self.steps_per_epoch - self.eval_batches:
            self.ranking_batches.append(next(alpha_batches))
        self.step_in_epoch += 1
        return self.weight_step(train_batch, arch=self.sampled_weights(self.space.random_architecture(self.generator)))

    def end_epoch(self, epoch: int) -> None:
        self.step_in_epoch = 0   # reset here, not in start_epoch: a resumed epoch starts mid-way
        self.scheduler.after_epoch()
        if (epoch + 1) % self.rank_every == 0 or epoch + 1 == self.epochs:
            self.rank()

    # -- selection ------------------------------------------------------------------------------------
    @torch.no_grad()
    def rank(self) -> tuple[list[float], list[float]]:
        """Score ``num_candidates`` random architectures on the buffered batches and rank them.
        Returns the candidates' top-1 accuracies and mean losses (one host copy for all of them)."""
        if not self.ranking_batches:
            raise DartsError("random_ws ranks architectures on alpha batches taken in step(); "
                             "no step has run yet")
        candidates = [self.space.random_architecture(self.generator) for _ in range(self.num_candidates)]
        was_training = self.model.training
        self.model.train()  # batch statistics; see the module docstring
        loss_sums, correct_sums = [], []
        try:
            with preserved_bn_stats(self.model):
                for candidate in candidates:
                    arch = self.sampled_weights(candidate)
                    loss_sum, correct = 0.0, 0.0
                    for inputs, targets in self.ranking_batches:
                        loss, logits = self.loss((inputs, targets), arch=arch)
                        loss_sum = loss_sum + loss.float() * targets.shape[0]
                        correct = correct + (logits.argmax(1) == targets).sum().float()
                    loss_sums.append(loss_sum)
                    correct_sums.append(correct)
        finally:
            self.model.train(was_training)
        count = sum(targets.shape[0] for _, targets in self.ranking_batches)
        # Under DDP each rank scored its shard of the batches: the mean over ranks is the global score,
        # and every rank ranks the same way.
        scores = torch.stack([torch.stack(loss_sums), torch.stack(correct_sums)]) / count
        losses, accuracies = self.runtime.dist.average_tensors([scores])[0].cpu().tolist()
        self.ranked = [candidates[i] for i in ranking_order(accuracies, losses, self.metric)]
        return accuracies, losses

    @property
    def winner(self) -> Architecture | None:
        return self.ranked[0] if self.ranked else None

    def genotype(self, max_skip_connects: int | None = None):
        if not self.ranked:
            self.rank()
        for candidate in self.ranked:
            genotype = self.space.architecture_genotype(candidate)
            if max_skip_connects is None or normal_cell_counts(genotype)["skip_connects"] <= max_skip_connects:
                return genotype
        raise DartsError(f"none of the {len(self.ranked)} ranked random_ws candidates has at most "
                         f"{max_skip_connects} skip connections in its normal cell (selection.max_skip_connects)")

    def mixing_weights(self) -> dict[str, torch.Tensor]:
        """Uniform over the ops a random cell draws from: the distribution each kept edge samples from."""
        weights = {}
        for cell, (edges, ops) in self.space.arch_shapes().items():
            weights[cell] = torch.zeros(edges, ops, dtype=torch.float64)
            weights[cell][:, self.op_choices] = 1.0 / len(self.op_choices)
        return weights
