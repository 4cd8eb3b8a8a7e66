"""A third search space and a new strategy, written here and registered for the test only: both run
end to end (search, resume, final training, export) without a line of darts/ changing.

The space is a chain: a stem, ``depth`` mixed ops one after another, pooling, a classifier; its
genotype is one op per link, written ``chain:op>op>op``.
"""
from __future__ import annotations

import json
import signal
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import OmegaConf, open_dict

from darts import export
from darts.errors import DartsError
from darts.ops import build_op
from darts.preemption import Preempted
from darts.engine import Run, run_final, run_search
from darts.engine.supernet import SupernetSearch
from darts.spaces import SPACES, MixedOp, SearchSpace
from darts.spaces.graph import CellGraph
from darts.spaces.mixed import EdgeWeights
from darts.strategies import STRATEGIES, SupernetStrategy
from darts.strategies.arch import ArchParameters
from helpers import compose_config, read_json


# -- the space ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChainGenotype:
    links: tuple[str, ...]

    def ops(self) -> set[str]:
        return set(self.links)

    def __str__(self) -> str:
        return "chain:" + ">".join(self.links)

    @classmethod
    def from_string(cls, text: str) -> "ChainGenotype":
        if not text.startswith("chain:"):
            raise DartsError(f"a chain genotype reads 'chain:op>op>...', got {text!r}")
        return cls(tuple(text[len("chain:"):].split(">")))

    def to_dict(self) -> dict:
        return {"chain": list(self.links)}

    @classmethod
    def from_dict(cls, data) -> "ChainGenotype":
        return cls(tuple(data["chain"]))

    def cell_graphs(self) -> dict[str, CellGraph]:
        edges = tuple((k, k + 1, op) for k, op in enumerate(self.links))
        return {"chain": CellGraph(inputs=("x",), num_intermediate=len(self.links) - 1, edges=edges, output="y")}


class ChainSuperNet(nn.Module):
    """x (N, in, H, W), {"chain": EdgeWeights of (depth, ops)} -> logits (N, classes)."""

    def __init__(self, C, depth, primitives, num_classes, in_channels, mixed_op):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.links = nn.ModuleList(mixed_op(C, 1, primitives) for _ in range(depth))
        self.classifier = nn.Linear(C, num_classes)

    def forward(self, x, arch):
        h = self.stem(x)
        weights = arch["chain"].weights
        for k, link in enumerate(self.links):
            h = link(h, weights[k])
        return self.classifier(h.mean((2, 3)))


class ChainNetwork(nn.Module):
    network_name = "chain_net"

    def __init__(self, C, num_classes, in_channels, genotype):
        super().__init__()
        self.genotype, self.config = genotype, {"C": C, "num_classes": num_classes, "in_channels": in_channels}
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.links = nn.Sequential(*[build_op(op, C, 1, affine=True) for op in genotype.links])
        self.classifier = nn.Linear(C, num_classes)

    def set_drop_path_prob(self, p: float) -> None:
        if p:
            raise DartsError("the chain network has no drop path")

    def forward(self, x):
        logits = self.classifier(self.links(self.stem(x)).mean((2, 3)))
        return (logits, None) if self.training else logits


class ChainSpace(SearchSpace):
    name = "chain"
    genotype_class = ChainGenotype
    networks = {"chain_net": ChainNetwork}
    cell_types = ("chain",)

    def __init__(self, cfg):
        super().__init__(cfg)
        self.depth, self.C = int(cfg.depth), int(cfg.C)

    def node_edges(self):
        return [range(k, k + 1) for k in range(self.depth)]

    def edge_labels(self):
        return [f"{k + 1}<-{k}" for k in range(self.depth)]

    def build_supernet(self, num_classes, in_channels, mixed_op=None):
        return ChainSuperNet(self.C, self.depth, self.primitives, num_classes, in_channels, mixed_op or MixedOp)

    def derive(self, weights, max_skip_connects=None):
        if max_skip_connects is not None:
            raise DartsError("the chain space has no skip-connection cap")
        return ChainGenotype(tuple(self.primitives[k] for k in weights["chain"].argmax(-1).tolist()))

    def random_architecture(self, generator):
        return {"chain": torch.randint(len(self.primitives), (self.depth,), generator=generator).tolist()}

    def architecture_genotype(self, architecture):
        return ChainGenotype(tuple(self.primitives[k] for k in architecture["chain"]))

    def build_network(self, genotype, train_cfg, num_classes, in_channels):
        return self.network_class(train_cfg.network)(C=train_cfg.C, num_classes=num_classes,
                                                     in_channels=in_channels, genotype=genotype)


# -- the strategy ---------------------------------------------------------------------------------
class AlternatingSGD(SupernetStrategy):
    """Plain SGD on the alphas (alpha batch), then on the weights (weight batch): the contract's
    smallest complete strategy, written without DARTS's code."""

    name = "alternating_sgd"

    def __init__(self, lr: float = 0.05):
        self.lr = lr

    def setup(self, space, model, optim_cfg, epochs, steps_per_epoch, runtime):
        self.space, self.model, self.device = space, model, runtime.device
        self.forward = runtime.prepare(model)
        self.arch = ArchParameters(space.arch_shapes()).to(runtime.device)
        self.w_optimizer = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=0.9)
        self.a_optimizer = torch.optim.SGD(self.arch.parameters(), lr=self.lr)

    def arch_weights(self):
        return {cell: EdgeWeights(torch.softmax(alphas, -1)) for cell, alphas in self.arch.alphas().items()}

    def step(self, train_batch, alpha_batches, epoch):
        inputs, targets = next(alpha_batches)
        self.a_optimizer.zero_grad()
        F.cross_entropy(self.forward(inputs, self.arch_weights()), targets).backward(inputs=list(self.arch.parameters()))
        self.a_optimizer.step()
        inputs, targets = train_batch
        logits = self.forward(inputs, self.arch_weights())
        loss = F.cross_entropy(logits, targets)
        self.w_optimizer.zero_grad()
        loss.backward(inputs=list(self.model.parameters()))
        self.w_optimizer.step()
        count = torch.full((), float(len(targets)))
        return {"loss_sum": loss.detach() * count, "correct": (logits.argmax(1) == targets).sum().float(),
                "count": count}

    def eval_arch_weights(self):
        with torch.no_grad():
            return self.arch_weights()

    def mixing_weights(self):
        return {cell: torch.softmax(alphas.detach().double().cpu(), -1) for cell, alphas in self.arch.alphas().items()}

    def checkpointables(self):
        return {"arch": self.arch, "w_optimizer": self.w_optimizer, "a_optimizer": self.a_optimizer}

    def arch_parameters(self):
        return list(self.arch.parameters())

    def arch_record(self):
        return self.arch.record()


# -- the tests ----------------------------------------------------------------------------------
PRIMITIVES = ["none", "skip_connect", "avg_pool_3x3", "sep_conv_3x3"]


@pytest.fixture
def registered():
    with SPACES.temporarily("chain", ChainSpace), STRATEGIES.temporarily("alternating_sgd", AlternatingSGD):
        yield


def chain_config(script: str, *overrides):
    cfg = compose_config(script, ["experiment=smoke", "deterministic=true", "dataset.num_train=32",
                                  "dataset.image_size=8", "fast.channels_last=false", *overrides])
    with open_dict(cfg):
        cfg.space = OmegaConf.create({"name": "chain", "primitives": PRIMITIVES, "C": 4, "depth": 3})
        if script == "search":
            cfg.strategy = OmegaConf.create({"name": "alternating_sgd", "lr": 0.05})
            cfg.search.epochs, cfg.search.batch_size = 2, 8
        else:
            cfg.train.update(network="auto", C=4, auxiliary=False, drop_path_prob=0.0, epochs=2, batch_size=8)
    return cfg


def test_a_new_space_and_strategy_search_resume_and_train_without_touching_the_library(registered, tmp_path):
    full = run_search(chain_config("search"), tmp_path / "search")
    genotype = ChainGenotype.from_dict(full["genotype"])
    assert len(genotype.links) == 3 and genotype.ops() <= set(PRIMITIVES)
    assert full["space"] == "chain" and full["strategy"] == "alternating_sgd"
    assert len(full["alphas"]["alphas_chain"]) == 3
    assert read_json(tmp_path / "search" / "genotype.json")["string"] == str(genotype)
    assert (tmp_path / "search" / "cells" / "chain.dot").read_text().count("->") == 3

    # Stopped by a signal in its last epoch, resumed, it ends as the uninterrupted run did.
    cfg = chain_config("search")

    class StopInLastEpoch(SupernetSearch):
        def train_step(self, batch, epoch):
            metrics = super().train_step(batch, epoch)
            if epoch == 1 and not getattr(self, "signalled", False):
                self.signalled = True
                signal.raise_signal(signal.SIGUSR1)
            return metrics

    strategy = AlternatingSGD(lr=0.05)
    with pytest.raises(Preempted):
        Run(cfg, tmp_path / "cut", lambda run_cfg, context: StopInLastEpoch(run_cfg, context, strategy)).run()
    resumed = run_search(chain_config("search", "resume=true"), tmp_path / "cut")
    assert resumed["alphas"] == full["alphas"] and resumed["genotype"] == full["genotype"]

    # The found chain trains from scratch from the search's run directory, and its export reloads.
    final = run_final(chain_config("final", f"genotype={tmp_path / 'search'}"), tmp_path / "final")
    assert final["network"] == "chain_net" and final["genotype"] == full["genotype"]
    assert 0.0 <= final["test_top1"] <= 100.0
    network = export.load(tmp_path / "final" / "model.pt")
    assert isinstance(network, ChainNetwork) and network.genotype == genotype


def test_a_new_space_gets_the_library_s_readable_errors(registered):
    space = ChainSpace(OmegaConf.create({"name": "chain", "primitives": PRIMITIVES, "C": 4, "depth": 2}))
    with pytest.raises(DartsError, match="not in the configured op set"):
        space.parse_genotype(json.dumps({"chain": ["sep_conv_5x5", "none"]}))
    with pytest.raises(DartsError, match="unknown genotype 'DARTS_V2' for the chain space"):
        space.resolve_genotype("DARTS_V2")
    with pytest.raises(DartsError, match="valid choices: auto, chain_net"):
        space.network_class("cifar")
