"""The DARTS CNN space (Liu et al., 2019): a normal and a reduction cell of ``steps`` nodes, each node
fed by every earlier node and both cell inputs; 8 candidate ops per edge (4 + 4 x the number of
``space.activations``), or each edge its own op list (``space.edge_primitives``, RobustDARTS's S1:
:mod:`darts.spaces.darts_cnn.edges`)."""
from __future__ import annotations

import torch
import torch.nn as nn

from darts.errors import DartsError
from darts.spaces.base import SPACES, Architecture, SearchSpace, positive_int, skip_cap
from darts.spaces.darts_cnn.edges import column_labels, parse_edge_primitives
from darts.spaces.darts_cnn.genotype import PUBLISHED, Genotype, derive_from_weights
from darts.spaces.darts_cnn.network import NetworkCIFAR, NetworkImageNet
from darts.spaces.darts_cnn.supernet import SuperNet
from darts.spaces.mixed import MixedOp

INPUT_NAMES = ("c_{k-2}", "c_{k-1}")


@SPACES.register("darts")
class DartsSpace(SearchSpace):
    """Config: primitives, activations, edge_primitives, C, layers, steps, multiplier, stem_multiplier,
    stem_stride (conf/space/darts.yaml).

    ``space.activations`` turns each conv of ``space.primitives`` into one op per activation
    (``sep_conv_3x3``, ``sep_conv_3x3_gelu``, ...: :func:`darts.ops.expand_activations`); the cells'
    1x1 preprocessing, FactorizedReduce, the ImageNet stems and the auxiliary head keep the published
    ReLU. With ``edge_primitives`` set, ``op_names`` are those expanded ops (rows name ops from them,
    taken literally: a progressive stage's pruned rows hold expanded names already),
    ``edge_ops()[cell][e]`` edge e's own ops, and ``primitives`` names the columns of the (edges, k)
    architecture weights (:func:`~darts.spaces.darts_cnn.edges.column_labels`), so heatmaps and strategies
    that size one-hot rows by it keep working. Without it all three are the expanded ops.
    """

    name = "darts"
    genotype_class = Genotype
    networks = {"cifar": NetworkCIFAR, "imagenet": NetworkImageNet}
    cell_types = ("normal", "reduce")

    def __init__(self, cfg):
        super().__init__(cfg)
        self.steps = positive_int("space.steps", cfg.get("steps", 4))
        raw = cfg.get("edge_primitives")
        self.edge_primitives = None if raw is None else parse_edge_primitives(raw, self.op_names, self.edge_labels())
        if self.edge_primitives is None:
            self._edge_ops = {cell: (tuple(self.primitives),) * self.num_edges for cell in self.cell_types}
        else:
            self._edge_ops = self.edge_primitives
            self.primitives = column_labels(self._edge_ops)

    def node_edges(self) -> list[range]:
        edges, start = [], 0
        for node in range(self.steps):
            edges.append(range(start, start + node + 2))
            start += node + 2
        return edges

    def edge_labels(self) -> list[str]:
        names = list(INPUT_NAMES) + [f"n{node}" for node in range(self.steps)]
        return [f"n{node}<-{names[source]}" for node in range(self.steps) for source in range(node + 2)]

    def edge_ops(self) -> dict[str, tuple[tuple[str, ...], ...]]:
        """{cell type: each edge's ops, in the order of its weight columns}: what column k of edge e's
        (edges, k) weights is, for anything that needs op names per column (derivation, diagnostics)."""
        return self._edge_ops

    def build_supernet(self, num_classes: int, in_channels: int, mixed_op=None) -> nn.Module:
        cfg = self.cfg
        return SuperNet(C=cfg.C, num_classes=num_classes, layers=cfg.layers, steps=self.steps,
                        multiplier=cfg.multiplier, stem_multiplier=cfg.stem_multiplier, primitives=self.primitives,
                        in_channels=in_channels, mixed_op=mixed_op or MixedOp, stem_stride=cfg.get("stem_stride", 1),
                        edge_primitives=self.edge_primitives, stem=cfg.get("stem", "cifar"))

    def derive(self, weights: dict[str, torch.Tensor], max_skip_connects: int | None = None) -> Genotype:
        """Per edge its strongest non-``none`` op, per node the two strongest edges; at most
        ``max_skip_connects`` skip connections in the normal cell by P-DARTS's loop (the reduction
        cell is never capped; see :func:`~darts.spaces.darts_cnn.genotype.derive_from_weights`)."""
        return derive_from_weights(weights, self.primitives, self.steps, self.edge_primitives,
                                   skip_cap(max_skip_connects))

    def random_op_choices(self) -> list[int]:
        """The columns that hold an op other than ``none`` on some edge (a DARTS cell cannot hold ``none``)."""
        return sorted({k for rows in self._edge_ops.values() for row in rows for k, name in enumerate(row)
                       if name != "none"})

    def random_architecture(self, generator: torch.Generator) -> Architecture:
        """Per cell type and node: two distinct input edges, a uniform non-``none`` op of each edge's
        own list on each (as column indices); the node's other edges are None (switched off)."""
        if not self.random_op_choices():
            raise DartsError("a random DARTS cell needs an op other than 'none' in space.primitives")
        architecture = {}
        for cell in self.cell_types:
            choices = [[k for k, name in enumerate(row) if name != "none"] for row in self._edge_ops[cell]]
            active: list[int | None] = []
            for node, node_edges in enumerate(self.node_edges()):
                row: list[int | None] = [None] * (node + 2)
                edges = torch.randperm(node + 2, generator=generator)[:2].tolist()
                counts = [len(choices[node_edges[edge]]) for edge in edges]
                if counts[0] == counts[1]:  # every edge alike (one op list for all): one draw for both
                    ops = torch.randint(counts[0], (2,), generator=generator).tolist()
                else:
                    ops = [int(torch.randint(count, (1,), generator=generator)) for count in counts]
                for edge, op in zip(edges, ops):
                    row[edge] = choices[node_edges[edge]][op]
                active.extend(row)
            architecture[cell] = active
        return architecture

    def architecture_genotype(self, architecture: Architecture) -> Genotype:
        """Each node's two kept edges, in input order; each edge's column index names an op of its own list."""
        cells = []
        for cell in self.cell_types:
            pairs = []
            for node, edges in enumerate(self.node_edges()):
                for source, edge in enumerate(edges):
                    op = architecture[cell][edge]
                    if op is not None:
                        pairs.append((self._edge_ops[cell][edge][op], source))
            cells.append(pairs)
        concat = list(range(2, self.steps + 2))
        return Genotype(cells[0], concat, cells[1], concat)

    def published_genotypes(self) -> dict[str, Genotype]:
        return dict(PUBLISHED)

    def build_network(self, genotype, train_cfg, num_classes: int, in_channels: int) -> nn.Module:
        network = self.network_class(train_cfg.network)
        kwargs = dict(C=train_cfg.C, num_classes=num_classes, layers=train_cfg.layers,
                      auxiliary=train_cfg.auxiliary, genotype=genotype)
        if network is NetworkCIFAR:
            kwargs.update(in_channels=in_channels, stem_stride=train_cfg.get("stem_stride", 1))
        elif in_channels != 3:
            raise DartsError(f"the ImageNet network takes 3-channel images; this dataset has {in_channels}")
        return network(**kwargs)

    def network_overrides(self, train_cfg) -> dict:
        """The supernet at the final network's C and layers, with its stem: the CIFAR stem at
        ``train.stem_stride``, or for the ImageNet network the three-conv stem that also ends at 1/8
        of the input (PC-DARTS's; its parameters differ, which the costs' fixed part absorbs)."""
        if self.network_class(train_cfg.network) is NetworkCIFAR:
            return {"C": train_cfg.C, "layers": train_cfg.layers, "stem": "cifar",
                    "stem_stride": train_cfg.get("stem_stride", 1)}
        return {"C": train_cfg.C, "layers": train_cfg.layers, "stem": "imagenet"}
