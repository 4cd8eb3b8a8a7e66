"""Resource-aware search: what each candidate op and each final network costs (parameters,
multiply-adds, latency), a differentiable expected cost in the architecture loss, and hard budgets
at derivation. The config group is ``resource`` (conf/resource/)."""
from darts.resources.config import ResourceConfig, parse_resource
from darts.resources.costs import CostTables, measure_cost_tables, network_costs
from darts.resources.search import SearchResources

__all__ = ["CostTables", "ResourceConfig", "SearchResources", "measure_cost_tables", "network_costs",
           "parse_resource"]
