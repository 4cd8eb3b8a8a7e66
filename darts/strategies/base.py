"""The search-strategy contract.

A strategy is one class registered with ``@STRATEGIES.register(name)`` plus one file in
``conf/strategy/`` whose ``name`` selects it; its other keys are the constructor's keyword arguments.
It declares what a search with it trains (``trains``), and the run engine plugs in the matching task:

* ``trains = "supernet"`` (:class:`SupernetStrategy`): the strategy owns the architecture
  parameters (an :class:`~darts.strategies.arch.ArchParameters`), turns them into the per-edge
  weights the supernet is called with (``supernet(x, arch_weights)``), and takes one search step at
  a time. The engine calls, in order: ``build_supernet`` -> ``setup`` -> per epoch ``start_epoch``,
  ``step`` per weight batch, ``end_epoch`` -> ``genotype``. ``checkpointables`` names every object
  whose ``state_dict`` a checkpoint must hold (the supernet's own weights are the engine's).
* ``trains = "candidates"`` (plain random sampling): the strategy only draws genotypes; the engine
  trains each from scratch.

``spaces`` lists the search spaces a strategy can search (None: any space behind the contract).
"""
from __future__ import annotations

import abc
from typing import Any, Callable, ClassVar, Iterator

import torch
import torch.nn as nn

from darts.errors import DartsError
from darts.registry import Registry
from darts.spaces.base import SearchSpace
from darts.spaces.mixed import ArchWeights

Batch = tuple[torch.Tensor, torch.Tensor]
STRATEGIES: Registry[type["Strategy"]] = Registry("strategy")


def build_strategy(cfg) -> "Strategy":
    """The strategy named ``cfg.name``, built with the rest of ``cfg`` as keyword arguments."""
    cls = STRATEGIES.get(cfg.get("name"))
    options = {key: value for key, value in cfg.items() if key != "name"}
    try:
        return cls(**options)
    except TypeError as err:
        raise DartsError(f"strategy {cls.name!r}: bad option: {err}") from None


class Strategy(abc.ABC):
    """What ``strategy=NAME`` selects."""

    name: ClassVar[str]
    trains: ClassVar[str]                       # "supernet" | "candidates": which task the engine runs
    spaces: ClassVar[tuple[str, ...] | None] = None

    def check_space(self, space: SearchSpace) -> None:
        if self.spaces is not None and space.name not in self.spaces:
            raise DartsError(f"strategy {self.name!r} cannot search the {space.name} space; "
                             f"valid choices: {', '.join(self.spaces)}")


class SupernetStrategy(Strategy):
    """One weight-sharing search method (see the module docstring for the lifecycle)."""

    trains = "supernet"
    learns_architecture = True   # whether a step descends an architecture loss (random WS only samples cells)
    transform: Callable[[ArchWeights], ArchWeights] | None = None   # see constrain()

    def build_supernet(self, space: SearchSpace, num_classes: int, in_channels: int) -> nn.Module:
        """The supernet this strategy trains; default: the space's own."""
        return space.build_supernet(num_classes, in_channels)

    @abc.abstractmethod
    def setup(self, space: SearchSpace, model: nn.Module, optim_cfg, epochs: int, steps_per_epoch: int,
              runtime) -> None:
        """Create the architecture parameters and the optimisers; ``runtime.prepare(model)`` moves
        the model to its device and layout and returns the (possibly compiled) callable to run it with."""

    def start_epoch(self, epoch: int) -> None:
        """Hook at the start of an epoch (schedules that depend on the epoch)."""

    @abc.abstractmethod
    def step(self, train_batch: Batch, alpha_batches: Iterator[Batch], epoch: int) -> dict[str, torch.Tensor]:
        """One search step. Returns device tensors for the metric accumulator: ``loss_sum``,
        ``correct``, ``count`` for the weight batch and, when an alpha step ran, ``alpha_loss_sum``,
        ``alpha_correct``, ``alpha_count``. Must not synchronise with the device (no ``.item()``)."""

    def end_epoch(self, epoch: int) -> None:
        """Hook at the end of an epoch (learning-rate schedulers)."""

    @abc.abstractmethod
    def eval_arch_weights(self) -> ArchWeights:
        """The per-edge weights an evaluation forward runs with (deterministic: no sampling)."""

    @abc.abstractmethod
    def mixing_weights(self) -> dict[str, torch.Tensor]:
        """{cell type: (edges, ops)} non-negative weights to log, plot and derive from."""

    def derive(self, weights: dict[str, torch.Tensor], max_skip_connects: int | None = None):
        """The genotype that ``weights`` ({cell type: (edges, ops)}, as :meth:`mixing_weights` gives
        them) make by this strategy's derivation rule: the space's, unless the strategy has its own
        (GDAS), with at most ``max_skip_connects`` skip connections in the normal cell (P-DARTS's cap)."""
        return self.space.derive(weights, max_skip_connects=max_skip_connects)

    def genotype(self, max_skip_connects: int | None = None, budget=None):
        """The current discrete architecture: :meth:`derive` on :meth:`mixing_weights`, with at most
        ``max_skip_connects`` skip connections in the normal cell (None: no cap). ``budget``
        (:class:`~darts.resources.budget.BudgetedDerivation`): the best genotype whose final network
        meets the resource budgets, the rule run on cost-penalised weights; None: no budget."""
        weights = self.mixing_weights()
        if budget is None:
            return self.derive(weights, max_skip_connects)
        return budget.derive(lambda penalised: self.derive(penalised, max_skip_connects), weights)

    def constrain(self, transform: Callable[[ArchWeights], ArchWeights] | None) -> None:
        """From now on every architecture weight this strategy builds for a forward (training and
        evaluation) passes through ``transform`` (DARTS-PT's projected edges); None lifts it. A
        strategy whose forwards do not go through :meth:`constrained` must refuse (raise)."""
        self.transform = transform

    def constrained(self, arch: ArchWeights) -> ArchWeights:
        return arch if self.transform is None else self.transform(arch)

    def hessian_objective(self, batch: Batch) -> tuple[Callable[[], torch.Tensor], list[torch.Tensor]] | None:
        """What the dominant Hessian eigenvalue is measured on: ``(loss_fn, params)`` with
        ``loss_fn()`` the validation loss of ``batch`` as a differentiable function of the
        architecture parameters ``params`` (see :func:`darts.diagnostics.dominant_eigenvalue`);
        None for a strategy without architecture parameters."""
        return None

    @abc.abstractmethod
    def checkpointables(self) -> dict[str, Any]:
        """Objects with ``state_dict``/``load_state_dict`` that define the strategy's state."""

    @abc.abstractmethod
    def arch_parameters(self) -> list[torch.Tensor]:
        """The architecture parameters (for DDP's divergence check); [] for a strategy without any."""

    def arch_record(self) -> dict[str, list]:
        """The architecture parameters as plain lists, by name, for results.json."""
        return {}

    def learning_rates(self) -> dict[str, float]:
        return {}


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


def seed_from_global_rng() -> int:
    """A seed for a strategy-owned generator, drawn from the global RNG that the run's seed set."""
    return int(torch.randint(0, 2 ** 62, (), dtype=torch.int64))


def one_hot_rows(indices: list[int | None], num_ops: int) -> torch.Tensor:
    """(edges, ops) float32 on the CPU: a 1 at each edge's op, an all-zero row where the index is None."""
    rows = torch.zeros(len(indices), num_ops)
    for edge, op in enumerate(indices):
        if op is not None:
            rows[edge, op] = 1.0
    return rows
