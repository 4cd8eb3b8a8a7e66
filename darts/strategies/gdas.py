"""GDAS (Dong & Yang, CVPR 2019): one sampled op per edge, Gumbel-softmax gradients, as the authors'
code runs it (D-X-Y/AutoDL-Projects: exps/NAS-Bench-201-algos/GDAS.py, which both their NAS-Bench-201
and their DARTS-space scripts call; xautodl/models/cell_searchs/search_model_gdas.py,
search_model_gdas_nasnet.py, search_cells.py).

Every forward draws Gumbel noise g for each edge and takes the op k = argmax(log_softmax(alpha) + g).
Only that op runs; its output is scaled by the straight-through weight ``hard - soft.detach() + soft``
with ``soft = softmax((log_softmax(alpha) + g) / tau)``: the value is exactly 1, the gradient the
Gumbel-softmax one (``get_gumbel_prob``). tau falls linearly from ``tau_max`` to ``tau_min`` over the
epochs, ``tau_max - (tau_max - tau_min) * epoch / (epochs - 1)`` (GDAS.py lines 237-239).

Each step is a weight step on a weight-split batch, then an alpha step on an alpha-split batch, each
with its own sample (GDAS.py ``search_func``, lines 49-69), first order.

The supernets (see :meth:`GDAS.build_supernet`):

* NAS-Bench-201 (``TinyNetworkGDAS``): the space's own supernet, which is theirs (no BN after pools,
  BN + ReLU before the pooling). Their cell (``NAS201SearchCell.forward_gdas``, search_cells.py
  lines 70-84) adds the non-sampled ops' straight-through weights (value 0) to the node as scalars,
  which hands those alphas the summed upstream gradient: ``unsampled_gradients`` (auto: on here).
* DARTS space (``NASNetworkGDAS``): their pools have no BN (cell_operations.py ``POOLING``), a BN +
  ReLU (``lastact``) sits before the pooling, and the sampled op alone enters the node
  (``MixedOp.forward_gdas``, search_cells.py lines 191-192). The cell count is the space's
  ``layers`` (their N = 2 cells per stage is layers = 6: conf/experiment/gdas.yaml).

Derivation (:meth:`GDAS.genotype`): in the DARTS space per node the two strongest (op, input) pairs
over all incoming edges and every op but ``none`` (``NASNetworkGDAS.genotype``,
search_model_gdas_nasnet.py lines 132-160), so both may come from one input; in NAS-Bench-201 the
space's rule, each edge's largest-weight op (``TinyNetworkGDAS.genotype``).

Differences from their code, on purpose:

* the weight step's gradient clipping (norm 5) covers the supernet's weights; theirs clips
  ``network.parameters()``, which also holds the alphas' gradients of the weight loss;
* their search convs carry ``bias=not affine`` (a bias before every search BN, which cancels it);
  the ops here have none (fewer parameters, the same function).

Sampling without device syncs: the noise comes from a CPU ``torch.Generator`` owned by the strategy
(checkpointed, so a resumed run draws the same ops), and the argmax is taken on the CPU from one host
copy of the alphas per step (a few hundred floats). The weight step leaves the alphas alone, so that
copy is exact for both draws of the step. Each forward's sample is made by ``step()`` and passed to
the supernet with the forward; nothing is left on the model or between calls.
"""
from __future__ import annotations

import functools
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from darts.errors import DartsError
from darts.runtime import Runtime
from darts.spaces.base import SearchSpace
from darts.spaces.darts_cnn.supernet import SuperNet
from darts.spaces.mixed import ArchWeights, EdgeWeights, MixedOp
from darts.strategies.base import STRATEGIES, Batch, GeneratorState, one_hot_rows, seed_from_global_rng
from darts.strategies.darts import DARTS

# One draw: per cell type, the Gumbel noise (edges, ops) and the op index chosen on each edge.
GumbelSample = dict[str, tuple[torch.Tensor, list[int]]]
UNSAMPLED_GRADIENTS = ("auto", True, False)


class UnsampledGradientMixedOp(MixedOp):
    """A mixed op whose sampled forward adds the other ops' weights (value 0 under the straight-through
    estimator) as a scalar: ``ops[k](x) * w[k] + sum_{j != k} w[j]``, as AutoDL's
    ``NAS201SearchCell.forward_gdas`` sums ``weights[j]`` for every op it does not run. Each such weight
    gets the sum of the node's upstream gradient. Without a sampled op: the plain mixed op.

    forward: x (N, C, H, W), weights (ops,) [, active op index] -> (N, C, H/stride, W/stride).
    """

    def forward(self, x: torch.Tensor, weights: torch.Tensor, active: int | None = None) -> torch.Tensor:
        out = super().forward(x, weights, active)
        if active is None:
            return out
        return out + (weights.sum() - weights[active])


def per_node_top_two(weights: torch.Tensor, edge_ops, node_edges: list[range]) -> list[tuple[str, int]]:
    """GDAS's DARTS-space rule on one cell's (edges, ops) weights: per node every (op, input) pair but
    ``none`` over all its incoming edges, ranked by weight, the first two kept (their ``_parse``:
    ``sorted(edges, key=lambda x: -x[-1])[:2]``; a stable sort, so on a tie the lower input, then the
    lower column, wins). Returns two (op, input) pairs per node, strongest first."""
    rows = weights.tolist()
    pairs = []
    for node, edges in enumerate(node_edges):
        candidates = [(rows[edge][k], source, name)
                      for source, edge in enumerate(edges)
                      for k, name in enumerate(edge_ops[edge]) if name != "none"]
        if len(candidates) < 2:
            raise DartsError(f"node {node} needs two (op, input) pairs with an op other than none; it has "
                             f"{len(candidates)}")
        ranked = sorted(candidates, key=lambda candidate: -candidate[0])
        pairs.extend((name, source) for _, source, name in ranked[:2])
    return pairs


def gdas_darts_supernet(space: SearchSpace, num_classes: int, in_channels: int, pool_bn: bool,
                        last_activation: bool, fixed_reduction: bool = False) -> nn.Module:
    """``NASNetworkGDAS`` (or, with ``fixed_reduction``, ``NASNetworkGDAS_FRC``) from the DARTS space's
    config: its cells, with or without a BN after each pool, and a BN + ReLU before the pooling."""
    cfg = space.cfg
    return SuperNet(C=cfg.C, num_classes=num_classes, layers=cfg.layers, steps=space.steps,
                    multiplier=cfg.multiplier, stem_multiplier=cfg.stem_multiplier, primitives=space.primitives,
                    in_channels=in_channels, mixed_op=functools.partial(MixedOp, pool_bn=pool_bn),
                    stem_stride=cfg.get("stem_stride", 1), edge_primitives=space.edge_primitives,
                    last_activation=last_activation, fixed_reduction=fixed_reduction, stem=cfg.get("stem", "cifar"))


@STRATEGIES.register("gdas")
class GDAS(DARTS):
    """tau_max, tau_min: the temperature's linear schedule over the epochs.
    arch_start_epoch: epochs of weight-only training (with sampled ops) before alphas move.
    pool_bn: a BN after each pool in the DARTS-space supernet (theirs: none).
    last_activation: BN + ReLU before the DARTS-space supernet's pooling (theirs: yes).
    unsampled_gradients: the non-sampled ops' zero-valued weights enter each node (auto: in
    NAS-Bench-201, as their cell; not in the DARTS space, as theirs)."""

    name = "gdas"
    fixed_reduction = False   # GDAS-FRC: the reduction cells are fixed, only the normal cell is searched

    def __init__(self, tau_max: float = 10.0, tau_min: float = 0.1, arch_start_epoch: int = 0,
                 pool_bn: bool = False, last_activation: bool = True, unsampled_gradients="auto"):
        super().__init__(order=1, arch_start_epoch=arch_start_epoch)
        if not 0 < tau_min <= tau_max:
            raise DartsError(f"strategy.tau_min and tau_max need 0 < tau_min <= tau_max, got {tau_min}, {tau_max}")
        if unsampled_gradients not in UNSAMPLED_GRADIENTS:
            raise DartsError(f"strategy.unsampled_gradients must be auto, true or false, got {unsampled_gradients!r}")
        self.tau_max, self.tau_min = float(tau_max), float(tau_min)
        self.tau = self.tau_max
        self.pool_bn, self.last_activation = bool(pool_bn), bool(last_activation)
        self.unsampled_gradients = unsampled_gradients
        self.generator = torch.Generator()

    def build_supernet(self, space: SearchSpace, num_classes: int, in_channels: int) -> nn.Module:
        if space.name == "darts":
            return gdas_darts_supernet(space, num_classes, in_channels, self.pool_bn, self.last_activation,
                                       self.fixed_reduction)
        unsampled = space.name == "nb201" if self.unsampled_gradients == "auto" else self.unsampled_gradients
        mixed_op = UnsampledGradientMixedOp if unsampled else MixedOp
        return space.build_supernet(num_classes, in_channels, functools.partial(mixed_op, pool_bn=space.pool_bn))

    def setup(self, space: SearchSpace, model: nn.Module, optim_cfg, epochs: int, steps_per_epoch: int,
              runtime: Runtime) -> None:
        super().setup(space, model, optim_cfg, epochs, steps_per_epoch, runtime)
        # Eager, never compiled: the sampled op list decides which kernels run, so a compiled
        # model would recompile for every new architecture.
        self.forward = model
        self.epochs = epochs
        self.generator.manual_seed(seed_from_global_rng())

    def checkpointables(self) -> dict:
        return {**super().checkpointables(), "gumbel_generator": GeneratorState(self.generator)}

    def start_epoch(self, epoch: int) -> None:
        progress = epoch / (self.epochs - 1) if self.epochs > 1 else 0.0
        # Written as a blend so the last epoch gets exactly tau_min.
        self.tau = (1.0 - progress) * self.tau_max + progress * self.tau_min

    # -- sampling ------------------------------------------------------------------------
    def step(self, train_batch: Batch, alpha_batches: Iterator[Batch], epoch: int) -> dict[str, torch.Tensor]:
        # The step's one device sync: every cell type's alphas in one small host copy, exact for both
        # draws since the weight step does not move the alphas.
        host = self.host_alphas()
        metrics = self.weight_step(train_batch, arch=self.gumbel_weights(self.draw(host)))
        if epoch >= self.arch_start_epoch:
            alpha_batch = next(alpha_batches)
            metrics.update(self.alpha_step(train_batch, alpha_batch, arch=self.gumbel_weights(self.draw(host))))
        return metrics

    def host_alphas(self) -> torch.Tensor:
        """(cell types, edges, ops) float32 host copy of the alphas, in cell-type order."""
        return torch.stack(list(self.arch.alphas().values())).detach().float().cpu()

    def draw(self, host: torch.Tensor) -> GumbelSample:
        """Gumbel noise for every edge and each edge's sampled op, from the host alphas."""
        gumbels = -torch.empty(host.shape).exponential_(generator=self.generator).log()
        # argmax((log_softmax + g) / tau) does not depend on tau.
        chosen = (host.log_softmax(-1) + gumbels).argmax(-1).tolist()
        return {cell: (gumbels[i], chosen[i]) for i, cell in enumerate(self.arch.cell_types)}

    def forward_weights(self) -> ArchWeights:
        """A fresh sample for a training forward that ``step()`` did not prepare (one host copy)."""
        return self.gumbel_weights(self.draw(self.host_alphas()))

    def gumbel_weights(self, sample: GumbelSample) -> ArchWeights:
        """The straight-through one-hot weights of ``sample`` from the current alphas, and its op per edge."""
        weights = {}
        for cell, alphas in self.arch.alphas().items():
            gumbels, chosen = sample[cell]
            gumbels = gumbels.to(alphas.device, alphas.dtype, non_blocking=True)
            soft = torch.softmax((F.log_softmax(alphas, -1) + gumbels) / self.tau, dim=-1)
            hard = one_hot_rows(chosen, alphas.shape[-1]).to(alphas.device, alphas.dtype, non_blocking=True)
            weights[cell] = EdgeWeights(hard - soft.detach() + soft, chosen)
        return self.constrained(weights)

    def expected_weights(self) -> ArchWeights:
        """softmax(alpha) on every op: the distribution the samples come from at tau = 1."""
        return self.constrained({cell: EdgeWeights(torch.softmax(alphas, dim=-1))
                                 for cell, alphas in self.arch.alphas().items()})

    def eval_arch_weights(self) -> ArchWeights:
        """Evaluation runs the most likely op per edge, the argmax of alpha (one host copy)."""
        weights = {}
        for cell, alphas in self.arch.alphas().items():
            chosen = alphas.detach().argmax(-1).tolist()
            weights[cell] = EdgeWeights(one_hot_rows(chosen, alphas.shape[-1]).to(alphas.device, alphas.dtype),
                                        chosen)
        return self.constrained(weights)

    # mixing_weights(): softmax(alpha), the distribution GDAS samples from at tau = 1; genotype() derives from it.
    def derive(self, weights: dict[str, torch.Tensor], max_skip_connects: int | None = None):
        """The DARTS space: :func:`per_node_top_two` on each cell's weights (softmax(alpha)); other
        spaces: the space's rule (NAS-Bench-201: each edge's largest-weight op, as ``TinyNetworkGDAS.genotype``)."""
        if self.space.name != "darts":
            return super().derive(weights, max_skip_connects)
        if max_skip_connects is not None:
            raise DartsError("GDAS's per-node derivation has no skip-connection cap: set "
                             "selection.max_skip_connects=null")
        cells = self.derived_cells(weights)
        concat = list(range(2 + self.space.steps - self.space.cfg.multiplier, self.space.steps + 2))
        return self.space.genotype_class(cells["normal"], concat, self.reduction_pairs(cells), concat)

    def reduction_pairs(self, cells: dict[str, list[tuple[str, int]]]) -> list[tuple[str, int]]:
        """The genotype's reduction cell: the derived one."""
        return cells["reduce"]

    def derived_cells(self, weights: dict[str, torch.Tensor]) -> dict[str, list[tuple[str, int]]]:
        """{cell type: two (op, input) pairs per node} by :func:`per_node_top_two` on ``weights``."""
        edge_ops, node_edges = self.space.edge_ops(), self.space.node_edges()
        return {cell: per_node_top_two(cell_weights, edge_ops[cell], node_edges)
                for cell, cell_weights in weights.items()}
