"""The activations an op may start with, and the ``space.activations`` setting that picks them.

``ACTIVATIONS`` maps a name to a factory that takes no arguments and returns the activation module
(not in place: a mixed op hands one activation's output to several ops). ReLU is the published
activation of every DARTS and NAS-Bench-201 op; the others make the activation a choice the search
learns (:func:`darts.ops.register_activation` adds one and its op variants together).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import torch.nn as nn

from darts.errors import DartsError
from darts.registry import Registry

ActivationFactory = Callable[[], nn.Module]
ACTIVATIONS: Registry[ActivationFactory] = Registry("activation")
# The activation of the published ops: ops with it keep their published names.
DEFAULT_ACTIVATION = "relu"

ACTIVATIONS.add("relu", nn.ReLU)
ACTIVATIONS.add("gelu", nn.GELU)
ACTIVATIONS.add("silu", nn.SiLU)
ACTIVATIONS.add("hardswish", nn.Hardswish)


def check_activations(value, where: str = "space.activations") -> list[str]:
    """``value`` as a list of activation names if it is a non-empty list of registered ones without
    repeats; else one DartsError naming the problem and the valid choices."""
    valid = ", ".join(ACTIVATIONS.names())
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise DartsError(f"{where} must be a non-empty list of activations, got {value!r}; valid choices: {valid}")
    names = list(value)
    for name in names:
        if name not in ACTIVATIONS:
            raise DartsError(f"{where}: unknown activation {name!r}; valid choices: {valid}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DartsError(f"{where} lists {', '.join(repeated)} more than once: {names}; each activation once, "
                         f"from: {valid}")
    return names
