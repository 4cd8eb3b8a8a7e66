"""The architecture loss with a differentiable expected cost.

E[cost] = fixed part + sum over cell types, edges and ops of w * cost, where w are the weights the
strategy mixes the supernet with on that forward (softmax(alpha) for DARTS, the Gumbel sample for
GDAS, as FBNet uses its Gumbel weights; the Dirichlet sample for DrNAS), in the loss units of
:data:`~darts.resources.config.LOSS_UNITS` (M params, M MACs, ms). Like SNAS's and FBNet's, the
expectation is over every searched edge, also those the derivation will drop. Forms
(``resource.form``), with ``ref`` = ``resource.reference``, else the budget of the metric, else the
expected cost of the uniform architecture:

* ``linear``: loss + weight * (E - ref) / ref  (ProxylessNAS ``add#linear``, search/nas_manager.py
  ``add_regularization_loss``; the paper's CE + lambda * E[LAT] up to a constant and scale);
* ``mul_log``: loss * alpha * (log E / log ref) ** beta  (ProxylessNAS ``mul#log``; their defaults
  alpha 0.2, beta 0.3);
* ``fbnet``: loss * alpha * (log E) ** beta  (FBNet, Wu et al. 2019: alpha 0.2, beta 0.6; E in ms).

The term is added to the architecture loss only: the weight step's loss (``regularized``) is the
plain objective's. The multiplicative forms scale the gradient that reaches the weights through the
loss, so they are refused with second-order DARTS, whose virtual weight step would differentiate them.
"""
from __future__ import annotations

import math

import torch

from darts.errors import DartsError
from darts.resources.config import LOSS_UNITS, TABLE_KEYS, UNIT_NAMES, ResourceConfig
from darts.resources.costs import CostTables


class ResourceTerm:
    """Turns a loss and the forward's architecture weights into the resource-aware architecture loss."""

    def __init__(self, config: ResourceConfig):
        if config.metric is None:
            raise DartsError("a resource term needs resource.metric: params, macs or latency")
        self.config = config
        self.key = TABLE_KEYS[config.metric]
        self.unit = LOSS_UNITS[config.metric]
        self.costs: CostTables | None = None
        self.reference: float | None = None

    def use(self, costs: CostTables) -> None:
        """The cost tables of the current supernet (a progressive search calls this at each stage)."""
        self.costs = costs
        config = self.config
        if config.reference is not None:
            self.reference = config.reference
        elif config.metric in config.budgets:
            self.reference = config.budgets[config.metric] / self.unit
        else:
            uniform = {cell: torch.full(table.shape, 1.0 / table.shape[1], dtype=torch.float64)
                       for cell, table in costs.tables[self.key].items()}
            self.reference = float(self.expected(uniform))
        if config.form in ("mul_log", "fbnet") and self.reference <= 1.0:
            raise DartsError(f"resource.form={config.form} takes the log of the expected cost in "
                             f"{UNIT_NAMES[config.metric]}, which must stay above 1; the reference cost is "
                             f"{self.reference:.4g}: use resource.form=linear, or a larger network")

    def expected(self, weights: dict) -> torch.Tensor:
        """E[cost] in loss units: the fixed part plus the weighted op costs (differentiable)."""
        return (self.costs.expected(self.key, weights) + self.costs.constant[self.key]) / self.unit

    def apply(self, loss: torch.Tensor, weights: dict) -> torch.Tensor:
        config, expected = self.config, self.expected(weights).to(loss.dtype)
        if config.form == "linear":
            return loss + config.weight * (expected - self.reference) / self.reference
        log_cost = torch.log(expected.clamp_min(1.0 + 1e-6))
        if config.form == "mul_log":
            return loss * config.alpha * (log_cost / math.log(self.reference)) ** config.beta
        return loss * config.alpha * log_cost ** config.beta


class ResourceObjective:
    """A strategy objective (``loss``, ``metrics``, ``unrolled_grad_clip``) whose architecture loss
    pays the resource term; the weight step's loss (``regularized``) is ``inner``'s unchanged."""

    def __init__(self, inner, term: ResourceTerm):
        self.inner, self.term = inner, term
        self.unrolled_grad_clip = inner.unrolled_grad_clip

    def loss(self, forward, batch, arch, regularized: bool = False):
        loss, output = self.inner.loss(forward, batch, arch, regularized)
        if regularized:
            return loss, output
        return self.term.apply(loss, arch), output

    def metrics(self, prefix, loss, output, batch):
        return self.inner.metrics(prefix, loss, output, batch)
