"""The DARTS CNN space (Liu et al., 2019): a normal and a reduction cell of ``steps`` nodes, each node
fed by every earlier node and both cell inputs; 8 candidate ops per edge."""
from __future__ import annotations

import torch
import torch.nn as nn

from darts.errors import DartsError
from darts.spaces.base import SPACES, Architecture, SearchSpace, positive_int
from darts.spaces.darts_cnn.genotype import PUBLISHED, Genotype, derive_from_weights
from darts.spaces.darts_cnn.network import NetworkCIFAR, NetworkImageNet
from darts.spaces.darts_cnn.supernet import SuperNet
from darts.spaces.mixed import MixedOp

INPUT_NAMES = ("c_{k-2}", "c_{k-1}")


@SPACES.register("darts")
class DartsSpace(SearchSpace):
    """Config: primitives, C, layers, steps, multiplier, stem_multiplier, stem_stride (conf/space/darts.yaml)."""

    name = "darts"
    genotype_class = Genotype
    networks = {"cifar": NetworkCIFAR, "imagenet": NetworkImageNet}
    cell_types = ("normal", "reduce")

    def __init__(self, cfg):
        super().__init__(cfg)
        self.steps = positive_int("space.steps", cfg.get("steps", 4))

    def node_edges(self) -> list[range]:
        edges, start = [], 0
        for node in range(self.steps):
            edges.append(range(start, start + node + 2))
            start += node + 2
        return edges

    def edge_labels(self) -> list[str]:
        names = list(INPUT_NAMES) + [f"n{node}" for node in range(self.steps)]
        return [f"n{node}<-{names[source]}" for node in range(self.steps) for source in range(node + 2)]

    def build_supernet(self, num_classes: int, in_channels: int, mixed_op=None) -> nn.Module:
        cfg = self.cfg
        return SuperNet(C=cfg.C, num_classes=num_classes, layers=cfg.layers, steps=self.steps,
                        multiplier=cfg.multiplier, stem_multiplier=cfg.stem_multiplier, primitives=self.primitives,
                        in_channels=in_channels, mixed_op=mixed_op or MixedOp, stem_stride=cfg.get("stem_stride", 1))

    def derive(self, weights: dict[str, torch.Tensor]) -> Genotype:
        return derive_from_weights(weights, self.primitives, self.steps)

    def random_architecture(self, generator: torch.Generator) -> Architecture:
        """Per cell type and node: two distinct input edges, a uniform non-``none`` op on each; the
        node's other edges are None (switched off)."""
        op_choices = self.random_op_choices()
        if not op_choices:
            raise DartsError("a random DARTS cell needs an op other than 'none' in space.primitives")
        architecture = {}
        for cell in self.cell_types:
            active: list[int | None] = []
            for node in range(self.steps):
                row: list[int | None] = [None] * (node + 2)
                edges = torch.randperm(node + 2, generator=generator)[:2].tolist()
                ops = torch.randint(len(op_choices), (2,), generator=generator).tolist()
                for edge, op in zip(edges, ops):
                    row[edge] = op_choices[op]
                active.extend(row)
            architecture[cell] = active
        return architecture

    def architecture_genotype(self, architecture: Architecture) -> Genotype:
        """Each node's two kept edges, in input order."""
        cells = []
        for cell in self.cell_types:
            pairs = []
            for node, edges in enumerate(self.node_edges()):
                for source, edge in enumerate(edges):
                    op = architecture[cell][edge]
                    if op is not None:
                        pairs.append((self.primitives[op], source))
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
