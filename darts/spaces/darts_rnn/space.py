"""The DARTS recurrent space (Liu et al., 2019, Penn Treebank): one cell of ``steps`` nodes, node i
reading every earlier node 0..i-1 through a mixture of ``none``, ``tanh``, ``relu``, ``sigmoid``,
``identity`` (quark0/darts rnn/genotypes.py, rnn/model_search.py): 36 edges x 5 ops for 8 nodes.

A language-model space (``language_model``): the engine trains it with the language-model tasks
(:mod:`darts.engine.language_search`, :mod:`darts.engine.language_final`) on a corpus in the PTB
layout, and only the strategies in ``search_strategies`` can search it.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from darts.activations import DEFAULT_ACTIVATION
from darts.errors import DartsError
from darts.spaces.base import SPACES, Architecture, SearchSpace, positive_int
from darts.spaces.darts_rnn.genotype import PUBLISHED, RNN_PRIMITIVES, RecurrentGenotype, derive_recurrent
from darts.spaces.darts_rnn.network import RecurrentNetwork
from darts.spaces.darts_rnn.supernet import RecurrentSuperNet
from darts.spaces.language import LanguageModelObjective


@SPACES.register("darts_rnn")
class DartsRNNSpace(SearchSpace):
    """Config (conf/space/darts_rnn.yaml): primitives, steps, emsize, nhid, nhidlast and the five
    dropouts of the search supernet (rnn/train_search.py lines 23-48)."""

    name = "darts_rnn"
    genotype_class = RecurrentGenotype
    networks = {"ptb": RecurrentNetwork}
    cell_types = ("recurrent",)
    language_model = True
    # DARTS first and second order. The other strategies mix CNN edges (PC-DARTS's channel sampling,
    # GDAS's and DrNAS's sampled or Dirichlet cells, SDARTS's and DARTS-'s image-step changes) and
    # were published for the CNN space only.
    search_strategies = ("darts",)

    def __init__(self, cfg):
        # Not SearchSpace.__init__: it checks the ops against the image-op registry (darts.ops);
        # this space's ops are the activations of its cell.
        self.cfg = cfg
        primitives = list(cfg.primitives)
        unknown = [name for name in primitives if name not in RNN_PRIMITIVES]
        if unknown:
            raise DartsError(f"unknown recurrent op(s) {', '.join(map(str, unknown))} in space.primitives; "
                             f"valid choices: {', '.join(RNN_PRIMITIVES)}")
        if len(set(primitives)) != len(primitives):
            raise DartsError(f"space.primitives lists an op twice: {primitives}")
        if not [name for name in primitives if name != "none"]:
            raise DartsError("the recurrent space needs an op other than 'none' in space.primitives")
        activations = cfg.get("activations")
        if activations is not None and (isinstance(activations, str) or list(activations) != [DEFAULT_ACTIVATION]):
            raise DartsError(f"space.activations={activations} is for the image spaces' convs; the "
                             "recurrent space's ops are activations themselves: choose them with "
                             f"space.primitives (valid choices: {', '.join(RNN_PRIMITIVES)}) and leave "
                             f"space.activations out (or [{DEFAULT_ACTIVATION}])")
        self.activations = [DEFAULT_ACTIVATION]
        self.primitives = primitives
        self.op_names = list(primitives)
        self.steps = positive_int("space.steps", cfg.get("steps", 8))

    # -- topology ---------------------------------------------------------------------------
    def node_edges(self) -> list[range]:
        """Node i (1..steps) reads nodes 0..i-1: edges [0], [1, 2], [3, 4, 5], ..."""
        return [range(node * (node + 1) // 2, (node + 1) * (node + 2) // 2) for node in range(self.steps)]

    def edge_labels(self) -> list[str]:
        return [f"{node + 1}<-{source}" for node in range(self.steps) for source in range(node + 1)]

    # -- supernet and derivation ------------------------------------------------------------
    def build_supernet(self, num_classes: int, in_channels: int = 0, mixed_op=None) -> nn.Module:
        """``num_classes`` = the vocabulary size; ``in_channels`` is unused (the inputs are tokens)."""
        if mixed_op is not None:
            raise DartsError("the recurrent supernet mixes its ops itself: a strategy's own mixed op cannot be used")
        cfg = self.cfg
        return RecurrentSuperNet(ntoken=num_classes, ninp=cfg.emsize, nhid=cfg.nhid, nhidlast=cfg.nhidlast,
                                 steps=self.steps, primitives=self.primitives, dropout=cfg.dropout,
                                 dropouth=cfg.dropouth, dropoutx=cfg.dropoutx, dropouti=cfg.dropouti,
                                 dropoute=cfg.dropoute)

    def derive(self, weights: dict[str, torch.Tensor], max_skip_connects: int | None = None) -> RecurrentGenotype:
        """One input and its strongest non-``none`` op per node (:func:`derive_recurrent`)."""
        if max_skip_connects is not None:
            raise DartsError("selection.max_skip_connects caps skip_connect edges, which the recurrent space "
                             "does not have; leave it null")
        return derive_recurrent(weights["recurrent"], self.primitives, self.steps)

    def search_objective(self, search_cfg, optim_cfg) -> LanguageModelObjective:
        """The search's loss: NLL, with TAR (``search.tar``) in the weight step, and the second-order
        virtual step clipped at the weights' ``grad_clip`` (rnn/architect.py uses ``args.clip``)."""
        return LanguageModelObjective(tar=float(search_cfg.tar), unrolled_grad_clip=float(optim_cfg.weights.grad_clip))

    def random_architecture(self, generator: torch.Generator) -> Architecture:
        """Per node one uniform input and one uniform non-``none`` op; the node's other edges are off."""
        choices = self.random_op_choices()
        active: list[int | None] = []
        for node in range(self.steps):
            row: list[int | None] = [None] * (node + 1)
            source = int(torch.randint(node + 1, (), generator=generator))
            row[source] = choices[int(torch.randint(len(choices), (), generator=generator))]
            active.extend(row)
        return {"recurrent": active}

    def architecture_genotype(self, architecture: Architecture) -> RecurrentGenotype:
        pairs = []
        for edges in self.node_edges():
            kept = [(self.primitives[architecture["recurrent"][edge]], source)
                    for source, edge in enumerate(edges) if architecture["recurrent"][edge] is not None]
            if len(kept) != 1:
                raise DartsError(f"a recurrent node reads exactly one input; this architecture keeps {len(kept)}")
            pairs.extend(kept)
        return RecurrentGenotype(pairs, range(1, self.steps + 1))

    def published_genotypes(self) -> dict[str, RecurrentGenotype]:
        return dict(PUBLISHED)

    # -- final network ------------------------------------------------------------------------
    def build_network(self, genotype, train_cfg, num_classes: int, in_channels: int = 0) -> nn.Module:
        """The published network (rnn/train.py lines 23-49): ``train.emsize``/``nhid``/``nhidlast``
        and the five dropouts; ``num_classes`` = the vocabulary size."""
        self.network_name(train_cfg.network)
        return RecurrentNetwork(genotype=genotype, ntoken=num_classes, ninp=train_cfg.emsize, nhid=train_cfg.nhid,
                                nhidlast=train_cfg.nhidlast, dropout=train_cfg.dropout,
                                dropouth=train_cfg.dropouth, dropoutx=train_cfg.dropoutx,
                                dropouti=train_cfg.dropouti, dropoute=train_cfg.dropoute)
