"""Hard resource budgets at derivation: the best genotype whose final network meets them.

The derivation rules (DARTS's top-2 edges, NAS-Bench-201's argmax, GDAS's per-node pairs, the
P-DARTS skip cap) are functions of the architecture weights, so a budget is met without touching any
rule: the rule runs on penalised weights

    w - lambda * sum over budgeted metrics of cost(op) / budget(metric)

(shifted as a whole to stay non-negative: no rule's ranking changes under a common shift), with the
smallest penalty lambda >= 0 whose genotype fits, found by a geometric scan and bisection. That is
the Lagrangian relaxation of "the genotype of largest total weight under the budget". Among every
genotype that fits on the way, the one whose kept ops have the largest total (unpenalised) weight is
returned. Costs are the cost tables' predictions (exact for parameters and multiply-adds; a lookup
table sum for latency). When even the largest penalty (every edge its cheapest op) does not fit, one
DartsError says by how much and what the network's fixed part costs.
"""
from __future__ import annotations

from typing import Callable

import torch

from darts.errors import DartsError
from darts.resources.config import BUDGET_KEYS, TABLE_KEYS
from darts.resources.costs import CostTables

# Penalties tried before bisection: 0, then 1e-4 .. ~1.7e5 doubling; past the top every edge's
# cheapest op dominates any weight difference (weights are at most 1 apart).
SCAN = [0.0] + [1e-4 * 2.0 ** k for k in range(31)]
BISECTIONS = 24


def fits(costs: dict[str, float], budgets: dict[str, float]) -> bool:
    return all(costs[TABLE_KEYS[metric]] <= limit for metric, limit in budgets.items())


def describe(costs: dict[str, float], budgets: dict[str, float]) -> str:
    return ", ".join(f"{TABLE_KEYS[metric]} {costs[TABLE_KEYS[metric]]:,.6g} (limit {limit:,.6g})"
                     for metric, limit in budgets.items())


class BudgetedDerivation:
    """``derive(weights)`` -> the best genotype under ``budgets`` ({metric: limit}) by ``rule``
    ({cell type: (edges, ops) weights} -> genotype; the strategy's own rule with its skip cap)."""

    def __init__(self, costs: CostTables, budgets: dict[str, float]):
        self.costs, self.budgets = costs, dict(budgets)

    def normalised_cost(self) -> dict[str, torch.Tensor]:
        """{cell type: (edges, ops)} sum over the budgeted metrics of each op's cost over its budget."""
        total: dict[str, torch.Tensor] = {}
        for metric, limit in self.budgets.items():
            for cell, table in self.costs.tables[TABLE_KEYS[metric]].items():
                total[cell] = total.get(cell, 0) + table / limit
        return total

    def admits(self, genotype) -> bool:
        """Whether ``genotype``'s final network meets every budget (predicted costs)."""
        return fits(self.costs.of_genotype(genotype), self.budgets)

    def text(self) -> str:
        return ", ".join(f"{BUDGET_KEYS[metric]}={limit:g}" for metric, limit in self.budgets.items())

    def score(self, genotype, weights: dict[str, torch.Tensor]) -> float:
        """The total architecture weight of the ops ``genotype`` keeps."""
        return sum(float(weights[cell][edge, column])
                   for cell, picked in self.costs.choices(genotype).items() for edge, column in picked)

    def derive(self, rule: Callable, weights: dict[str, torch.Tensor]):
        """The genotype ``rule`` makes of the least penalised ``weights`` that fits, or of those that
        fit along the way the one whose kept ops weigh most; DartsError when none fits."""
        weights = {cell: torch.as_tensor(w, dtype=torch.float64).detach().cpu() for cell, w in weights.items()}
        penalty = self.normalised_cost()
        seen: dict[str, tuple[float, object]] = {}   # genotype string -> (score, genotype) of those that fit

        def attempt(lam: float):
            scores = {cell: w - lam * penalty[cell] for cell, w in weights.items()}
            low = min(float(s.min()) for s in scores.values())
            genotype = rule({cell: s - low for cell, s in scores.items()})
            ok = fits(self.costs.of_genotype(genotype), self.budgets)
            if ok:
                seen.setdefault(str(genotype), (self.score(genotype, weights), genotype))
            return ok, genotype

        last_failure, first_fit = None, None
        for lam in SCAN:
            ok, genotype = attempt(lam)
            if ok:
                first_fit = lam
                break
            last_failure = (lam, genotype)
        if first_fit is None:
            cheapest = self.costs.of_genotype(last_failure[1])
            fixed = ", ".join(f"{TABLE_KEYS[m]} {self.costs.constant[TABLE_KEYS[m]]:,.6g}" for m in self.budgets)
            raise DartsError(
                f"no genotype of this search meets the budget ({self.text()}): "
                f"the cheapest the derivation reaches has {describe(cheapest, self.budgets)}, and the final "
                f"network's fixed part (stem, preprocessing, classifier) alone has {fixed}. Raise the budget or "
                "make the final network smaller (resource.network: C, layers)")
        if first_fit > 0:
            low, high = last_failure[0], first_fit
            for _ in range(BISECTIONS):
                middle = (low + high) / 2
                if attempt(middle)[0]:
                    high = middle
                else:
                    low = middle
        return max(seen.values(), key=lambda entry: entry[0])[1]
