"""P-DARTS (Chen, Xie, Wu, Tian, ICCV 2019): progressive search, stages of growing depth with shrinking
op sets, as the authors' code runs it (chenxin061/pdarts, ``train_search.py`` and ``model_search.py``;
line numbers of commit b880e87).

* Stages (train_search.py lines 109-125): three, each a new ``Network`` of ``layers + add_layers[sp]``
  cells (5, 11, 17: ``--layers 5``, ``add_layers = [0, 6, 12]``) and ``init_channels`` 16, over the
  ops that survived: 8, then 5, then 3 per edge (``num_to_keep = [5, 3, 1]``,
  ``num_to_drop = [3, 2, 2]``). Here: :mod:`darts.stages` with ``carry: none`` (this strategy's
  default), each stage's ``space: {layers: ...}`` and ``keep_ops``.
* Nothing carries over but the surviving ops (lines 124-141): fresh weights, fresh alphas
  ``1e-3 * randn`` over the surviving ops (model_search.py lines 154-162), a new SGD, a new Adam and a
  new ``CosineAnnealingLR(optimizer, args.epochs)`` over the stage's 25 epochs, stepped at each
  epoch's start (lines 146-147).
* Pruning between stages (lines 173-199): per edge the softmax over its surviving ops (the alphas
  hold only those columns), the ``num_to_drop`` smallest dropped one at a time by ``np.argmin``
  (``get_min_k``, lines 363-371: on a tie the lower column goes): :attr:`pruning` ``drop_lowest``.
  After the last stage ``get_min_k_no_zero`` (lines 372-389) drops ``none`` first where it survived,
  then the smallest: that last drop, 3 -> 1, only picks each edge's op of the genotype (below), so
  the preset has no stage that drops ``none`` first; ``drop_none_first`` is the stage option for a
  schedule that needs it at a boundary.
* Each step (lines 264-297): in train mode an alpha step on the next alpha-split batch (first order,
  the alphas' gradient norm clipped at 5, line 288), then a weight step (clipped at 5, line 296).
  Alpha steps start at epoch ``eps_no_arch = 10`` of each stage (lines 123, 152-159): ``warmup_epochs``.
* Skip dropout (model_search.py lines 23-24, 27-31): every stride-1 ``skip_connect`` (``Identity``)
  is followed by ``nn.Dropout(p)`` when the stage's initial rate r > 0; at each epoch's start
  (train_search.py lines 152-158, epoch e counted in the stage of E epochs) ``p = r (E - e - 1) / E``
  while e < ``eps_no_arch`` and ``p = r exp(-(e - eps_no_arch) scale_factor)`` from then on,
  ``scale_factor = 0.2`` (line 145). Both the alpha and the weight forward run in train mode
  (line 270), so both drop; ``infer`` runs in eval mode (line 314), so evaluation does not. Here the
  rate rides with the forward weights (:class:`~darts.spaces.mixed.EdgeWeights` ``skip_dropout``);
  evaluation and the Hessian diagnostic's deterministic weights carry 0.
* The genotype (lines 205-262): from the last stage's softmax over its 3 survivors with ``none``'s
  probability set to 0 (not renormalised), each edge's strength is its largest remaining
  probability, each node keeps its two strongest edges, each edge its strongest op other than
  ``none``; then the normal cell's ``skip_connect`` edges are cut to M (their loop writes M = 8 .. 0;
  the paper's M = 2) by ``delete_min_sk_prob``/``keep_1_on``/``keep_2_branches``. That is the space's
  derivation on :meth:`mixing_weights` with ``selection.max_skip_connects`` (see
  :func:`darts.spaces.darts_cnn.genotype.derive_from_weights`).

Differs from their code: on an exact tie of two edges (or two ops) their ascending sort keeps the
later one, the derivation here the earlier (DARTS's rule); each node's two pairs are listed strongest
first here, in input order in theirs (``parse_network``: the same cell). The alphas are drawn from the
torch RNG, theirs from numpy's.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from darts.errors import DartsError
from darts.runtime import Runtime
from darts.spaces.base import SearchSpace
from darts.spaces.mixed import ArchWeights
from darts.stages import StagedStrategy, parse_stages
from darts.strategies.base import STRATEGIES
from darts.strategies.darts import DARTS

STAGE_OPTIONS = ("skip_dropout",)


def skip_dropout_rate(initial: float, epoch: int, epochs: int, warmup_epochs: int, scale_factor: float) -> float:
    """The skip-dropout rate of epoch ``epoch`` of a stage of ``epochs`` epochs whose initial rate is
    ``initial`` (train_search.py lines 152-158): ``initial * (epochs - epoch - 1) / epochs`` in the
    weight-only epochs (``epoch < warmup_epochs``), ``initial * exp(-(epoch - warmup_epochs) *
    scale_factor)`` after them."""
    if epoch < warmup_epochs:
        return initial * (epochs - epoch - 1) / epochs
    return initial * math.exp(-(epoch - warmup_epochs) * scale_factor)


def rate_option(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise DartsError(f"{where} must be a number in [0, 1) (a dropout rate), got {value!r}")
    return float(value)


@STRATEGIES.register("pdarts")
class PDARTS(DARTS, StagedStrategy):
    """warmup_epochs: epochs at the start of each stage with weight steps only (10); skip_dropout: the
    initial skip-dropout rate of a stage that names none (0 = no dropout); scale_factor: the decay of
    the rate after the warm-up (0.2); stages: null (one stage) or [{epochs, keep_ops, space, carry,
    drop_none_first, options: {skip_dropout}}, ...] (see :mod:`darts.stages`)."""

    name = "pdarts"
    spaces = ("darts",)
    carry = "none"
    pruning = "drop_lowest"

    def __init__(self, warmup_epochs: int = 10, skip_dropout: float = 0.0, scale_factor: float = 0.2, stages=None):
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise DartsError(f"strategy.warmup_epochs must be an integer >= 0, got {warmup_epochs!r}")
        if isinstance(scale_factor, bool) or not isinstance(scale_factor, (int, float)) or scale_factor < 0:
            raise DartsError(f"strategy.scale_factor must be a number >= 0, got {scale_factor!r}")
        super().__init__(order=1, arch_start_epoch=warmup_epochs)
        self.warmup_epochs, self.scale_factor = warmup_epochs, float(scale_factor)
        self.initial_rate = rate_option(skip_dropout, "strategy.skip_dropout")
        self.stages = parse_stages(stages, STAGE_OPTIONS)
        for index, stage in enumerate(self.stages):
            if "skip_dropout" in stage.options:
                rate_option(stage.options["skip_dropout"], f"strategy.stages[{index}].options.skip_dropout")
        self.stage_start, self.stage_epochs = 0, None
        self.rate = 0.0   # this epoch's skip-dropout rate (start_epoch)

    def enter_stage(self, index: int, start_epoch: int) -> None:
        """The stage's initial rate (the previous one where it names none); its epochs count from
        ``start_epoch``; alphas move from its warm-up's end."""
        stage = self.stages[index]
        self.initial_rate = float(stage.options.get("skip_dropout", self.initial_rate))
        self.stage_start, self.stage_epochs = start_epoch, stage.epochs
        self.arch_start_epoch = start_epoch + self.warmup_epochs

    def setup(self, space: SearchSpace, model: nn.Module, optim_cfg, epochs: int, steps_per_epoch: int,
              runtime: Runtime) -> None:
        super().setup(space, model, optim_cfg, epochs, steps_per_epoch, runtime)
        if not self.stages:   # one stage: the whole search
            self.stage_epochs = epochs

    def start_epoch(self, epoch: int) -> None:
        self.rate = skip_dropout_rate(self.initial_rate, epoch - self.stage_start, self.stage_epochs,
                                      self.warmup_epochs, self.scale_factor)

    def learning_rates(self) -> dict[str, float]:
        """The epoch's schedule as the engine records it: the learning rates and the skip-dropout rate."""
        return {**super().learning_rates(), "skip_dropout": self.rate}

    def forward_weights(self) -> ArchWeights:
        """softmax(alpha) per edge with this epoch's skip-dropout rate: what a training forward runs with."""
        arch = super().forward_weights()
        if self.rate == 0:
            return arch
        return {cell: weights._replace(skip_dropout=self.rate) for cell, weights in arch.items()}

    def expected_weights(self) -> ArchWeights:
        """softmax(alpha) without dropout: deterministic (the Hessian diagnostic's weights)."""
        return super().forward_weights()

    def eval_arch_weights(self) -> ArchWeights:
        """Evaluation runs without dropout (their ``infer`` runs the supernet in eval mode)."""
        with torch.no_grad():
            return self.expected_weights()

    # mixing_weights() is DARTS's softmax(alpha) over each edge's surviving ops: what their pruning
    # ranks (lines 175, 188) and their final genotype reads (lines 206-208).
