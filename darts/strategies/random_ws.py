"""Random search with weight sharing (Li & Talwalkar, UAI 2019), as liamcli/randomNAS_release runs it.

Training (``benchmarks/cnn/darts/darts_wrapper_discrete.py`` ``train_batch``, lines 134-178): every
step samples one architecture (``sample_arch``, lines 258-272) and takes an SGD step on a weight batch
with the supernet's ``discrete=True`` forward, whose mixing weights are the one-hot rows of that
architecture (``get_weights_from_arch``, lines 227-251). Their forward (liamcli/darts
``cnn/model_search.py`` ``MixedOp.forward``, line 22) runs every op of every edge and multiplies the
unsampled ones by 0, so every BatchNorm's running statistics move every step and every weight gets a
(zero) gradient, through which weight decay and momentum still move it: ``forward: full`` does that;
``forward: sampled`` runs only the sampled ops (faster; the unsampled ops' weights and statistics
rest). There are no alphas and no alpha optimiser.

What a random cell is: the space's ``random_architecture`` picks the edges (DARTS space: two distinct
inputs per node, uniformly among its i+2, their ``np.random.choice(range(i+2), 2, replace=False)``)
and ``sample_none`` the op of each kept edge: ``true`` uniformly over all of the edge's ops, ``none``
included, as theirs (``np.random.choice(range(num_ops), 4)`` over the 8 PRIMITIVES); ``false`` over
the ops other than ``none``; ``auto`` keeps the space's own draw (NAS-Bench-201: every op, ``none``
included, as AutoDL-Projects' ``random_genotype``; DARTS space: no ``none``).

Selection (``searchers/random_weight_share.py`` ``get_eval_arch``, lines 81-115, and ``evaluate``,
wrapper lines 180-219): ``num_candidates`` (theirs 1000) fresh architectures, each scored with the
shared weights on the next ``eval_batches`` (theirs 10) batches of the alpha split, the stream
continuing from candidate to candidate, with the model in eval mode (``bn: running``; ``bn: batch``
scores with batch statistics and leaves the running ones as they were); ranked by ``metric``
(theirs: top-1 error, ascending, stable: ties to the earlier candidate; here accuracy ties go to the
lower loss first). The best ``top_k`` (theirs 10) are scored again on ``rescore_batches`` batches
(theirs ``len(valid_queue)``: the whole validation split) and re-ranked; the best of them wins. Of
their ``max(1, B / 10000)`` rounds the script keeps the first (``main``: ``archs[0][0]``): one round here.
AutoDL-Projects' NAS-Bench-201 RANDOM-NAS (``exps/NAS-Bench-201-algos/RANDOM-NAS.py``
``search_find_best``) is ``top_k: 0`` with one batch per candidate, ranked every epoch.

Deviations, each stated: the batches come from the engine's alpha stream (search batch size, the
training augmentation, as their ``valid_queue`` over ``train_data``; AutoDL scores on 512 unaugmented
images); ``rescore_batches: null`` means as many batches as an epoch has weight steps, which is the
whole alpha split at ``train_portion`` 0.5 (both halves have the same size; theirs is one batch more,
the last one partial). Where the space's genotype cannot hold ``none`` (DARTS: a kept edge is never
``none``) the result is the best-ranked candidate the space can write as a genotype; the ranking
itself keeps every candidate. Before the first ranking, evaluation and the genotype use a fixed
placeholder cell (the space's draw with seed 0): theirs ranks only after training (``rank_every: null``).
"""
from __future__ import annotations

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

FORWARD_MODES = ("full", "sampled")
BN_MODES = ("running", "batch")
SAMPLE_NONE = ("auto", True, False)


class RankingState:
    """The checkpointed part of selection: the last ranking's candidates, best first."""

    def __init__(self, strategy: "RandomWS"):
        self.strategy = strategy

    def state_dict(self) -> dict:
        return {"ranked": self.strategy.ranked}

    def load_state_dict(self, state: dict) -> None:
        self.strategy.ranked = list(state["ranked"])


def positive_int(option: str, value, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        least = "a non-negative" if allow_zero else "a positive"
        raise DartsError(f"strategy.{option} must be {least} integer, got {value!r}")
    return value


def choice(option: str, value, valid: tuple):
    if value not in valid:
        raise DartsError(f"unknown strategy.{option} {value!r}; valid choices: {', '.join(map(str, valid))}")
    return value


@STRATEGIES.register("random_ws")
class RandomWS(DARTS):
    """num_candidates: architectures scored in the first pass. eval_batches: alpha batches each is scored on.
    top_k: the best of the first pass scored again on rescore_batches batches (0: no second pass;
    rescore_batches null: an epoch's worth). rank_every: epochs between rankings (null: after the last
    epoch only; the last epoch always ranks). metric: accuracy | loss. sample_none: auto | true | false.
    forward: full | sampled (training forward). bn: running | batch (BatchNorm while scoring)."""

    name = "random_ws"
    learns_architecture = False   # it samples cells and ranks them; no step descends an architecture loss
    # The cell spaces whose supernets run one-hot EdgeWeights (the sampled cell): not the recurrent one.
    spaces = ("darts", "nb201")

    def __init__(self, num_candidates: int = 1000, eval_batches: int = 10, top_k: int = 10,
                 rescore_batches: int | None = None, rank_every: int | None = None, metric: str = "accuracy",
                 sample_none="auto", forward: str = "full", bn: str = "running"):
        super().__init__(order=1)
        self.metric = check_metric(metric)
        self.num_candidates = positive_int("num_candidates", num_candidates)
        self.eval_batches = positive_int("eval_batches", eval_batches)
        self.top_k = positive_int("top_k", top_k, allow_zero=True)
        self.rescore_batches = None if rescore_batches is None else positive_int("rescore_batches", rescore_batches)
        self.rank_every = None if rank_every is None else positive_int("rank_every", rank_every)
        self.sample_none = choice("sample_none", sample_none, SAMPLE_NONE)
        self.forward_mode = choice("forward", forward, FORWARD_MODES)
        self.bn = choice("bn", bn, BN_MODES)
        self.generator = torch.Generator()
        self.ranked: list[Architecture] = []   # the last ranking's candidates, best first
        self.alpha_stream: Iterator[Batch] | None = None

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
        self.op_columns = self.edge_op_columns(space)
        if not any(self.primitives[k] != "none" for k in space.random_op_choices()):
            raise DartsError("strategy random_ws needs an op other than 'none' in space.primitives")
        self.generator.manual_seed(seed_from_global_rng())

    def edge_op_columns(self, space: SearchSpace) -> dict[str, list[list[int]]] | None:
        """{cell: per edge the op columns a kept edge draws from}; None: the space's own draw (auto)."""
        if self.sample_none == "auto":
            return None
        return {cell: [[k for k, name in enumerate(ops) if self.sample_none or name != "none"] for ops in edges]
                for cell, edges in space.edge_ops().items()}

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
    def draw(self) -> Architecture:
        """One random architecture: the space's edges, each kept edge's op as ``sample_none`` says."""
        architecture = self.space.random_architecture(self.generator)
        if self.op_columns is None:
            return architecture
        redrawn = {}
        for cell, active in architecture.items():
            columns = self.op_columns[cell]
            redrawn[cell] = [None if op is None else
                             columns[edge][int(torch.randint(len(columns[edge]), (), generator=self.generator))]
                             for edge, op in enumerate(active)]
        return redrawn

    def sampled_weights(self, architecture: Architecture, run_all: bool = False) -> ArchWeights:
        """The one-hot weights (edges, ops) of ``architecture`` per cell; with ``run_all`` every op of
        every edge runs (their ``discrete=True`` forward), else only the sampled ones."""
        device = self.runtime.device
        return {cell: EdgeWeights(one_hot_rows(active, len(self.primitives)).to(device, non_blocking=True),
                                  None if run_all else active)
                for cell, active in architecture.items()}

    def forward_weights(self) -> ArchWeights:
        """A fresh random architecture for a training forward that ``step()`` did not prepare."""
        return self.sampled_weights(self.draw(), run_all=self.forward_mode == "full")

    def placeholder(self) -> Architecture:
        """The fixed cell evaluated before any ranking, from its own generator (the training stream is left alone)."""
        return self.space.random_architecture(torch.Generator().manual_seed(0))

    def chosen(self) -> Architecture:
        """The best-ranked candidate the space can write as a genotype (the placeholder before any ranking)."""
        for candidate in self.ranked:
            if self.expressible(candidate):
                return candidate
        return self.placeholder()

    def expressible(self, architecture: Architecture) -> bool:
        try:
            self.space.architecture_genotype(architecture)
        except DartsError:
            return False
        return True

    def eval_arch_weights(self) -> ArchWeights:
        return self.sampled_weights(self.chosen())

    def hessian_objective(self, batch: Batch):
        return None  # no architecture parameters to take a Hessian in

    # -- training ----------------------------------------------------------------------------------
    def step(self, train_batch: Batch, alpha_batches: Iterator[Batch], epoch: int) -> dict[str, torch.Tensor]:
        self.alpha_stream = alpha_batches   # what rank() scores on; no alpha batch is taken here
        return self.weight_step(train_batch, arch=self.forward_weights())

    def end_epoch(self, epoch: int) -> None:
        self.scheduler.after_epoch()
        if epoch + 1 == self.epochs or (self.rank_every is not None and (epoch + 1) % self.rank_every == 0):
            self.rank()

    # -- selection ------------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, candidates: list[Architecture], batches_each: int) -> tuple[list[float], list[float]]:
        """Top-1 accuracy and mean loss of each candidate on its own next ``batches_each`` alpha batches
        (one host copy for all of them; under DDP the mean over the ranks' shards)."""
        if self.alpha_stream is None:
            raise DartsError("random_ws scores architectures on the alpha batches step() is handed; "
                             "no step has run yet")
        was_training = self.model.training
        self.model.train(self.bn == "batch")
        sums = []
        try:
            with preserved_bn_stats(self.model):
                for candidate in candidates:
                    arch = self.sampled_weights(candidate)
                    loss_sum = correct = count = 0.0
                    for _ in range(batches_each):
                        inputs, targets = next(self.alpha_stream)
                        loss, logits = self.loss((inputs, targets), arch=arch)
                        loss_sum = loss_sum + loss.float() * targets.shape[0]
                        correct = correct + (logits.argmax(1) == targets).sum().float()
                        count += targets.shape[0]
                    sums.append(torch.stack([loss_sum / count, correct / count]))
        finally:
            self.model.train(was_training)
        losses, accuracies = self.runtime.dist.average_tensors([torch.stack(sums, dim=1)])[0].cpu().tolist()
        return accuracies, losses

    def rank(self) -> dict[str, list[float]]:
        """Score ``num_candidates`` fresh architectures, re-score the best ``top_k`` and rank: the
        re-scored ones first, in their new order, then the rest in first-pass order. Returns the
        first-pass and second-pass scores (second pass: in the order of ``first_order[:top_k]``)."""
        candidates = [self.draw() for _ in range(self.num_candidates)]
        accuracies, losses = self.score(candidates, self.eval_batches)
        order = ranking_order(accuracies, losses, self.metric)
        top = order[:self.top_k]
        scores = {"accuracies": accuracies, "losses": losses, "first_order": order,
                  "rescored_accuracies": [], "rescored_losses": []}
        if top:
            rescore_batches = self.rescore_batches or self.steps_per_epoch
            top_acc, top_loss = self.score([candidates[i] for i in top], rescore_batches)
            top = [top[i] for i in ranking_order(top_acc, top_loss, self.metric)]   # stable: first-pass order
            scores.update(rescored_accuracies=top_acc, rescored_losses=top_loss)
        self.ranked = [candidates[i] for i in top + order[len(top):]]
        return scores

    @property
    def winner(self) -> Architecture | None:
        return self.ranked[0] if self.ranked else None

    def genotype(self, max_skip_connects: int | None = None, budget=None):
        """The best-ranked candidate that the space can express, with at most ``max_skip_connects``
        skip connections in its normal cell and, under a ``budget``, a final network that meets it."""
        if not self.ranked:
            return self.space.architecture_genotype(self.placeholder())
        for candidate in self.ranked:
            if not self.expressible(candidate):
                continue
            genotype = self.space.architecture_genotype(candidate)
            if max_skip_connects is not None and normal_cell_counts(genotype)["skip_connects"] > max_skip_connects:
                continue
            if budget is None or budget.admits(genotype):
                return genotype
        raise DartsError(f"none of the {len(self.ranked)} ranked random_ws candidates is a genotype of the "
                         f"{self.space.name} space with at most {max_skip_connects} skip connections in its "
                         f"normal cell{'' if budget is None else ' whose final network meets ' + budget.text()} "
                         "(selection.max_skip_connects; resource.max_*; strategy.sample_none, strategy.num_candidates)")

    def mixing_weights(self) -> dict[str, torch.Tensor]:
        """Uniform over the ops a kept edge draws from: the distribution each kept edge samples from."""
        weights = {}
        for cell, (edges, ops) in self.space.arch_shapes().items():
            weights[cell] = torch.zeros(edges, ops, dtype=torch.float64)
            for edge in range(edges):
                columns = (self.op_columns[cell][edge] if self.op_columns is not None
                           else self.space.random_op_choices())
                weights[cell][edge, columns] = 1.0 / len(columns)
        return weights
