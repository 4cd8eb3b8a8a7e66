"""The NAS-Bench-201 space (Dong & Yang, 2020): one 4-node cell, every edge one of 5 ops (``none``
included), shared by all cells of a 3-stage network; or each edge its own op list
(``space.edge_primitives``, :mod:`darts.spaces.edge_lists`), what a progressive search prunes to (DrNAS
201-space/train_search_progressive.py)."""
from __future__ import annotations

import functools

import torch
import torch.nn as nn

from darts.errors import DartsError
from darts.spaces.base import SPACES, Architecture, SearchSpace, positive_int, skip_cap
from darts.spaces.edge_lists import EdgeOps, column_labels, parse_edge_lists
from darts.spaces.mixed import MixedOp
from darts.spaces.nb201.genotype import (NB201_EDGE_LABELS, NB201_EDGES, NB201_NODES, NB201Genotype,
                                         derive_nb201_genotype, genotype_from_edge_ops)
from darts.spaces.nb201.network import NB201Network
from darts.spaces.nb201.supernet import NB201SuperNet


@SPACES.register("nb201")
class NB201Space(SearchSpace):
    """Config: primitives, activations, edge_primitives, C, N (cells per stage) (conf/space/nb201.yaml).

    ``space.activations`` turns each ``nor_conv`` into one op per activation (``nor_conv_3x3``,
    ``nor_conv_3x3_silu``, ...: :func:`darts.ops.expand_activations`); the residual reduction blocks
    and the final BN + ReLU keep the published ReLU. With ``edge_primitives`` ({normal: six op lists})
    set, ``op_names`` are those expanded ops (rows name ops from them, taken literally),
    ``edge_ops()["normal"][e]`` edge e's own ops (``none`` alone allowed, as a benchmark cell may hold
    it), and ``primitives`` names the weight columns (:func:`~darts.spaces.edge_lists.column_labels`).
    Without it all three are the expanded ops.
    """

    name = "nb201"
    genotype_class = NB201Genotype
    networks = {"nb201": NB201Network}
    cell_types = ("normal",)
    pool_bn = False

    def __init__(self, cfg):
        super().__init__(cfg)
        self.C = positive_int("space.C", cfg.get("C", 16))
        self.N = positive_int("space.N", cfg.get("N", 5))
        raw = cfg.get("edge_primitives")
        self.edge_primitives: dict[str, EdgeOps] | None = None
        if raw is None:
            self._edge_ops = {"normal": (tuple(self.primitives),) * len(NB201_EDGES)}
        else:
            self.edge_primitives = parse_edge_lists(raw, self.op_names, NB201_EDGE_LABELS, self.cell_types,
                                                    none_only_rows=True)
            self._edge_ops = self.edge_primitives
            self.primitives = column_labels(self._edge_ops)

    def node_edges(self) -> list[range]:
        edges, start = [], 0
        for target in range(1, NB201_NODES):
            edges.append(range(start, start + target))
            start += target
        return edges

    def edge_labels(self) -> list[str]:
        return list(NB201_EDGE_LABELS)

    def edge_ops(self) -> dict[str, EdgeOps]:
        """{"normal": each edge's ops, in the order of its weight columns}."""
        return self._edge_ops

    def build_supernet(self, num_classes: int, in_channels: int, mixed_op=None) -> nn.Module:
        mixed_op = mixed_op or functools.partial(MixedOp, pool_bn=self.pool_bn)
        return NB201SuperNet(C=self.C, num_classes=num_classes, N=self.N, primitives=self.primitives,
                             in_channels=in_channels, mixed_op=mixed_op,
                             edge_primitives=self._edge_ops["normal"])

    def derive(self, weights: dict[str, torch.Tensor], max_skip_connects: int | None = None) -> NB201Genotype:
        """Per edge the largest-weight op, ``none`` included (the benchmark's rule); with a cap, the
        weakest skip edges take their best other op until at most ``max_skip_connects`` remain."""
        return derive_nb201_genotype(weights["normal"], self._edge_ops["normal"], skip_cap(max_skip_connects))

    def random_op_choices(self) -> list[int]:
        """Every column, ``none`` included, as the benchmark's random search samples its cells."""
        return list(range(len(self.primitives)))

    def random_architecture(self, generator: torch.Generator) -> Architecture:
        """Per edge a uniform column of its op list (every list as long as ``primitives``), one draw."""
        return {"normal": torch.randint(len(self.primitives), (len(NB201_EDGES),), generator=generator).tolist()}

    def architecture_genotype(self, architecture: Architecture) -> NB201Genotype:
        """Each edge's column index names an op of its own list."""
        rows = self._edge_ops["normal"]
        return genotype_from_edge_ops([rows[edge][op] for edge, op in enumerate(architecture["normal"])])

    def build_network(self, genotype, train_cfg, num_classes: int, in_channels: int) -> nn.Module:
        # The benchmark's network: N cells per stage, no auxiliary head, no drop path.
        network = self.network_class(train_cfg.network)
        if train_cfg.get("auxiliary"):
            raise DartsError("the nb201 network has no auxiliary head: set train.auxiliary=false")
        if train_cfg.get("drop_path_prob"):
            raise DartsError("the nb201 network has no drop path: set train.drop_path_prob=0")
        return network(C=train_cfg.C, num_classes=num_classes, N=train_cfg.get("N", 5), genotype=genotype,
                       in_channels=in_channels)

    def network_overrides(self, train_cfg) -> dict:
        """The supernet at the final network's channels and cells per stage."""
        self.network_name(train_cfg.network)
        return {"C": train_cfg.C, "N": train_cfg.get("N", 5)}
