"""The DARTS recurrent supernet: every node a mixture over every earlier node and every op,
weighted by the architecture weights it is given (quark0/darts rnn/model_search.py
``DARTSCellSearch.cell``, lines 16-43, and ``RNNModelSearch``)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from darts.errors import DartsError
from darts.spaces.darts_rnn.layers import ACTIVATIONS, HighwayCell, RecurrentLanguageModel
from darts.spaces.language import LanguageModelOutput
from darts.spaces.mixed import ArchWeights


class SearchCell(HighwayCell):
    """One affine-free BatchNorm1d, applied to s0 and to every node's mixed state (model_search.py
    lines 14, 18, 39). Node i's mixed state, from the states s_0..s_{i-1} (i, B, nhid):

        [c, h] = (s_j * h_mask) W_i,   s_i = sum_j sum_{f != none} w[edge(j, i), f] (s_j + sigmoid(c)(f(h) - s_j))

    with w the (edges, ops) weights; h_t is the mean of nodes 1..steps.
    """

    def __init__(self, ninp: int, nhid: int, steps: int, dropouth: float, dropoutx: float,
                 primitives: Sequence[str]):
        super().__init__(ninp, nhid, steps, dropouth, dropoutx)
        self.primitives = tuple(primitives)
        self.live = [(k, ACTIVATIONS[name]) for k, name in enumerate(self.primitives) if name != "none"]
        self.bn = nn.BatchNorm1d(nhid, affine=False)

    def step(self, x, h_prev, x_mask, h_mask, arch: ArchWeights) -> torch.Tensor:
        edge_weights = arch["recurrent"]
        if edge_weights.active is not None or edge_weights.edge_scales is not None:
            raise DartsError("the recurrent supernet mixes every op of every edge: it takes plain softmax weights")
        weights = edge_weights.weights
        states = self.bn(self.first_state(x, h_prev, x_mask, h_mask)).unsqueeze(0)   # (1, B, nhid)
        offset = 0
        for node in range(self.steps):
            masked = states * h_mask.unsqueeze(0) if h_mask is not None else states
            ch = masked.reshape(-1, self.nhid).mm(self.Ws[node]).view(node + 1, -1, 2 * self.nhid)
            c, h = torch.split(ch, self.nhid, dim=-1)
            c = c.sigmoid()
            mixed = torch.zeros_like(states[0])
            for k, activation in self.live:
                unweighted = states + c * (activation(h) - states)
                mixed = mixed + (weights[offset:offset + node + 1, k, None, None] * unweighted).sum(dim=0)
            states = torch.cat([states, self.bn(mixed).unsqueeze(0)], 0)
            offset += node + 1
        return states[-self.steps:].mean(dim=0)


class RecurrentSuperNet(RecurrentLanguageModel):
    """forward(tokens (T, B) int64, arch {"recurrent": EdgeWeights of (edges, ops)}, hidden (B, nhid))
    -> :class:`~darts.spaces.darts_rnn.layers.LanguageModelOutput`. Owns no architecture parameters."""

    def __init__(self, ntoken: int, ninp: int, nhid: int, nhidlast: int, steps: int, primitives: Sequence[str],
                 dropout: float = 0.75, dropouth: float = 0.25, dropoutx: float = 0.75, dropouti: float = 0.2,
                 dropoute: float = 0.0):
        super().__init__(ntoken, ninp, nhid, nhidlast, dropout, dropouth, dropoutx, dropouti, dropoute,
                         lambda: SearchCell(ninp, nhid, steps, dropouth, dropoutx, primitives))
        self.config = dict(ntoken=ntoken, ninp=ninp, nhid=nhid, nhidlast=nhidlast, steps=steps,
                           primitives=list(primitives), dropout=dropout, dropouth=dropouth, dropoutx=dropoutx,
                           dropouti=dropouti, dropoute=dropoute)

    def forward(self, tokens: torch.Tensor, arch: ArchWeights, hidden: torch.Tensor) -> LanguageModelOutput:
        return self.run(tokens, hidden, arch)
