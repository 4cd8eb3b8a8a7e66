"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020): genotype, search supernet, final network.

The cell is a DAG of 4 nodes: node 0 is the cell input, node i (1..3) is the
sum over every j < i of ``op_{j->i}(node j)``, and node 3 is the cell output.
That is 6 edges, each one of 5 ops, all at stride 1 with C channels. Edges are
ordered node by node, sources ascending: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2,
the order of the benchmark's search code and of its architecture strings
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``.

The macro network (search and final alike): a 3x3 conv stem to C channels and
BN; three stages of N cells at C, 2C and 4C channels, separated by a residual
reduction block (a ResNet basic block of stride 2); a final BN + ReLU, global
average pooling and a linear classifier.

Choices, with the reason:
- The search cells use this codebase's ``MixedOp`` with every BN ``affine=False``
  (as the benchmark's search). Pools get no BN after them (``pool_bn=False``),
  as the benchmark's supernet; PC-DARTS's partial-channel op builds its own
  inner ``MixedOp`` and keeps that BN. The BNs track running statistics (the
  benchmark's search disables tracking), so evaluation forwards use them.
- The residual blocks, the stem and the last BN are affine in the search
  network too, as in the benchmark's search network.
- There is one alpha matrix, ``alphas_normal`` of shape (6, ops), shared by
  every cell; the supernet lists its cell types as ``cell_types = ('normal',)``
  and strategies iterate over ``cell_alphas()`` instead of assuming a
  reduction cell.
- Derivation takes, on every edge, the op with the largest weight over ALL ops,
  ``none`` included (ties go to the lower op index), as the benchmark does.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from darts.errors import DartsError
from darts.kernels import dense_grad
from darts.ops import ReLUConvBN, build_op, check_ops
from darts.supernet import ArchParameterSplit, EdgeWeights, MixedOp, softmax_weighting

NB201_PRIMITIVES = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_NODES = 4  # node 0 = the cell input, node 3 = the cell output
NB201_STEPS = NB201_NODES - 1
# (target, source) of each edge, in the supernet's and the string's order.
NB201_EDGES = tuple((target, source) for target in range(1, NB201_NODES) for source in range(target))
NB201_EDGE_LABELS = tuple(f"{target}<-{source}" for target, source in NB201_EDGES)


# ---------------------------------------------------------------------------
# Genotype
# ---------------------------------------------------------------------------
NodeInputs = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class NB201Genotype:
    """One NAS-Bench-201 cell: ``nodes[i - 1]`` lists node i's incoming ``(op, source)`` pairs,
    sources 0..i-1 in order. ``none`` is a valid op (the edge contributes zeros)."""

    nodes: tuple[NodeInputs, ...]

    def __post_init__(self):
        try:
            nodes = tuple(tuple((op, source) for op, source in node) for node in self.nodes)
        except (TypeError, ValueError):
            raise DartsError(f"NB201 genotype nodes must be lists of (op, input) pairs, got {self.nodes!r}") from None
        object.__setattr__(self, "nodes", nodes)
        if len(nodes) != NB201_STEPS:
            raise DartsError(f"an NB201 cell has {NB201_STEPS} computed nodes, got {len(nodes)}")
        for target, node in enumerate(nodes, start=1):
            sources = [source for _, source in node]
            if sources != list(range(target)):
                raise DartsError(f"NB201 node {target} must list one edge from each of the nodes 0..{target - 1} "
                                 f"in order, got inputs {sources!r}")
            for op, _ in node:
                if not isinstance(op, str):
                    raise DartsError(f"NB201 op name must be a string, got {op!r}")
                check_ops([op])

    # -- views -------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        return len(self.nodes)

    def edge_ops(self) -> tuple[str, ...]:
        """The 6 ops in edge order (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2)."""
        return tuple(op for node in self.nodes for op, _ in node)

    def dag_edges(self) -> list[tuple[int, int, str]]:
        """(source, target, op) per edge, in edge order: what viz.draw_genotype draws."""
        return [(source, target, op) for target, node in enumerate(self.nodes, start=1) for op, source in node]

    def ops(self) -> set[str]:
        return set(self.edge_ops())

    def check_ops_allowed(self, allowed: Sequence[str]) -> None:
        """Reject a genotype that uses an op outside the configured op set (``none`` counts as an op)."""
        extra = sorted(self.ops() - set(allowed))
        if extra:
            raise DartsError(
                f"genotype uses op(s) {', '.join(extra)} not in the configured op set: {', '.join(allowed)}")

    # -- serialisation ----------------------------------------------------------------------
    def __str__(self) -> str:
        return "+".join("|" + "|".join(f"{op}~{source}" for op, source in node) + "|" for node in self.nodes)

    @classmethod
    def from_string(cls, text: str) -> "NB201Genotype":
        """Parse ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``; every malformation raises DartsError."""
        text = str(text).strip()
        nodes = []
        for node_text in text.split("+"):
            if len(node_text) < 2 or not (node_text.startswith("|") and node_text.endswith("|")):
                raise DartsError(f"malformed NB201 string {text!r}: each node must be written |op~j|...|")
            pairs = []
            for edge_text in node_text[1:-1].split("|"):
                op, tilde, source = edge_text.partition("~")
                if not tilde or not op or not source.isdigit():
                    raise DartsError(f"malformed NB201 string {text!r}: edge {edge_text!r} is not op~input")
                pairs.append((op, int(source)))
            nodes.append(tuple(pairs))
        return cls(tuple(nodes))

    def to_dict(self) -> dict:
        return {"nb201": str(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data) -> "NB201Genotype":
        """From ``{"nb201": "|...|"}`` (what ``to_dict`` writes) or the benchmark's ``{"arch_str": ...}``."""
        if not isinstance(data, Mapping):
            raise DartsError(f"NB201 genotype JSON must be an object, got {type(data).__name__}")
        text = data.get("nb201", data.get("arch_str"))
        if not isinstance(text, str):
            raise DartsError("NB201 genotype JSON needs a string under 'nb201' or 'arch_str'")
        return cls.from_string(text)


def is_nb201_dict(data) -> bool:
    return isinstance(data, Mapping) and ("nb201" in data or "arch_str" in data)


def derive_nb201_genotype(weights: torch.Tensor, primitives: Sequence[str]) -> NB201Genotype:
    """weights (6, ops) -> the genotype with each edge's largest-weight op, ``none`` included.

    Ties go to the lower op index (a strict comparison)."""
    weights = torch.as_tensor(weights, dtype=torch.float64).detach().cpu()
    if weights.shape != (len(NB201_EDGES), len(primitives)):
        raise DartsError(f"NB201 weights of shape {tuple(weights.shape)} do not fit 6 edges and "
                         f"{len(primitives)} ops")
    rows = weights.tolist()
    chosen = []
    for row in rows:
        best = 0
        for k in range(1, len(row)):
            if row[k] > row[best]:
                best = k
        chosen.append(primitives[best])
    return genotype_from_edge_ops(chosen)


def genotype_from_edge_ops(edge_ops: Sequence[str]) -> NB201Genotype:
    """The genotype with ``edge_ops[k]`` on edge k (edge order as NB201_EDGES)."""
    nodes: list[list[tuple[str, int]]] = [[] for _ in range(NB201_STEPS)]
    for (target, source), op in zip(NB201_EDGES, edge_ops, strict=True):
        nodes[target - 1].append((op, source))
    return NB201Genotype(tuple(tuple(node) for node in nodes))


# ---------------------------------------------------------------------------
# Shared macro-network parts
# ---------------------------------------------------------------------------
class ResidualReduction(nn.Module):
    """The benchmark's ResNetBasicblock at stride 2, between stages.

    conv_a: ReLU-conv3x3(stride 2)-BN, C_in -> C_out; conv_b: ReLU-conv3x3-BN, C_out -> C_out;
    shortcut: AvgPool2d(2, 2) then a 1x1 conv C_in -> C_out (no BN).
    (N, C_in, H, W) -> (N, C_out, H/2, W/2).
    """

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, 2, 1, affine)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, affine)
        self.downsample = nn.Sequential(nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
                                        nn.Conv2d(C_in, C_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def stage_plan(C: int, N: int) -> list[tuple[int, bool]]:
    """(channels, is_reduction) per layer: N cells at C, a reduction to 2C, N cells, one to 4C, N cells."""
    return ([(C, False)] * N + [(2 * C, True)] + [(2 * C, False)] * N
            + [(4 * C, True)] + [(4 * C, False)] * N)


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DartsError(f"NB201 {name} must be a positive integer, got {value!r}")
    return value


# ---------------------------------------------------------------------------
# Search supernet
# ---------------------------------------------------------------------------
def softmax_over_node_inputs(edge_logits: torch.Tensor) -> torch.Tensor:
    """(6,) -> (6,): a softmax over each node's incoming edges (PC-DARTS edge normalisation)."""
    parts, start = [], 0
    for target in range(1, NB201_NODES):
        parts.append(torch.softmax(edge_logits[start:start + target], dim=-1))
        start += target
    return torch.cat(parts)


class NB201SearchCell(nn.Module):
    """Every one of the 6 edges a mixed op. (N, C, H, W) -> (N, C, H, W): node 3."""

    def __init__(self, C: int, primitives: Sequence[str], mixed_op: Callable[..., nn.Module]):
        super().__init__()
        self.edges = nn.ModuleList(mixed_op(C, 1, primitives) for _ in NB201_EDGES)

    def forward(self, x: torch.Tensor, edge_weights: EdgeWeights) -> torch.Tensor:
        weights, active, scales = edge_weights.weights, edge_weights.active, edge_weights.edge_scales
        nodes = [x]
        edge = 0
        for target in range(1, NB201_NODES):
            total = None
            for source in range(target):
                if active is None:
                    out = self.edges[edge](nodes[source], weights[edge])
                elif active[edge] is None:  # an edge switched off adds nothing
                    out = None
                else:
                    out = self.edges[edge](nodes[source], weights[edge], active[edge])
                if out is not None:
                    if scales is not None:
                        out = out * scales[edge]
                    total = out if total is None else total + out
                edge += 1
            nodes.append(torch.zeros_like(x) if total is None else total)
        return nodes[-1]


class NB201SuperNet(ArchParameterSplit, nn.Module):
    """The benchmark's search network: stem, 3 stages of N search cells (C, 2C, 4C) joined by
    residual reductions, BN + ReLU, global pooling, linear. One alpha matrix shared by all cells.

    forward: (N, in_channels, H, W) -> logits (N, num_classes).
    """

    cell_types = ("normal",)

    def __init__(self, C: int = 16, num_classes: int = 10, N: int = 5, primitives: Sequence[str] = NB201_PRIMITIVES,
                 in_channels: int = 3, mixed_op: Callable[..., nn.Module] | None = None,
                 alpha_init_scale: float = 1e-3, edge_normalization: bool = False):
        super().__init__()
        _check_positive_int("C", C)
        _check_positive_int("N", N)
        primitives = list(primitives)
        check_ops(primitives)
        self.primitives = primitives
        self.steps = NB201_STEPS
        self.row_labels = NB201_EDGE_LABELS
        self.config = dict(C=C, num_classes=num_classes, N=N, primitives=primitives, in_channels=in_channels,
                           edge_normalization=edge_normalization)
        if mixed_op is None:
            mixed_op = functools.partial(MixedOp, pool_bn=False)

        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = nn.ModuleList()
        C_prev = C
        for C_curr, reduction in stage_plan(C, N):
            if reduction:
                self.cells.append(ResidualReduction(C_prev, C_curr))
            else:
                self.cells.append(NB201SearchCell(C_curr, primitives, mixed_op))
            C_prev = C_curr
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

        self.alphas_normal = nn.Parameter(alpha_init_scale * torch.randn(len(NB201_EDGES), len(primitives)))
        self.edge_normalization = edge_normalization
        if edge_normalization:
            self.betas_normal = nn.Parameter(alpha_init_scale * torch.randn(len(NB201_EDGES)))
        self.edge_weighting: Callable[[torch.Tensor], EdgeWeights] = softmax_weighting
        self.checkpoint_cells = False

    def cell_alphas(self) -> dict[str, nn.Parameter]:
        """Each cell type's alpha matrix (edges, ops): here the one shared matrix."""
        return {"normal": self.alphas_normal}

    # -- forward -----------------------------------------------------------------------------
    def edge_scales(self, detach: bool = False) -> dict[str, torch.Tensor] | None:
        if not self.edge_normalization:
            return None
        betas = self.betas_normal.detach() if detach else self.betas_normal
        return {"normal": softmax_over_node_inputs(betas)}

    def cell_weights(self) -> dict[str, EdgeWeights]:
        weights = {"normal": self.edge_weighting(self.alphas_normal)}
        scales = self.edge_scales()
        if scales is not None:
            weights["normal"].edge_scales = scales["normal"]
        return weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cell_weights = self.cell_weights()["normal"]
        recompute = self.checkpoint_cells and self.training and torch.is_grad_enabled()
        h = self.stem(x)
        for cell in self.cells:
            if isinstance(cell, ResidualReduction):
                h = cell(h)
            elif recompute:
                h = checkpoint(cell, h, cell_weights, use_reentrant=False)
            else:
                h = cell(h, cell_weights)
        return self.classifier(self.global_pooling(dense_grad(self.lastact(h))).flatten(1))

    # -- architecture --------------------------------------------------------------------------
    def softmax_weights(self) -> dict[str, torch.Tensor]:
        """{'normal': (6, ops)}: softmax of the alphas (times the normalised betas with edge normalisation)."""
        weights = torch.softmax(self.alphas_normal.detach(), -1)
        scales = self.edge_scales(detach=True)
        if scales is not None:
            weights = weights * scales["normal"][:, None]
        return {"normal": weights}

    def heatmap_row_labels(self) -> list[str]:
        return list(self.row_labels)

    def genotype_from_alphas(self, alphas: dict[str, torch.Tensor],
                             edge_weights: dict[str, torch.Tensor] | None = None) -> NB201Genotype:
        """Per-edge argmax of softmax(alphas['normal']) (times ``edge_weights['normal']``), ``none`` included."""
        weights = torch.softmax(torch.as_tensor(alphas["normal"], dtype=torch.float64).detach().cpu(), -1)
        if edge_weights and edge_weights.get("normal") is not None:
            weights = weights * edge_weights["normal"].detach().cpu().double()[:, None]
        return derive_nb201_genotype(weights, self.primitives)

    def genotype(self) -> NB201Genotype:
        return self.genotype_from_alphas(self.cell_alphas(), self.edge_scales(detach=True))

    # -- random cells (random search with weight sharing) ---------------------------------------
    def random_op_choices(self) -> list[int]:
        """Ops a random cell draws from on each edge: all of them, ``none`` included, as the benchmark's
        random search samples its cells."""
        return list(range(len(self.primitives)))

    def random_architecture(self, generator: torch.Generator) -> dict[str, list[int | None]]:
        """{'normal': one uniformly drawn op index per edge}."""
        return {"normal": torch.randint(len(self.primitives), (len(NB201_EDGES),), generator=generator).tolist()}

    def architecture_genotype(self, architecture: dict[str, list[int | None]]) -> NB201Genotype:
        return genotype_from_edge_ops([self.primitives[op] for op in architecture["normal"]])


# ---------------------------------------------------------------------------
# Final network
# ---------------------------------------------------------------------------
class NB201Cell(nn.Module):
    """The discrete cell: each edge its chosen op (affine BN); ``none`` edges add nothing.
    (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, genotype: NB201Genotype, C: int):
        super().__init__()
        self.op_names = genotype.edge_ops()
        # Every edge gets a module (``none`` is a parameterless Zero) so that state-dict keys name
        # edges by their position whatever the genotype.
        self.ops = nn.ModuleList(build_op(op, C, 1, affine=True) for op in self.op_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        edge = 0
        for target in range(1, NB201_NODES):
            total = None
            for source in range(target):
                if self.op_names[edge] != "none":
                    out = self.ops[edge](nodes[source])
                    total = out if total is None else total + out
                edge += 1
            nodes.append(torch.zeros_like(x) if total is None else total)
        return nodes[-1]


class NB201Network(nn.Module):
    """The benchmark's evaluation network for one cell: stem (conv3x3 + BN to C), 3 stages of N
    cells (C, 2C, 4C) joined by residual reductions, BN + ReLU, global pooling, linear.

    Forward (x of shape (N, in_channels, H, W)), as NetworkCIFAR: training mode
    ``(logits, None)`` (no auxiliary head), eval mode ``logits``, each (N, num_classes).
    ``drop_path_prob`` exists for the trainer, which sets it each epoch; the
    benchmark trains without drop path, so it must stay 0.
    """

    def __init__(self, C: int, num_classes: int, N: int, genotype: NB201Genotype, in_channels: int = 3):
        super().__init__()
        if not isinstance(genotype, NB201Genotype):
            raise DartsError(f"NB201Network needs an NB201 genotype (a '|op~0|+|...|' string), "
                             f"got a {type(genotype).__name__}")
        for name, value in (("C", C), ("num_classes", num_classes), ("N", N), ("in_channels", in_channels)):
            _check_positive_int(name, value)
        self.genotype = genotype
        self.config = {"C": C, "num_classes": num_classes, "N": N, "in_channels": in_channels}
        self._drop_path_prob = 0.0
        self.checkpoint_cells = False
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = nn.ModuleList()
        C_prev = C
        for C_curr, reduction in stage_plan(C, N):
            self.cells.append(ResidualReduction(C_prev, C_curr) if reduction else NB201Cell(genotype, C_curr))
            C_prev = C_curr
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    @property
    def drop_path_prob(self) -> float:
        return self._drop_path_prob

    @drop_path_prob.setter
    def drop_path_prob(self, value: float) -> None:
        if value:
            raise DartsError(f"NB201Network has no drop path; set train.drop_path_prob=0 (got {value})")
        self._drop_path_prob = 0.0

    def forward(self, x: torch.Tensor):
        h = self.stem(x)
        recompute = self.checkpoint_cells and self.training and torch.is_grad_enabled()
        for cell in self.cells:
            h = checkpoint(cell, h, use_reentrant=False) if recompute else cell(h)
        logits = self.classifier(self.global_pooling(dense_grad(self.lastact(h))).flatten(1))
        if self.training:
            return logits, None
        return logits


def build_nb201_space(space, num_classes: int, in_channels: int, mixed_op: Callable[..., nn.Module] = MixedOp,
                      edge_normalization: bool = False) -> NB201SuperNet:
    """SPACES['nb201']: the supernet from a space config (name, primitives, C, N).

    The search engine hands every space the plain ``MixedOp``; NB201 swaps it for the
    pool-without-BN variant and keeps any other op a strategy asks for (PC-DARTS)."""
    if mixed_op is MixedOp:
        mixed_op = None
    return NB201SuperNet(C=space.C, num_classes=num_classes, N=space.N, primitives=list(space.primitives),
                         in_channels=in_channels, mixed_op=mixed_op, edge_normalization=edge_normalization)
