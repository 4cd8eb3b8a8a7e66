"""The search-strategy interface.

A strategy decides how the supernet is built and what one search step does
(which parameters move, on which batches). The search engine only calls the
methods below, so a new strategy is one module plus one config file.
A strategy that trains no supernet (plain random sampling) subclasses
``Strategy`` instead and names its own run class.
"""
from __future__ import annotations

import abc
from typing import Any, Iterator

import torch
import torch.nn as nn

from darts.errors import DartsError, choices_message
from darts.genotypes import Genotype

Batch = tuple[torch.Tensor, torch.Tensor]
STRATEGIES: dict[str, type["Strategy"]] = {}


def register_strategy(name: str):
    def decorator(cls):
        if name in STRATEGIES:
            raise ValueError(f"strategy {name!r} registered twice")
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return decorator


def strategy_class(cfg) -> type["Strategy"]:
    """The registered strategy class named by ``cfg.name``."""
    # Importing the package registers every built-in strategy.
    import darts.strategies  # noqa: F401

    name = cfg.get("name")
    if name not in STRATEGIES:
        raise DartsError(choices_message("strategy", name, STRATEGIES))
    return STRATEGIES[name]


def build_strategy(cfg) -> "Strategy":
    """Instantiate the strategy named by ``cfg.name`` with the rest of ``cfg`` as keyword arguments."""
    cls = strategy_class(cfg)
    options = {key: value for key, value in cfg.items() if key != "name"}
    try:
        return cls(**options)
    except TypeError as err:
        raise DartsError(f"strategy {cls.name!r}: bad option: {err}") from None


class Strategy(abc.ABC):
    """What ``strategy=NAME`` selects: a registered name and the run class that drives it."""

    name: str = "abstract"

    @classmethod
    @abc.abstractmethod
    def run_class(cls) -> type:
        """The run that performs a search with this strategy: ``run_class()(cfg, run_dir).run()``
        writes the run directory and returns the results."""


class SearchStrategy(Strategy):
    """One search method. Lifecycle, as the engine drives it:

    ``build_supernet`` -> ``setup`` -> per epoch: ``start_epoch``, ``step`` for
    every weight batch, ``end_epoch`` -> ``genotype``. ``checkpointables`` names
    every object whose ``state_dict`` a checkpoint must hold.
    """

    @classmethod
    def run_class(cls) -> type:
        """The supernet search loop, which drives every strategy that trains a supernet."""
        # darts.search imports the strategies, so it is imported here rather than at module level.
        from darts.search import SearchRun

        return SearchRun

    @abc.abstractmethod
    def build_supernet(self, space, num_classes: int, in_channels: int) -> nn.Module:
        """The supernet for this strategy in the configured space."""

    @abc.abstractmethod
    def setup(self, model: nn.Module, optim_cfg, epochs: int, steps_per_epoch: int, runtime) -> None:
        """Create optimisers and schedulers; ``runtime.prepare(model)`` moves the model to its device
        and layout and returns the (possibly compiled) callable to run it with."""

    def start_epoch(self, epoch: int) -> None:
        """Hook at the start of an epoch (schedules that depend on the epoch)."""

    @abc.abstractmethod
    def step(self, train_batch: Batch, alpha_batches: Iterator[Batch], epoch: int) -> dict[str, torch.Tensor]:
        """One search step. Returns device tensors for the metric accumulator:
        ``loss_sum``, ``correct``, ``count`` for the weight batch and, when an
        alpha step ran, ``alpha_loss_sum``, ``alpha_correct``, ``alpha_count``.
        Must not synchronise with the device (no ``.item()``)."""

    def end_epoch(self, epoch: int) -> None:
        """Hook at the end of an epoch (learning-rate schedulers)."""

    @abc.abstractmethod
    def genotype(self) -> Genotype:
        """The current discrete architecture."""

    @abc.abstractmethod
    def checkpointables(self) -> dict[str, Any]:
        """Objects with ``state_dict``/``load_state_dict`` that define the run's state."""

    def learning_rates(self) -> dict[str, float]:
        return {}

    def arch_weights(self) -> dict[str, torch.Tensor]:
        """Per-cell (edges, ops) weights to log and plot; default: the supernet's softmax."""
        return self.model.softmax_weights()


class GeneratorState:
    """Puts a ``torch.Generator`` into a checkpoint: sampling strategies own one so that a resumed
    run draws the same architectures as an uninterrupted one."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"rng_state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        # A checkpoint loaded with map_location=cuda moves the state there; set_state wants a CPU ByteTensor.
        self.generator.set_state(state["rng_state"].cpu())
