"""The final DARTS recurrent network: one discrete cell (quark0/darts rnn/model.py ``DARTSCell.cell``,
lines 71-88) in the language model of ``RNNModel``; trained from scratch by train_final.py."""
from __future__ import annotations

import torch

from darts.spaces.darts_rnn.genotype import RecurrentGenotype
from darts.spaces.darts_rnn.layers import ACTIVATIONS, HighwayCell, RecurrentLanguageModel
from darts.spaces.language import LanguageModelOutput


class GenotypeCell(HighwayCell):
    """Node i reads its one input s_j: [c, h] = (s_j * h_mask) W_i, s_i = s_j + sigmoid(c)(f(h) - s_j);
    h_t is the mean of the ``concat`` nodes. No BatchNorm (the published final cell has none)."""

    def __init__(self, ninp: int, nhid: int, dropouth: float, dropoutx: float, genotype: RecurrentGenotype):
        super().__init__(ninp, nhid, genotype.steps, dropouth, dropoutx)
        self.genotype = genotype

    def step(self, x, h_prev, x_mask, h_mask, arch=None) -> torch.Tensor:
        states = [self.first_state(x, h_prev, x_mask, h_mask)]
        for node, (op, source) in enumerate(self.genotype.recurrent):
            s_prev = states[source]
            ch = (s_prev * h_mask if h_mask is not None else s_prev).mm(self.Ws[node])
            c, h = torch.split(ch, self.nhid, dim=-1)
            states.append(s_prev + c.sigmoid() * (ACTIVATIONS[op](h) - s_prev))
        return torch.stack([states[node] for node in self.genotype.concat], -1).mean(-1)


class RecurrentNetwork(RecurrentLanguageModel):
    """forward(tokens (T, B) int64, hidden (B, nhid)) -> :class:`LanguageModelOutput`; ``config`` and
    ``genotype`` rebuild it (``RecurrentNetwork(genotype=..., **config)``, :mod:`darts.export`)."""

    network_name = "ptb"

    def __init__(self, genotype: RecurrentGenotype, ntoken: int, ninp: int = 850, nhid: int = 850,
                 nhidlast: int = 850, dropout: float = 0.75, dropouth: float = 0.25, dropoutx: float = 0.75,
                 dropouti: float = 0.2, dropoute: float = 0.1):
        super().__init__(ntoken, ninp, nhid, nhidlast, dropout, dropouth, dropoutx, dropouti, dropoute,
                         lambda: GenotypeCell(ninp, nhid, dropouth, dropoutx, genotype))
        self.genotype = genotype
        self.config = dict(ntoken=ntoken, ninp=ninp, nhid=nhid, nhidlast=nhidlast, dropout=dropout,
                           dropouth=dropouth, dropoutx=dropoutx, dropouti=dropouti, dropoute=dropoute)

    def forward(self, tokens: torch.Tensor, hidden: torch.Tensor) -> LanguageModelOutput:
        return self.run(tokens, hidden)

    def set_drop_path_prob(self, p: float) -> None:
        """The space contract's hook; a recurrent network has no drop path (it has its five dropouts)."""
