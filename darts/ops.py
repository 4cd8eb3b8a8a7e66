"""Candidate operations and their registry.

The op contract: ``OPS.get(name)(C, stride, affine)`` builds an ``nn.Module`` that maps
``(N, C, H, W)`` to ``(N, C, ceil(H/stride), ceil(W/stride))``. The supernet builds ops with
``affine=False`` (and puts a BN after each pool), the final network with ``affine=True``. A new op is
one ``@OPS.register("name")`` factory in any module that the space imports. An op whose output is a
random draw rather than a function of its input (``noise``) declares ``random_output = True``
(:func:`has_random_output`): two calls on one input differ, two runs from one RNG state agree.

An op that starts with an activation may expose it for the fast path: an ``activation`` module and
``forward_activated(activation(x)) == forward(x)``. A mixed op then computes that activation once for
all its ops whose activations are the same (same type and settings: :func:`activation_signature`);
ops with another activation keep their own.

The activation as a search dimension (``space.activations``): an op that starts with an activation and
has weights is registered with :func:`register_activated_op` and then exists once per activation of
:data:`darts.activations.ACTIVATIONS`: with ReLU under its published name (``sep_conv_3x3``), with
another activation under ``<name>_<activation>`` (``sep_conv_3x3_gelu``). Choosing an activation is
choosing one of these ops, so strategies, derivation rules and genotypes see ordinary op names.
Parameter-free ops (``none``, the pools, ``skip_connect`` with its stride-2 FactorizedReduce,
``noise``) exist once; FactorizedReduce keeps the published ReLU.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from darts.activations import ACTIVATIONS, DEFAULT_ACTIVATION, ActivationFactory
from darts.errors import DartsError
from darts.kernels import DepthwiseConv2d, subsampled_halves
from darts.registry import Registry

OpFactory = Callable[[int, int, bool], nn.Module]
OPS: Registry[OpFactory] = Registry("op")
# (C, stride, affine, activation factory) -> module: an op that starts with a chosen activation.
ActivatedOpFactory = Callable[[int, int, bool, ActivationFactory], nn.Module]
ACTIVATED_OPS: Registry[ActivatedOpFactory] = Registry("op with an activation choice")


def build_op(name: str, C: int, stride: int, affine: bool) -> nn.Module:
    return OPS.get(name)(C, stride, affine)


def check_ops(names, allowed=None) -> None:
    """Raise a readable error if any of ``names`` is not a registered (or allowed) op."""
    OPS.check(names, allowed)


def activation_signature(op: nn.Module) -> str | None:
    """What identifies the activation an op starts with (``ReLU()``, ``GELU(approximate='none')``), or None
    for an op that exposes none. Two ops may share one computed activation only if these are equal."""
    activation = getattr(op, "activation", None)
    if activation is None or not callable(getattr(op, "forward_activated", None)):
        return None
    # In-place or not computes the same values; everything else in the repr (type, settings) must match.
    return repr(activation).replace("inplace=True", "").replace("inplace=False", "")


class ActivationFirst(nn.Sequential):
    """A sequence that starts with an activation. ``forward_activated(activation(x)) == forward(x)``, so a
    mixed op computes that activation once for all ops that start with the same one (see ``MixedOp``)."""

    @property
    def activation(self) -> nn.Module:
        return self[0]

    def forward_activated(self, x):
        for module in list(self)[1:]:
            x = module(x)
        return x


class ReLUConvBN(ActivationFirst):
    """Activation (the published ReLU unless ``activation`` says otherwise), k x k conv, BN."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True,
                 activation: ActivationFactory = nn.ReLU):
        super().__init__(
            activation(),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class DilConv(ActivationFirst):
    """Activation (ReLU unless told), depthwise k x k (dilated), pointwise 1 x 1, BN."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation, affine=True,
                 activation: ActivationFactory = nn.ReLU):
        super().__init__(
            activation(),
            DepthwiseConv2d(C_in, kernel_size, stride, padding, dilation),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    @property
    def takes_halves(self) -> bool:
        return self[1].reads_even_pixels

    def forward_halves(self, even, odd):
        """forward_activated(x) from ``x``'s subsampled halves (see ``MixedOp``; requires ``takes_halves``)."""
        return self[3](self[2](self[1].forward_even(even)))


class SepConv(nn.Sequential):
    """Two DilConv blocks with dilation 1; only the first carries the stride. Both start with the
    same activation."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True,
                 activation: ActivationFactory = nn.ReLU):
        super().__init__(
            DilConv(C_in, C_in, kernel_size, stride, padding, 1, affine, activation),
            DilConv(C_in, C_out, kernel_size, 1, padding, 1, affine, activation),
        )

    @property
    def activation(self) -> nn.Module:
        return self[0].activation

    def forward_activated(self, x):
        return self[1](self[0].forward_activated(x))


class Identity(nn.Module):
    def forward(self, x):
        return x


class Zero(nn.Module):
    """The ``none`` op: zeros of the (strided) output shape."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class Noise(nn.Module):
    """The ``noise`` op of RobustDARTS's space S4: standard normal noise, whatever the input's values.

    x (N, C, H, W) -> N(0, 1) draws of shape (N, C, ceil(H/stride), ceil(W/stride)), on x's device
    and dtype (and layout), detached from x. A new draw on every call, in training and eval mode
    alike: RobustDARTS's ``NoiseOp`` (src/operations.py, ``'noise': NoiseOp(stride, 0., 1.)``) has no
    mode switch and returns a fresh ``normal_`` draw the size of ``x[:, :, ::stride, ::stride]``.
    No parameters and no activation, so a fused mixed op runs it on its own.
    """

    # The op's output is a random draw, not a function of its input: two calls on one input differ.
    random_output = True

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        n, c, h, w = x.shape
        shape = (n, c, -(-h // self.stride), -(-w // self.stride))
        # Keep a channels-last input's layout, so the mixed op's sum does not switch layouts.
        layout = (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
                  and not x.is_contiguous() else torch.contiguous_format)
        return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=layout).normal_()


class FactorizedReduce(nn.Module):
    """Halve the resolution with two 1x1 stride-2 convs, one shifted by a pixel.

    On even sizes the shifted half reads x[1::2, 1::2], as published; on odd ones
    (e.g. 7 x 7) its bottom/right edge is zero-padded so that both halves have the
    same size. Both convs run as one two-group 1x1 conv of the subsampled halves,
    which writes their outputs already concatenated (same numbers as two strided
    convs and a cat, with a quarter of the input copied instead of all of it).
    """

    takes_halves = True  # a stride-2 mixed op may hand it the halves it shares (see MixedOp)

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even C_out, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    @property
    def activation(self) -> nn.Module:
        return self.relu

    def forward(self, x):
        return self.forward_activated(self.relu(x))

    def forward_activated(self, x):
        """x: (N, C_in, H, W) -> (N, C_out, ceil(H/2), ceil(W/2))."""
        return self.forward_halves(*subsampled_halves(x))

    def forward_halves(self, even, odd):
        """forward_activated(x) from ``x[:, :, ::2, ::2]`` and ``x[:, :, 1::2, 1::2]``."""
        odd = F.pad(odd, (0, even.shape[-1] - odd.shape[-1], 0, even.shape[-2] - odd.shape[-2]))
        halves = torch.cat([even, odd], dim=1)
        weight = torch.cat([self.conv_1.weight, self.conv_2.weight], dim=0)
        return self.bn(F.conv2d(halves, weight, groups=2))


OPS.register("none")(lambda C, stride, affine: Zero(stride))
OPS.register("noise")(lambda C, stride, affine: Noise(stride))  # RobustDARTS S4
OPS.register("max_pool_3x3")(lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1))
OPS.register("avg_pool_3x3")(
    lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False))
OPS.register("skip_connect")(
    lambda C, stride, affine: Identity() if stride == 1 else FactorizedReduce(C, C, affine))


def with_activation(op_name: str, activation: str) -> str:
    """The registered name of ``op_name`` (an op with an activation choice) starting with ``activation``:
    the published name for ReLU, ``<op_name>_<activation>`` otherwise (``sep_conv_3x3_gelu``)."""
    ACTIVATED_OPS.get(op_name)
    ACTIVATIONS.get(activation)
    return op_name if activation == DEFAULT_ACTIVATION else f"{op_name}_{activation}"


def split_activation(op_name: str) -> tuple[str, str | None]:
    """(the op it is a variant of, its activation) of a registered op's name: ``sep_conv_3x3_gelu`` ->
    ``("sep_conv_3x3", "gelu")``, ``sep_conv_3x3`` -> ``("sep_conv_3x3", "relu")``; an op without an
    activation choice (``max_pool_3x3``, ``skip_connect``) -> ``(op_name, None)``."""
    if op_name in ACTIVATED_OPS:
        return op_name, DEFAULT_ACTIVATION
    for activation in ACTIVATIONS:
        base = op_name.removesuffix(f"_{activation}")
        if activation != DEFAULT_ACTIVATION and base != op_name and base in ACTIVATED_OPS:
            return base, activation
    return op_name, None


def base_op(op_name: str) -> str:
    """The op that ``op_name`` is an activation variant of (itself for a published or parameter-free op)."""
    return split_activation(op_name)[0]


def activation_of(op_name: str) -> str | None:
    """The activation op ``op_name`` starts with, as chosen in ``space.activations`` (``relu`` for a
    published conv); None for an op without an activation choice."""
    return split_activation(op_name)[1]


def expand_activations(primitives: Sequence[str], activations: Sequence[str]) -> list[str]:
    """Each op of ``primitives`` that has an activation choice replaced, in place, by its variants in
    the order of ``activations``; every other op (parameter-free, or already a variant) kept as it is.

    ``[none, sep_conv_3x3], [relu, gelu]`` -> ``[none, sep_conv_3x3, sep_conv_3x3_gelu]``."""
    expanded = []
    for name in primitives:
        if name in ACTIVATED_OPS:
            expanded.extend(with_activation(name, activation) for activation in activations)
        else:
            expanded.append(name)
    return expanded


def _bound(factory: ActivatedOpFactory, activation: ActivationFactory) -> OpFactory:
    return lambda C, stride, affine: factory(C, stride, affine, activation)


def register_activated_op(name: str, factory: ActivatedOpFactory) -> None:
    """Register an op that starts with an activation and has weights, once per registered activation
    (see :func:`with_activation` for the names)."""
    if name in OPS:
        raise DartsError(f"op {name!r} is registered already")
    ACTIVATED_OPS.add(name, factory)
    for activation, activation_factory in ACTIVATIONS.items():
        OPS.add(with_activation(name, activation), _bound(factory, activation_factory))


def register_activation(name: str, factory: ActivationFactory) -> None:
    """Register an activation and, for every op with an activation choice, its variant that starts with it."""
    ACTIVATIONS.add(name, factory)
    for op_name, op_factory in ACTIVATED_OPS.items():
        OPS.add(with_activation(op_name, name), _bound(op_factory, factory))


register_activated_op("sep_conv_3x3", lambda C, stride, affine, act: SepConv(C, C, 3, stride, 1, affine, act))
register_activated_op("sep_conv_5x5", lambda C, stride, affine, act: SepConv(C, C, 5, stride, 2, affine, act))
register_activated_op("dil_conv_3x3", lambda C, stride, affine, act: DilConv(C, C, 3, stride, 2, 2, affine, act))
register_activated_op("dil_conv_5x5", lambda C, stride, affine, act: DilConv(C, C, 5, stride, 4, 2, affine, act))

# NAS-Bench-201 operations (activation-Conv-BN; pools as above).
register_activated_op("nor_conv_1x1", lambda C, stride, affine, act: ReLUConvBN(C, C, 1, stride, 0, affine, act))
register_activated_op("nor_conv_3x3", lambda C, stride, affine, act: ReLUConvBN(C, C, 3, stride, 1, affine, act))


def is_pool(name: str) -> bool:
    return "pool" in name


def is_identity(op: nn.Module) -> bool:
    return isinstance(op, Identity)


def has_random_output(op: nn.Module) -> bool:
    """Whether ``op`` declares that its output is a random draw (``noise``), not a function of its input."""
    return bool(getattr(op, "random_output", False))
