"""What a supernet search does with its ``resource`` config (:class:`SearchResources`):

* measures the cost tables of the current supernet's ops in the final network (again at each stage
  of a progressive search, whose op lists change);
* hands the strategy the resource-aware architecture loss (``resource.metric``);
* derives every epoch's genotype under the budgets (``resource.max_*``);
* records each epoch's expected cost and the derived genotype's predicted cost, and at the end the
  final network's parameters, multiply-adds and latency, measured on the built network.
"""
from __future__ import annotations

import torch

from darts.errors import DartsError
from darts.resources.budget import BudgetedDerivation
from darts.resources.config import LOSS_UNITS, TABLE_KEYS, ResourceConfig, parse_resource
from darts.resources.costs import CostTables, measure_cost_tables, network_config, network_costs
from darts.resources.measure import LatencyTable
from darts.resources.objective import ResourceObjective, ResourceTerm
from darts.spaces.base import SearchSpace


class SearchResources:
    """cfg: the run's config (its ``resource`` node); info: the dataset's (num_classes, in_channels,
    image_size); device: where latency is measured (the run's device)."""

    def __init__(self, cfg, strategy, info, device: torch.device):
        self.config: ResourceConfig = parse_resource(cfg.get("resource"))
        self.info, self.device, self.strategy = info, torch.device(device), strategy
        options = self.config.latency
        self.latency = LatencyTable(self.device, options.cache, options.batch, options.warmup, options.repeats)
        self.term = ResourceTerm(self.config) if self.config.metric is not None else None
        self.costs: CostTables | None = None
        if self.term is not None:
            if not getattr(strategy, "learns_architecture", False) or not hasattr(strategy, "set_objective"):
                raise DartsError(f"strategy {strategy.name!r} has no architecture loss to add a resource term to; "
                                 "use a gradient strategy (darts, pcdarts, gdas, drnas, ...) or a budget alone "
                                 "(resource.metric=null resource.max_params=...)")
            if getattr(strategy, "order", 1) == 2 and self.config.form != "linear":
                raise DartsError(f"resource.form={self.config.form} scales the loss the virtual weight step of "
                                 "second-order DARTS differentiates; use resource.form=linear or first order")
            strategy.set_objective(ResourceObjective(strategy.objective, self.term))

    @property
    def network(self):
        return network_config(self.config.network)

    def use_space(self, space: SearchSpace) -> None:
        """Measure the cost tables of ``space``'s supernet (the search's, or a new stage's)."""
        if not self.config.active:
            return
        # Refused before the tables are measured (a probe network and, for latency, timings of every op).
        searched = set(self.strategy.mixing_weights())
        if searched != set(space.cell_types):
            raise DartsError(f"strategy {self.strategy.name!r} searches the {', '.join(sorted(searched))} cell(s), but the "
                             f"final network's cost depends on {', '.join(space.cell_types)}: resource terms and "
                             "budgets need every cell searched (GDAS-FRC's fixed reduction cell has no cost table)")
        self.costs = measure_cost_tables(space, self.config.network, self.info.num_classes, self.info.in_channels,
                                         self.info.image_size, self.latency)
        if self.term is not None:
            self.term.use(self.costs)

    def genotype(self, strategy, max_skip_connects: int | None):
        """The strategy's genotype, the best under the budgets when there are any."""
        if not self.config.budgets:
            return strategy.genotype(max_skip_connects)
        return strategy.genotype(max_skip_connects, budget=BudgetedDerivation(self.costs, self.config.budgets))

    def epoch_record(self, weights: dict[str, torch.Tensor], genotype) -> dict[str, float]:
        """expected_<metric> (loss units: M params, M MACs, ms) of the mixing weights, and the derived
        genotype's predicted cost (genotype_params, genotype_macs, genotype_latency_ms)."""
        if self.costs is None:
            return {}
        record = {f"genotype_{key}": value for key, value in self.costs.of_genotype(genotype).items()}
        for metric, key in TABLE_KEYS.items():
            expected = self.costs.expected(key, weights) + self.costs.constant[key]
            record[f"expected_{metric}"] = float(expected) / LOSS_UNITS[metric]
        return record

    def final_network(self, space: SearchSpace, genotype) -> dict:
        """{params, macs, latency_ms} of the network train_final.py builds from ``genotype`` (the resource
        network's sizes), measured on it; with cost tables also the predicted figures and the budgets."""
        info, options = self.info, self.config.latency
        try:
            network = space.build_network(genotype, self.network, info.num_classes, info.in_channels).to(self.device)
        except DartsError as err:
            if self.config.active:   # measured at the start already: this cannot happen unnoticed
                raise
            # A search without a resource config keeps its result when resource.network does not fit
            # the space (a train node for another network); the report says why it has no costs.
            return {"error": f"no final-network costs: {err} (set resource.network)"}
        record = {"network": {key: self.network.get(key) for key in ("network", "C", "layers", "N", "stem_stride")},
                  "device": str(self.device),
                  **network_costs(network, (info.in_channels, info.image_size, info.image_size), self.device,
                                  options.batch, options.warmup, options.repeats)}
        if self.costs is not None:
            record["predicted"] = self.costs.of_genotype(genotype)
            record["fixed_part"] = dict(self.costs.constant)   # stem, preprocessing, classifier: no genotype changes it
        if self.config.budgets:
            record["budgets"] = {TABLE_KEYS[metric]: limit for metric, limit in self.config.budgets.items()}
        return record
