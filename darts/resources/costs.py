"""What every candidate op costs in the final network, per cell type, edge and op column.

The final network that ``train_final.py`` builds from a genotype (its configured ``network``, C and
layers) is a fixed part (stem, the cells' input preprocessing, classifier) plus, in every cell, the
chosen op of each kept edge. So its cost is

    cost(genotype) = constant + sum over the chosen (cell type, edge, op) of table[cell type][edge, op]

where ``table[cell type][edge, op]`` sums, over every cell of that type in the network, what op costs
at the shape it runs at there (its cell's channels, resolution and the edge's stride). The tables
are measured: a probe supernet is built at the final network's sizes (``SearchSpace.network_overrides``)
and run once at batch 1 to record each edge's input shape; each candidate op is then built as the
final network builds it (``affine=True`` BN, no BN after pools) and counted: parameters, multiply-adds
(torch's FLOP counter) and latency (a :class:`~darts.resources.measure.LatencyTable`). The constant is
measured on one built network. For parameters and multiply-adds the sum is exact (tested against the
built networks); latency is a lookup-table estimate, as FBNet's and ProxylessNAS's are.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from omegaconf import OmegaConf

from darts.errors import DartsError
from darts.export import count_parameters
from darts.ops import build_op
from darts.resources.measure import LatencyTable, count_macs, measure_latency_ms
from darts.spaces.base import SearchSpace
from darts.spaces.mixed import EdgeWeights

COST_KEYS = ("params", "macs", "latency_ms")
NETWORK_DEFAULTS = {"network": "auto", "C": 36, "layers": 20, "N": 5, "stem_stride": 1, "auxiliary": False}
Choices = dict[str, list[tuple[int, int]]]   # cell type -> [(edge, op column)] of a genotype


def network_config(network: dict | None):
    """A ``train``-like node for ``build_network``: ``network`` over train_final.py's defaults, without
    the auxiliary head and drop path, which no cost counts (an eval-mode forward runs neither)."""
    return OmegaConf.merge(NETWORK_DEFAULTS, dict(network or {}), {"auxiliary": False, "drop_path_prob": 0.0})


def genotype_choices(genotype, cell_types: tuple[str, ...], node_edges: list[range], edge_ops) -> Choices:
    """{cell type: [(edge index, op column)]} of the ops a genotype keeps, read from its cell graphs
    (an edge from node id ``source`` into node id ``target`` is edge ``node_edges[target - inputs][source]``)."""
    graphs = genotype.cell_graphs()
    if set(graphs) == set(cell_types):
        named = graphs
    elif len(graphs) == len(cell_types) == 1:    # a one-cell space may name its graph otherwise (NB201: "cell")
        named = {cell_types[0]: next(iter(graphs.values()))}
    else:
        raise DartsError(f"a genotype with cells {', '.join(graphs)} does not fit cost tables of cells "
                         f"{', '.join(cell_types)} (a fixed reduction cell, as GDAS-FRC's, has no table)")
    choices: Choices = {}
    for cell, graph in named.items():
        picked = []
        for source, target, op in graph.edges:
            node = target - len(graph.inputs)
            if op == "none":
                continue
            edge = node_edges[node][source]
            if op not in edge_ops[cell][edge]:
                raise DartsError(f"the genotype's {cell} edge {edge} holds {op}, which is not among that edge's "
                                 f"ops ({', '.join(edge_ops[cell][edge])})")
            picked.append((edge, edge_ops[cell][edge].index(op)))
        choices[cell] = picked
    return choices


@dataclass
class CostTables:
    """tables: {cost key: {cell type: (edges, ops) float64}}; constant: {cost key: the fixed part}."""

    tables: dict[str, dict[str, torch.Tensor]]
    constant: dict[str, float]
    cell_types: tuple[str, ...]
    node_edges: list[range]
    edge_ops: dict
    # Each table as the architecture loss needs it, moved once per (key, cell, device, dtype): the
    # loss reads it every alpha step, and a copy to the GPU each step would be a host transfer per step.
    placed: dict = field(default_factory=dict, repr=False)

    def table_on(self, key: str, cell: str, like: torch.Tensor) -> torch.Tensor:
        slot = (key, cell, like.device, like.dtype)
        if slot not in self.placed:
            self.placed[slot] = self.tables[key][cell].to(like.device, like.dtype)
        return self.placed[slot]

    def expected(self, key: str, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """sum over cells, edges and ops of weight * cost: the expected cost of the searched edges
        (without the constant), differentiable in ``weights`` ({cell type: (edges, ops[+extra])}).
        Columns past the ops' (DARTS-'s auxiliary beta) carry no op and cost nothing."""
        total = None
        for cell, table in self.tables[key].items():
            cell_weights = weights[cell]
            cell_weights = cell_weights.weights if isinstance(cell_weights, EdgeWeights) else cell_weights
            if cell_weights.shape[0] != table.shape[0] or cell_weights.shape[-1] < table.shape[-1]:
                raise DartsError(f"{cell} weights of shape {tuple(cell_weights.shape)} do not fit the cost table's "
                                 f"{tuple(table.shape)} (edges, ops)")
            term = (cell_weights[..., :table.shape[-1]] * self.table_on(key, cell, cell_weights)).sum()
            total = term if total is None else total + term
        return total

    def choices(self, genotype) -> Choices:
        return genotype_choices(genotype, self.cell_types, self.node_edges, self.edge_ops)

    def searched(self, genotype) -> dict[str, float]:
        """{cost key: what the ops ``genotype`` keeps cost}, without the network's fixed part."""
        choices = self.choices(genotype)
        return {key: sum(float(self.tables[key][cell][edge, column])
                         for cell, picked in choices.items() for edge, column in picked) for key in COST_KEYS}

    def of_genotype(self, genotype) -> dict[str, float]:
        """{cost key: the predicted cost of the final network of ``genotype``}."""
        return {key: self.constant[key] + value for key, value in self.searched(genotype).items()}


def record_edge_inputs(space: SearchSpace, supernet: torch.nn.Module):
    """Hooks that append (cell type, edge index, input shape (C, H, W), stride) of every searched edge
    of every cell to ``records`` when ``supernet`` runs on ``arch`` (uniform weights); returns
    (records, hooks, arch). A cell with a ``reduction`` flag set is a reduction cell."""
    records, hooks = [], []
    for cell in getattr(supernet, "cells", []):
        if not hasattr(cell, "edges"):
            continue   # a fixed cell (residual reduction, GDAS-FRC's reduction) has no searched edges
        cell_type = "reduce" if getattr(cell, "reduction", False) else space.cell_types[0]
        for index, edge in enumerate(cell.edges):
            hooks.append(edge.register_forward_pre_hook(
                lambda module, args, cell_type=cell_type, index=index:
                    records.append((cell_type, index, tuple(args[0].shape[1:]), module.stride))))
    arch = {cell: EdgeWeights(torch.full(shape, 1.0 / shape[1])) for cell, shape in space.arch_shapes().items()}
    return records, hooks, arch


def measure_cost_tables(space: SearchSpace, network: dict | None, num_classes: int, in_channels: int,
                        image_size: int, latency: LatencyTable) -> CostTables:
    """The cost tables of ``space``'s ops in the final network ``network`` (train-like) on images of
    ``image_size``, latencies on ``latency``'s device. Parameters and multiply-adds are counted on the CPU."""
    network_cfg = network_config(network)
    probe_space = type(space)(OmegaConf.merge(space.cfg, space.network_overrides(network_cfg)))
    supernet = probe_space.build_supernet(num_classes, in_channels).eval()
    records, hooks, arch = record_edge_inputs(probe_space, supernet)
    try:
        with torch.no_grad():
            supernet(torch.zeros(1, in_channels, image_size, image_size), arch)
    finally:
        for hook in hooks:
            hook.remove()
    if not records:
        raise DartsError(f"the {space.name} supernet ran no searched edge: its costs cannot be measured")
    edge_ops = probe_space.edge_ops()
    tables = {key: {cell: torch.zeros(shape, dtype=torch.float64) for cell, shape in probe_space.arch_shapes().items()}
              for key in COST_KEYS}
    measured: dict[tuple, tuple[float, float, float]] = {}
    for cell, edge, shape, stride in records:
        for column, name in enumerate(edge_ops[cell][edge]):
            key = (name, shape, stride)
            if key not in measured:
                measured[key] = op_costs(name, shape, stride, latency)
            for cost_key, value in zip(COST_KEYS, measured[key]):
                tables[cost_key][cell][edge, column] += value
    latency.save()
    sizes = (in_channels, image_size, image_size)
    reference = space.random_genotype(0)
    built = probe_space.build_network(reference, network_cfg, num_classes, in_channels)
    whole = {"params": float(count_parameters(built)), "macs": float(count_macs(built, sizes, "cpu")),
             "latency_ms": measure_latency_ms(built.to(latency.device), sizes, latency.device, latency.batch,
                                              latency.warmup, latency.repeats)}
    costs = CostTables(tables, {}, tuple(probe_space.cell_types), probe_space.node_edges(), edge_ops)
    searched = costs.searched(reference)
    costs.constant = {key: whole[key] - searched[key] for key in COST_KEYS}
    return costs


def op_costs(name: str, shape: tuple[int, ...], stride: int, latency: LatencyTable) -> tuple[float, float, float]:
    """(parameters, multiply-adds, latency ms) of op ``name`` built as the final network builds it,
    on a (C, H, W) input at ``stride``; ``none`` costs nothing and runs nothing."""
    if name == "none":
        return 0.0, 0.0, 0.0
    op = build_op(name, shape[0], stride, affine=True)
    return (float(count_parameters(op, exclude_auxiliary=False)), float(count_macs(op, shape, "cpu")),
            latency.get(name, op, shape, stride))


def network_costs(network: torch.nn.Module, input_shape: tuple[int, ...], device, batch: int = 1,
                  warmup: int | None = None, repeats: int | None = None) -> dict[str, float]:
    """{params (without the auxiliary head), macs, latency_ms} of a built network, measured."""
    timing = {k: v for k, v in (("warmup", warmup), ("repeats", repeats)) if v is not None}
    return {"params": count_parameters(network), "macs": count_macs(network, input_shape, device),
            "latency_ms": measure_latency_ms(network, input_shape, device, batch, **timing)}
