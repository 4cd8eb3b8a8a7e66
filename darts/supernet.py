"""The DARTS supernet: cells of mixed operations weighted by architecture parameters.

The supernet owns its architecture parameters (``alphas_normal``,
``alphas_reduce``: shape (edges, ops)) as ``nn.Parameter``s, so they travel in
its ``state_dict``; ``arch_parameters()`` and ``weight_parameters()`` split the
two sets for the bilevel optimisers. How alphas become per-edge weights is the
``edge_weighting`` callable, which a search strategy may replace (softmax for
DARTS, a Gumbel one-hot for GDAS, ...), so strategies never touch the forward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from darts.genotypes import PRIMITIVES, Genotype, derive_genotype
from darts.kernels import concat_channels, dense_grad, subsampled_halves, weighted_sum
from darts.ops import FactorizedReduce, ReLUConvBN, build_op, check_ops, is_pool


@dataclass
class EdgeWeights:
    """Per-forward weights of one cell type.

    weights: (edges, ops) mixing weights.
    active: for sampling strategies, the single op index to run on each edge
        (a Python list, so choosing it never syncs the device); None = run all.
        An entry of None switches its edge off: the edge contributes nothing
        to its node (random search keeps two edges per node).
    edge_scales: (edges,) multipliers of each edge's output (PC-DARTS edge
        normalisation); None = every edge counts once.
    """

    weights: torch.Tensor
    active: list[int | None] | None = None
    edge_scales: torch.Tensor | None = None


def softmax_weighting(alphas: torch.Tensor) -> EdgeWeights:
    return EdgeWeights(torch.softmax(alphas, dim=-1))


class MixedOp(nn.Module):
    """Weighted sum of every candidate op on one edge.

    ``none`` is never run: it outputs zeros, so its term and its gradient are
    exactly zero; skipping it saves a launch per edge. ``pool_bn`` puts the
    DARTS supernet's affine-free BN after each pool (the NAS-Bench-201 supernet
    has none there).

    ``fused`` (switched on by the fast path's ``Runtime.prepare``) computes the
    input's ReLU once for every op that starts with one (the four convolutions
    and the factorized reduce of the DARTS space) and sums the weighted outputs
    with :func:`darts.kernels.weighted_sum`; off, every op runs as published.
    """

    def __init__(self, C: int, stride: int, primitives: Sequence[str], pool_bn: bool = True):
        super().__init__()
        self.primitives = tuple(primitives)
        self.stride = stride
        ops = []
        for name in self.primitives:
            op = build_op(name, C, stride, affine=False)
            if pool_bn and is_pool(name):
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            ops.append(op)
        self.ops = nn.ModuleList(ops)
        self.live = [k for k, name in enumerate(self.primitives) if name != "none"]
        # Ops that start with a ReLU; the fused forward runs the first one's ReLU for all of them.
        self.relu_first = [k for k in self.live if hasattr(self.ops[k], "forward_activated")]
        # Of those, the stride-2 ones that read only the activation's subsampled halves, computed once.
        self.from_halves = [k for k in self.relu_first if getattr(self.ops[k], "takes_halves", False)]
        self.fused = False

    def output_shape_zero(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return torch.zeros_like(x)
        return x.new_zeros(x.shape[0], x.shape[1], (x.shape[2] + 1) // 2, (x.shape[3] + 1) // 2)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, active: int | None = None) -> torch.Tensor:
        """x: (N, C, H, W); weights: (ops,) -> (N, C, H/stride, W/stride)."""
        if active is not None:
            if active not in self.live:
                # Sampled `none`: zeros, but keep the weight in the graph for its gradient.
                return self.output_shape_zero(x) * weights[active]
            return self.ops[active](x) * weights[active]
        if self.fused and self.live:
            return self.fused_forward(x, weights)
        total = None
        for k in self.live:
            term = self.ops[k](x) * weights[k]
            total = term if total is None else total + term
        if total is None:  # an op list of only `none`
            return self.output_shape_zero(x)
        return total

    def fused_forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if len(self.relu_first) < 2:
            outputs = [self.ops[k](x) for k in self.live]
        else:
            activated = self.ops[self.relu_first[0]].activation(x)
            halves = subsampled_halves(activated) if len(self.from_halves) > 1 else None
            outputs = []
            for k in self.live:
                if halves is not None and k in self.from_halves:
                    outputs.append(self.ops[k].forward_halves(*halves))
                elif k in self.relu_first:
                    outputs.append(self.ops[k].forward_activated(activated))
                else:
                    outputs.append(self.ops[k](x))
        return weighted_sum(weights, tuple(self.live), outputs)


class SearchCell(nn.Module):
    """A cell whose every edge is a mixed op; outputs the concat of the last `multiplier` nodes."""

    def __init__(self, steps: int, multiplier: int, C_prev_prev: int, C_prev: int, C: int,
                 reduction: bool, reduction_prev: bool, primitives: Sequence[str],
                 mixed_op: Callable[..., nn.Module] = MixedOp):
        super().__init__()
        self.reduction = reduction
        self.steps = steps
        self.multiplier = multiplier
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList()
        for node in range(steps):
            for source in range(node + 2):
                stride = 2 if reduction and source < 2 else 1
                self.edges.append(mixed_op(C, stride, primitives))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, edge_weights: EdgeWeights) -> torch.Tensor:
        weights, active, scales = edge_weights.weights, edge_weights.active, edge_weights.edge_scales
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for step in range(self.steps):
            node = None
            for j, h in enumerate(states):
                edge = offset + j
                if active is None:
                    out = self.edges[edge](h, weights[edge])
                elif active[edge] is None:  # edge switched off: adds nothing, so skip it
                    continue
                else:
                    out = self.edges[edge](h, weights[edge], active[edge])
                if scales is not None:
                    out = out * scales[edge]
                node = out if node is None else node + out
            if node is None:
                raise ValueError(f"node {step} of a cell has every incoming edge switched off")
            offset += len(states)
            states.append(node)
        return concat_channels(states[-self.multiplier:])


def num_edges(steps: int) -> int:
    return sum(node + 2 for node in range(steps))


def softmax_per_node(edge_logits: torch.Tensor, steps: int) -> torch.Tensor:
    """(edges,) -> (edges,): a softmax over each node's i+2 incoming edges (PC-DARTS edge normalisation)."""
    parts, start = [], 0
    for node in range(steps):
        parts.append(torch.softmax(edge_logits[start:start + node + 2], dim=-1))
        start += node + 2
    return torch.cat(parts)


class ArchParameterSplit:
    """Splits a supernet's parameters: architecture (named ``alphas_*``/``betas_*``) and weights."""

    def arch_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(name, p) for name, p in self.named_parameters() if name.startswith(("alphas_", "betas_"))]

    def arch_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.arch_named_parameters()]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]


class SuperNet(ArchParameterSplit, nn.Module):
    """Stem, `layers` search cells (reductions at 1/3 and 2/3 of the depth), pooling, classifier.

    forward: (N, in_channels, H, W) -> logits (N, num_classes).

    Strategies reach the alphas through ``cell_alphas()`` ({cell type: (edges, ops)},
    in ``cell_types`` order) and derive cells with ``genotype_from_alphas``, so a
    space with other cell types (NAS-Bench-201: one) plugs in without changes to them.
    """

    cell_types = ("normal", "reduce")

    def __init__(self, C: int, num_classes: int, layers: int, steps: int = 4, multiplier: int = 4,
                 stem_multiplier: int = 3, primitives: Sequence[str] = PRIMITIVES, in_channels: int = 3,
                 mixed_op: Callable[..., nn.Module] = MixedOp, alpha_init_scale: float = 1e-3,
                 stem_stride: int = 1, edge_normalization: bool = False):
        super().__init__()
        primitives = list(primitives)
        check_ops(primitives)
        self.primitives = primitives
        self.steps = steps
        self.multiplier = multiplier
        self.config = dict(C=C, num_classes=num_classes, layers=layers, steps=steps, multiplier=multiplier,
                           stem_multiplier=stem_multiplier, primitives=primitives, in_channels=in_channels,
                           stem_stride=stem_stride, edge_normalization=edge_normalization)

        C_curr = stem_multiplier * C
        # stem_stride=2 halves the resolution up front: a CPU-budget option; the published supernet uses 1.
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, stride=stem_stride, padding=1, bias=False),
                                  nn.BatchNorm2d(C_curr))
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for layer in range(layers):
            reduction = layer in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell = SearchCell(steps, multiplier, C_prev_prev, C_prev, C_curr, reduction, reduction_prev,
                              primitives, mixed_op)
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

        shape = (num_edges(steps), len(primitives))
        self.alphas_normal = nn.Parameter(alpha_init_scale * torch.randn(shape))
        self.alphas_reduce = nn.Parameter(alpha_init_scale * torch.randn(shape))
        self.edge_normalization = edge_normalization
        if edge_normalization:
            # PC-DARTS: one weight per edge, softmax-normalised over each node's inputs. Drawn after the
            # alphas so that a supernet without them sees the same random initialisation as before.
            self.betas_normal = nn.Parameter(alpha_init_scale * torch.randn(shape[0]))
            self.betas_reduce = nn.Parameter(alpha_init_scale * torch.randn(shape[0]))
        self.edge_weighting: Callable[[torch.Tensor], EdgeWeights] = softmax_weighting
        # Recompute each cell's activations in backward instead of storing them (runtime option).
        self.checkpoint_cells = False

    def cell_alphas(self) -> dict[str, nn.Parameter]:
        """Each cell type's alpha matrix (edges, ops)."""
        return {"normal": self.alphas_normal, "reduce": self.alphas_reduce}

    # -- forward ---------------------------------------------------------------
    def edge_scales(self, detach: bool = False) -> dict[str, torch.Tensor] | None:
        """Per-node softmax of the betas, (edges,) per cell; None without edge normalisation."""
        if not self.edge_normalization:
            return None
        return {cell: softmax_per_node(betas.detach() if detach else betas, self.steps)
                for cell, betas in (("normal", self.betas_normal), ("reduce", self.betas_reduce))}

    def cell_weights(self) -> dict[str, EdgeWeights]:
        weights = {"normal": self.edge_weighting(self.alphas_normal),
                   "reduce": self.edge_weighting(self.alphas_reduce)}
        scales = self.edge_scales()
        if scales is not None:
            for cell, cell_weights in weights.items():
                cell_weights.edge_scales = scales[cell]
        return weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.cell_weights()
        s0 = s1 = self.stem(x)
        recompute = self.checkpoint_cells and self.training and torch.is_grad_enabled()
        for cell in self.cells:
            cell_weights = weights["reduce" if cell.reduction else "normal"]
            if recompute:
                s0, s1 = s1, checkpoint(cell, s0, s1, cell_weights, use_reentrant=False)
            else:
                s0, s1 = s1, cell(s0, s1, cell_weights)
        return self.classifier(self.global_pooling(dense_grad(s1)).flatten(1))

    # -- architecture ------------------------------------------------------------
    def softmax_weights(self) -> dict[str, torch.Tensor]:
        """Deterministic softmax of each cell's alphas, (edges, ops), for logging and derivation;
        with edge normalisation each row is scaled by its edge's normalised beta."""
        weights = {"normal": torch.softmax(self.alphas_normal.detach(), -1),
                   "reduce": torch.softmax(self.alphas_reduce.detach(), -1)}
        scales = self.edge_scales(detach=True)
        if scales is not None:
            weights = {cell: w * scales[cell][:, None] for cell, w in weights.items()}
        return weights

    def genotype_from_alphas(self, alphas: dict[str, torch.Tensor],
                             edge_weights: dict[str, torch.Tensor] | None = None) -> Genotype:
        """The published rule on softmax(alphas[cell]) (edges, ops) per cell, each row scaled by
        ``edge_weights[cell]`` (edges,) when given."""
        edge_weights = edge_weights or {}
        return derive_genotype(alphas["normal"], alphas["reduce"], self.primitives, self.steps,
                               edge_weights_normal=edge_weights.get("normal"),
                               edge_weights_reduce=edge_weights.get("reduce"))

    def genotype(self) -> Genotype:
        return self.genotype_from_alphas(self.cell_alphas(), self.edge_scales(detach=True))

    # -- random cells (random search with weight sharing) ---------------------------------------
    def random_op_choices(self) -> list[int]:
        """Op indices a random cell draws from: every op but ``none``, which a genotype cannot hold."""
        return [k for k, name in enumerate(self.primitives) if name != "none"]

    def random_architecture(self, generator: torch.Generator) -> dict[str, list[int | None]]:
        """Per cell type and node: two distinct input edges, a uniform non-``none`` op on each; the
        node's other edges are None (switched off)."""
        op_choices = self.random_op_choices()
        architecture = {}
        for cell in self.cell_types:
            active: list[int | None] = []
            for node in range(self.steps):
                row: list[int | None] = [None] * (node + 2)
                edges = torch.randperm(node + 2, generator=generator)[:2].tolist()
                ops = torch.randint(len(op_choices), (2,), generator=generator).tolist()
                for edge, op in zip(edges, ops):
                    row[edge] = op_choices[op]
                active.extend(row)
            architecture[cell] = active
        return architecture

    def architecture_genotype(self, architecture: dict[str, list[int | None]]) -> Genotype:
        """The genotype of a random architecture: each node's two kept edges, in input order."""
        cells = []
        for cell in self.cell_types:
            pairs, start = [], 0
            for node in range(self.steps):
                for source in range(node + 2):
                    op = architecture[cell][start + source]
                    if op is not None:
                        pairs.append((self.primitives[op], source))
                start += node + 2
            cells.append(pairs)
        concat = list(range(2, self.steps + 2))
        return Genotype(cells[0], concat, cells[1], concat)
