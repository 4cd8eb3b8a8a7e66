"""Random search with weight sharing (Li & Talwalkar, 2019).

Training: every step samples one architecture uniformly from the cell space
and takes a weight step with only its ops running. The supernet defines what a
random cell is (``random_architecture``, ``architecture_genotype``): in the
DARTS space, for each intermediate node, two distinct input edges uniformly
among its i+2 and one non-``none`` op for each; the node's other edges are
switched off (their ``active`` entry is None and their weight row zero),
exactly the cell the genotype describes. In NAS-Bench-201, one op per edge
drawn from all ops. The alphas are never used and there is no alpha optimiser.

Selection: ``num_candidates`` random architectures are scored with the shared
weights on the same few alpha-split batches (mean cross-entropy, lower is
better, ties to the earlier candidate) and the best one is the genotype.
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

from darts.errors import DartsError
from darts.genotypes import Genotype
from darts.runtime import Runtime
from darts.strategies.base import Batch, GeneratorState, register_strategy
from darts.strategies.darts import DARTS, preserved_bn_stats
from darts.strategies.gdas import cell_type_of, one_hot_rows, seed_from_global_rng
from darts.supernet import EdgeWeights

# One architecture: per cell, each edge's op index, or None for an edge that is off.
Architecture = dict[str, list[int | None]]


class RankingState:
    """The checkpointed part of selection: the buffered alpha batches and the chosen architecture."""

    def __init__(self, strategy: "RandomWS"):
        self.strategy = strategy

    def state_dict(self) -> dict:
        return {"alpha_batches": [list(batch) for batch in self.strategy.ranking_batches],
                "winner": self.strategy.winner, "step_in_epoch": self.strategy.step_in_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.strategy.ranking_batches.clear()
        self.strategy.ranking_batches.extend(tuple(batch) for batch in state["alpha_batches"])
        self.strategy.winner = state["winner"]
        # A checkpoint taken mid-epoch (at a stop signal) resumes at that step of the epoch.
        self.strategy.step_in_epoch = int(state.get("step_in_epoch", 0))


@register_strategy("random_ws")
class RandomWS(DARTS):
    """num_candidates: random architectures ranked at selection.
    eval_batches: alpha batches (the ring buffer's length) each candidate is scored on.
    rank_every: epochs between rankings (the last epoch always ranks)."""

    def __init__(self, num_candidates: int = 100, eval_batches: int = 4, rank_every: int = 1):
        super().__init__(order=1)
        for option, value in (("num_candidates", num_candidates), ("eval_batches", eval_batches),
                              ("rank_every", rank_every)):
            if not isinstance(value, int) or value < 1:
                raise DartsError(f"strategy.{option} must be a positive integer, got {value!r}")
        self.num_candidates = num_candidates
        self.eval_batches = eval_batches
        self.rank_every = rank_every
        self.generator = torch.Generator()
        self.ranking_batches: collections.deque[Batch] = collections.deque(maxlen=eval_batches)
        self.winner: Architecture | None = None
        self.pending: Architecture = {}
        self.step_in_epoch = 0

    # -- construction ------------------------------------------------------------------------
    def setup(self, model: nn.Module, optim_cfg, epochs: int, steps_per_epoch: int, runtime: Runtime) -> None:
        self.model = model
        self.runtime = runtime
        runtime.prepare(model)
        # Eager, never compiled: the sampled op list decides which kernels run, so a compiled
        # model would recompile for every new architecture.
        self.forward = model
        self.weights = model.weight_parameters()
        self.alphas = model.arch_parameters()  # unused; weight_step clears any gradient they get
        w_cfg = optim_cfg.weights
        self.grad_clip = w_cfg.grad_clip
        self.w_optimizer = torch.optim.SGD(self.weights, lr=w_cfg.lr, momentum=w_cfg.momentum,
                                           weight_decay=w_cfg.weight_decay, foreach=True)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_optimizer, T_max=epochs,
                                                                    eta_min=w_cfg.lr_min)
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.primitives = list(model.primitives)
        self.op_choices = model.random_op_choices()
        if not any(self.primitives[k] != "none" for k in self.op_choices):
            raise DartsError("strategy random_ws needs an op other than 'none' in space.primitives")
        self.generator.manual_seed(seed_from_global_rng())
        model.edge_weighting = self.sampled_weighting

    def checkpointables(self) -> dict:
        return {"w_optimizer": self.w_optimizer, "scheduler": self.scheduler, "grad_scaler": self.runtime.scaler,
                "sampling_generator": GeneratorState(self.generator), "ranking": RankingState(self)}

    def learning_rates(self) -> dict[str, float]:
        return {"lr/weights": self.w_optimizer.param_groups[0]["lr"]}

    # -- architectures ------------------------------------------------------------------------
    def sample_architecture(self, generator: torch.Generator) -> Architecture:
        """A uniformly random cell per cell type, as the supernet's space defines one."""
        return self.model.random_architecture(generator)

    def architecture_genotype(self, architecture: Architecture) -> Genotype:
        """The genotype of a sampled architecture."""
        return self.model.architecture_genotype(architecture)

    def sampled_weighting(self, alphas: torch.Tensor) -> EdgeWeights:
        """The one-hot weights (edges, ops) and op list of the architecture this forward runs:
        the pending sample in training, else the chosen architecture."""
        cell = cell_type_of(self.model, alphas)
        active = self.pending.pop(cell, None)
        if active is None:
            # The forward of an evaluation: the ranked winner, or before any ranking a fixed
            # architecture from its own generator (the training stream is left alone).
            architecture = self.winner or self.sample_architecture(torch.Generator().manual_seed(0))
            active = architecture[cell]
        weights = one_hot_rows(active, alphas.shape[-1]).to(alphas.device, alphas.dtype, non_blocking=True)
        return EdgeWeights(weights, active)

    # -- training ----------------------------------------------------------------------------------
    def step(self, train_batch: Batch, alpha_batches: Iterator[Batch], epoch: int) -> dict[str, torch.Tensor]:
        # Only the last eval_batches steps of an epoch feed the buffer: earlier batches would be
        # pushed out of it before any ranking reads them.
        if self.step_in_epoch >= self.steps_per_epoch - self.eval_batches:
            self.ranking_batches.append(next(alpha_batches))
        self.step_in_epoch += 1
        self.pending = self.sample_architecture(self.generator)
        return self.weight_step(train_batch)

    def end_epoch(self, epoch: int) -> None:
        self.step_in_epoch = 0   # reset here, not in start_epoch: a resumed epoch starts mid-way
        self.scheduler.step()
        if (epoch + 1) % self.rank_every == 0 or epoch + 1 == self.epochs:
            self.rank()

    # -- selection ------------------------------------------------------------------------------------
    @torch.no_grad()
    def rank(self) -> list[float]:
        """Score ``num_candidates`` random architectures on the buffered batches; keep the best.
        Returns the candidates' mean losses (one host copy for all of them)."""
        if not self.ranking_batches:
            raise DartsError("random_ws ranks architectures on alpha batches taken in step(); "
                             "no step has run yet")
        candidates = [self.sample_architecture(self.generator) for _ in range(self.num_candidates)]
        was_training = self.model.training
        self.model.train()  # batch statistics; see the module docstring
        scores = []
        try:
            with preserved_bn_stats(self.model):
                for candidate in candidates:
                    loss_sum, count = 0.0, 0
                    for inputs, targets in self.ranking_batches:
                        self.pending = dict(candidate)
                        loss, _ = self.loss((inputs, targets))
                        loss_sum = loss_sum + loss.float() * targets.shape[0]
                        count += targets.shape[0]
                    scores.append(loss_sum / count)
        finally:
            self.pending = {}
            self.model.train(was_training)
        # Under DDP each rank scored its shard of the batches: the mean over ranks is the global score,
        # and every rank picks the same winner.
        losses = self.runtime.dist.average_tensors([torch.stack(scores)])[0].cpu().tolist()
        best = min(range(len(losses)), key=lambda i: losses[i])  # ties: the earlier candidate
        self.winner = candidates[best]
        return losses

    def genotype(self) -> Genotype:
        if self.winner is None:
            self.rank()
        return self.architecture_genotype(self.winner)

    def arch_weights(self) -> dict[str, torch.Tensor]:
        """Uniform over the ops a random cell draws from: the distribution each kept edge samples from."""
        weights = {}
        for cell, alphas in self.model.cell_alphas().items():
            weights[cell] = torch.zeros(len(alphas), len(self.primitives))
            weights[cell][:, self.op_choices] = 1.0 / len(self.op_choices)
        return weights
