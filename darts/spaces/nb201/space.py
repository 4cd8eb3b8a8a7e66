"""The NAS-Bench-201 space (Dong & Yang, 2020): one 4-node cell, every edge one of 5 ops (``none``
included), shared by all cells of a 3-stage network."""
from __future__ import annotations

import functools

import torch
import torch.nn as nn

from darts.errors import DartsError
from darts.spaces.base import SPACES, Architecture, SearchSpace, positive_int, skip_cap
from darts.spaces.mixed import MixedOp
from darts.spaces.nb201.genotype import (NB201_EDGE_LABELS, NB201_EDGES, NB201_NODES, NB201Genotype,
                                         derive_nb201_genotype, genotype_from_edge_ops)
from darts.spaces.nb201.network import NB201Network
from darts.spaces.nb201.supernet import NB201SuperNet


@SPACES.register("nb201")
class NB201Space(SearchSpace):
    """Config: primitives, C, N (cells per stage) (conf/space/nb201.yaml)."""

    name = "nb201"
    genotype_class = NB201Genotype
    networks = {"nb201": NB201Network}
    cell_types = ("normal",)
    pool_bn = False

    def __init__(self, cfg):
        super().__init__(cfg)
        self.C = positive_int("space.C", cfg.get("C", 16))
        self.N = positive_int("space.N", cfg.get("N", 5))

    def node_edges(self) -> list[range]:
        edges, start = [], 0
        for target in range(1, NB201_NODES):
            edges.append(range(start, start + target))
            start += target
        return edges

    def edge_labels(self) -> list[str]:
        return list(NB201_EDGE_LABELS)

    def build_supernet(self, num_classes: int, in_channels: int, mixed_op=None) -> nn.Module:
        mixed_op = mixed_op or functools.partial(MixedOp, pool_bn=self.pool_bn)
        return NB201SuperNet(C=self.C, num_classes=num_classes, N=self.N, primitives=self.primitives,
                             in_channels=in_channels, mixed_op=mixed_op)

    def derive(self, weights: dict[str, torch.Tensor], max_skip_connects: int | None = None) -> NB201Genotype:
        """Per edge the largest-weight op, ``none`` included (the benchmark's rule); with a cap, the
        weakest skip edges take their best other op until at most ``max_skip_connects`` remain."""
        return derive_nb201_genotype(weights["normal"], self.primitives, skip_cap(max_skip_connects))

    def random_op_choices(self) -> list[int]:
        """Every op, ``none`` included, as the benchmark's random search samples its cells."""
        return list(range(len(self.primitives)))

    def random_architecture(self, generator: torch.Generator) -> Architecture:
        return {"normal": torch.randint(len(self.primitives), (len(NB201_EDGES),), generator=generator).tolist()}

    def architecture_genotype(self, architecture: Architecture) -> NB201Genotype:
        return genotype_from_edge_ops([self.primitives[op] for op in architecture["normal"]])

    def build_network(self, genotype, train_cfg, num_classes: int, in_channels: int) -> nn.Module:
        # The benchmark's network: N cells per stage, no auxiliary head, no drop path.
        network = self.network_class(train_cfg.network)
        if train_cfg.get("auxiliary"):
            raise DartsError("the nb201 network has no auxiliary head: set train.auxiliary=false")
        if train_cfg.get("drop_path_prob"):
            raise DartsError("the nb201 network has no drop path: set train.drop_path_prob=0")
        return network(C=train_cfg.C, num_classes=num_classes, N=train_cfg.get("N", 5), genotype=genotype,
                       in_channels=in_channels)
