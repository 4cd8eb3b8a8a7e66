"""The DARTS evaluation networks that final training builds from a :class:`Genotype`.

``NetworkCIFAR`` and ``NetworkImageNet`` follow the published DARTS evaluation
networks (stems, reduction positions, auxiliary heads, drop path), so that
DARTS_V2 at C=36, 20 cells, 10 classes has the published 3,349,342 parameters
without its auxiliary head.

Forward contract of both networks (``x`` of shape (N, in_channels, H, W)):

* training mode: ``(logits, logits_aux)``, both (N, num_classes); ``logits_aux``
  is ``None`` when the network has no auxiliary head;
* eval mode: ``logits`` alone, (N, num_classes); the auxiliary head is not run.

A genotype with ``reduce=None`` (GDAS-FRC) gets GDAS-FRC's fixed reduction cell at both reduction
positions, as the authors' first networks build it (D-X-Y/GDAS lib/nas/CifarNet.py lines 50-53 and
ImageNet.py lines 62-65: ``Transition`` where ``genotype.reduce is None``); everything else is the
same network.
"""
from __future__ import annotations

import abc

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from darts.errors import DartsError
from darts.fastpath import CellCheckpointing
from darts.kernels import concat_channels, dense_grad
from darts.ops import build_op, is_identity
from darts.spaces.darts_cnn.auxiliary import AuxiliaryHead, AuxiliaryHeadCIFAR, AuxiliaryHeadImageNet
from darts.spaces.darts_cnn.fixed_reduction import FixedReductionCell, input_preprocessing
from darts.spaces.darts_cnn.genotype import Genotype
from darts.spaces.shared_edges import SharedEdgesCell

# Final-network convention from the published code: the CIFAR stem widens to 3 * C.
CIFAR_STEM_MULTIPLIER = 3


# ---------------------------------------------------------------------------
# Drop path
# ---------------------------------------------------------------------------
def drop_path(x: torch.Tensor, drop_prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero whole samples of ``x`` with probability ``drop_prob``; scale the rest by 1 / (1 - drop_prob).

    ``x`` is (N, ...); one Bernoulli(1 - drop_prob) draw per sample, a mask of
    shape (N, 1, 1, 1) for images, so the expected value of every element is
    unchanged. This function always drops: callers decide when it applies (the
    cells use it in training mode only, and never on identity edges).
    ``generator`` (on ``x``'s device) makes the mask reproducible.
    ``drop_prob`` == 1 drops everything (returns zeros instead of 0 / 0).
    """
    if not 0.0 <= drop_prob <= 1.0:
        raise DartsError(f"drop path probability must be in [0, 1], got {drop_prob}")
    if drop_prob == 0.0:
        return x
    keep_prob = 1.0 - drop_prob
    if keep_prob == 0.0:
        # Keep the autograd graph and dtype; only the values are zero.
        return x.mul(0.0)
    mask_shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    mask = torch.empty(mask_shape, dtype=x.dtype, device=x.device).bernoulli_(keep_prob, generator=generator)
    # Divide first, then mask: kept samples are exactly x / keep_prob.
    return x.div(keep_prob) * mask


# ---------------------------------------------------------------------------
# Cell
# ---------------------------------------------------------------------------
class Cell(SharedEdgesCell, nn.Module):
    """One discrete cell, built from the normal or the reduction half of a genotype.

    Inputs ``s0`` (N, C_prev_prev, H0, W0) and ``s1`` (N, C_prev, H, W) are the
    outputs of the two previous cells; when the cell before the previous one
    was a reduction, H0 = 2H and ``s0`` is brought down by a factorized reduce.
    Each intermediate node sums its two chosen ops. The output is the channel
    concatenation of the ``concat`` nodes: (N, multiplier * C, H', W') with
    H' = H / 2 in a reduction cell (stride 2 on the edges from the two inputs)
    and H otherwise; ``multiplier = len(concat)``.

    Fast path (``shared_cell_edges``, :class:`darts.spaces.shared_edges.SharedEdgesCell`): edges that
    read one state and start with the same activation, or hold the same parameter-free op, share one
    computation of it.
    """

    def __init__(self, genotype: Genotype, C_prev_prev: int, C_prev: int, C: int,
                 reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = bool(reduction)
        pairs = genotype.reduce if reduction else genotype.normal
        concat = genotype.reduce_concat if reduction else genotype.normal_concat
        if reduction and any(index < 2 for index in concat):
            # The inputs keep the full resolution, the nodes are halved: they cannot be concatenated.
            raise DartsError(f"genotype reduce_concat {list(concat)} includes a cell input (0 or 1); "
                             "a reduction cell can only concatenate intermediate nodes (2 and up)")

        self.preprocess0, self.preprocess1 = input_preprocessing(C_prev_prev, C_prev, C, reduction_prev, affine=True)

        self.steps = len(pairs) // 2
        # inputs[k] is the state that edge k reads: 0/1 the cell inputs, j >= 2 node j - 2.
        self.inputs = tuple(node_input for _, node_input in pairs)
        self.op_names = tuple(op_name for op_name, _ in pairs)
        self.ops = nn.ModuleList()
        for op_name, node_input in pairs:
            stride = 2 if self.reduction and node_input < 2 else 1
            self.ops.append(build_op(op_name, C, stride, affine=True))
        self.concat = tuple(concat)
        self.multiplier = len(self.concat)
        self.plan_sharing(self.ops, self.op_names, self.inputs)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """(N, C_prev_prev, H0, W0), (N, C_prev, H, W) -> (N, multiplier * C, H', W').

        Drop path with ``drop_prob`` applies to every non-identity edge, in
        training mode only.
        """
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        apply_drop_path = self.training and drop_prob > 0.0
        memo = self.edge_memo()   # this pass's shared activations and op outputs (fast path)
        for node in range(self.steps):
            node_sum = None
            for edge in (2 * node, 2 * node + 1):
                op = self.ops[edge]
                h = self.sharing.run(edge, op, states[self.inputs[edge]], memo)
                # Identity edges are never dropped: dropping them would remove the
                # only path some nodes have to the cell inputs (published behaviour).
                if apply_drop_path and not is_identity(op):
                    h = drop_path(h, drop_prob, generator)
                node_sum = h if node_sum is None else node_sum + h
            states.append(node_sum)
        return concat_channels([states[index] for index in self.concat])


class FinalFixedReductionCell(FixedReductionCell):
    """GDAS-FRC's fixed reduction cell as the final network trains it: affine BNs, bias-free convs,
    and in training drop path with ``drop_prob`` on each of its four branches, one mask each, in
    concat order (D-X-Y/GDAS lib/nas/construct_utils.py ``Transition.forward``, lines 138-152;
    AutoDL-Projects' ``GDAS_Reduction_Cell.forward`` does the same).

    forward: s0 (N, C_prev_prev, H0, W0), s1 (N, C_prev, H, W) -> (N, 4C, H/2, W/2).
    """

    def __init__(self, C_prev_prev: int, C_prev: int, C: int, reduction_prev: bool):
        super().__init__(C_prev_prev, C_prev, C, reduction_prev, affine=True)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
        branches = self.branches(s0, s1)
        if self.training and drop_prob > 0.0:
            branches = [drop_path(branch, drop_prob, generator) for branch in branches]
        return concat_channels(branches)


# ---------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------
def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DartsError(f"network {name} must be a positive integer, got {value!r}")
    return value


class _FinalNetwork(CellCheckpointing, nn.Module, abc.ABC):
    """Shared body: a stack of cells, an optional auxiliary head, global pooling and a classifier.

    Subclasses build ``self._stem`` behaviour and call :meth:`_build_cells`.
    ``self.config`` holds the constructor keyword arguments (without the
    genotype, which is ``self.genotype``), so a network can be rebuilt from
    ``(type(net).__name__, net.config, net.genotype.to_dict())``.
    ``drop_path_prob`` is set each epoch through :meth:`set_drop_path_prob`.
    """

    auxiliary_head_class: type[AuxiliaryHead]

    def _init_common(self, genotype: Genotype, C: int, num_classes: int, layers: int, auxiliary: bool,
                     drop_path_prob: float) -> None:
        if not isinstance(genotype, Genotype):
            raise DartsError(f"network genotype must be a darts.genotypes.Genotype, got {type(genotype).__name__}")
        _check_positive_int("C", C)
        _check_positive_int("num_classes", num_classes)
        _check_positive_int("layers", layers)
        self.genotype = genotype
        self.num_classes = num_classes
        self.layers = layers
        # Cells at 1/3 and 2/3 depth halve the resolution and double the channels;
        # the auxiliary head reads the output of the cell at 2/3 depth.
        self.set_drop_path_prob(drop_path_prob)
        self.reduction_layers = (layers // 3, 2 * layers // 3)
        self.auxiliary_layer = 2 * layers // 3

    def set_drop_path_prob(self, drop_path_prob: float) -> None:
        drop_path_prob = float(drop_path_prob)
        if not 0.0 <= drop_path_prob <= 1.0:
            raise DartsError(f"drop_path_prob must be in [0, 1], got {drop_path_prob}")
        self.drop_path_prob = drop_path_prob

    def _build_cells(self, C: int, C_prev_prev: int, C_prev: int, reduction_prev: bool,
                     auxiliary: bool) -> None:
        C_curr = C
        self.cells = nn.ModuleList()
        C_auxiliary = None
        for index in range(self.layers):
            reduction = index in self.reduction_layers
            if reduction:
                C_curr *= 2
            if reduction and self.genotype.fixed_reduction:
                cell = FinalFixedReductionCell(C_prev_prev, C_prev, C_curr, reduction_prev)
            else:
                cell = Cell(self.genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if index == self.auxiliary_layer:
                C_auxiliary = C_prev
        self.auxiliary_head = self.auxiliary_head_class(C_auxiliary, self.num_classes) if auxiliary else None
        # Adaptive pooling: 1x1 at the published sizes (8x8 CIFAR, 7x7 ImageNet) and at any other.
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, self.num_classes)

    @abc.abstractmethod
    def _stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two inputs of the first cell."""

    def forward(self, x: torch.Tensor):
        """(N, in_channels, H, W) -> training: (logits, logits_aux or None); eval: logits.

        logits and logits_aux are (N, num_classes). The auxiliary head runs in
        training mode only; without one, training mode still returns a pair
        whose second item is None, so the trainer can unpack uniformly.
        """
        s0, s1 = self._stem(x)
        logits_aux = None
        for index, cell in enumerate(self.cells):
            if self.recomputes_cells():
                # Recompute the cell in backward; checkpoint replays the RNG, so drop path matches.
                s0, s1 = s1, checkpoint(cell, s0, s1, self.drop_path_prob, use_reentrant=False)
            else:
                s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if index == self.auxiliary_layer and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        logits = self.classifier(torch.flatten(self.global_pooling(dense_grad(s1)), 1))
        if self.training:
            return logits, logits_aux
        return logits


class NetworkCIFAR(_FinalNetwork):
    """The published CIFAR evaluation network.

    Stem: 3x3 conv in_channels -> 3C, BN. Then ``layers`` cells; those at
    layers // 3 and 2 * layers // 3 are reductions with doubled channels; the
    optional :class:`AuxiliaryHeadCIFAR` reads the cell at 2 * layers // 3
    (8x8 for 32x32 inputs, 7x7 for 28x28). Global average pool, linear.

    Input (N, in_channels, H, W); output as in the module docstring: training
    mode (logits, logits_aux or None), eval mode logits, each (N, num_classes).
    """

    auxiliary_head_class = AuxiliaryHeadCIFAR
    network_name = "cifar"

    def __init__(self, C: int, num_classes: int, layers: int, auxiliary: bool, genotype: Genotype,
                 in_channels: int = 3, drop_path_prob: float = 0.0, stem_stride: int = 1):
        super().__init__()
        self._init_common(genotype, C, num_classes, layers, auxiliary, drop_path_prob)
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("stem_stride", stem_stride)
        self.config = {"C": C, "num_classes": num_classes, "layers": layers,
                       "auxiliary": bool(auxiliary), "in_channels": in_channels}
        if stem_stride != 1:  # published networks use 1; only a non-default value is recorded
            self.config["stem_stride"] = stem_stride
        C_stem = CIFAR_STEM_MULTIPLIER * C
        self.stem = nn.Sequential(
            # stem_stride=2 halves the resolution up front: a CPU-budget option, not the published network.
            nn.Conv2d(in_channels, C_stem, 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(C_stem),
        )
        self._build_cells(C, C_prev_prev=C_stem, C_prev=C_stem, reduction_prev=False, auxiliary=bool(auxiliary))

    def _stem(self, x):
        # Both inputs of the first cell are the stem output.
        stem_out = self.stem(x)
        return stem_out, stem_out


class NetworkImageNet(_FinalNetwork):
    """The published ImageNet (mobile setting) evaluation network.

    stem0: 3x3 conv 3 -> C/2 stride 2, BN, ReLU, 3x3 conv C/2 -> C stride 2, BN
    (224 -> 56); stem1: ReLU, 3x3 conv C -> C stride 2, BN (56 -> 28). The first
    cell reads stem0 and stem1 outputs at different resolutions, hence
    reduction_prev=True for it. Reductions at layers // 3 and 2 * layers // 3
    (28 -> 14 -> 7); the optional :class:`AuxiliaryHeadImageNet` reads the cell
    at 2 * layers // 3. Global pooling is adaptive (the published AvgPool2d(7)
    at 224) so other input sizes work. C must be even.

    Input (N, 3, H, W); output as in the module docstring.
    """

    auxiliary_head_class = AuxiliaryHeadImageNet
    network_name = "imagenet"

    def __init__(self, C: int, num_classes: int, layers: int, auxiliary: bool, genotype: Genotype,
                 drop_path_prob: float = 0.0):
        super().__init__()
        self._init_common(genotype, C, num_classes, layers, auxiliary, drop_path_prob)
        if C % 2:
            raise DartsError(f"NetworkImageNet needs an even C (its stem starts at C/2 channels), got {C}")
        self.config = {"C": C, "num_classes": num_classes, "layers": layers, "auxiliary": bool(auxiliary)}
        self.stem0 = nn.Sequential(
            nn.Conv2d(3, C // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=False),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        # Not in-place: the published in-place ReLU also rectified stem0's output,
        # which only went on into a ReLU anyway; out of place is the same result.
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self._build_cells(C, C_prev_prev=C, C_prev=C, reduction_prev=True, auxiliary=bool(auxiliary))

    def _stem(self, x):
        s0 = self.stem0(x)
        return s0, self.stem1(s0)
