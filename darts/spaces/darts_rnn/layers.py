"""What the recurrent supernet and the final recurrent network share: the ops, the dropouts, the
highway first state, and the language model around the cell (embedding, tied decoder).

Everything follows quark0/darts rnn/model.py (``DARTSCell``, ``RNNModel``) and rnn/utils.py
(``mask2d``, ``LockedDropout``, ``embedded_dropout``). Shapes: tokens (T, B) int64, hidden state
(B, nhid), the cell's outputs (T, B, nhid), log-probabilities (T, B, ntoken). The hidden state is
passed in and returned: nothing is kept on the module between calls.
"""
from __future__ import annotations

import abc
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from darts.errors import DartsError
from darts.spaces.language import LanguageModelOutput

INIT_RANGE = 0.04   # rnn/model.py line 11: every weight uniform in (-0.04, 0.04)

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh, "relu": F.relu, "sigmoid": torch.sigmoid, "identity": lambda h: h,
}


def variational_mask(batch: int, size: int, dropout: float, like: torch.Tensor) -> torch.Tensor:
    """(batch, size) mask of 0 or 1/keep, one per sequence for the whole window (rnn/utils.py
    ``mask2d``: floor(U + keep) / keep, drawn even when dropout is 0, as there)."""
    keep = 1.0 - dropout
    return torch.floor(torch.rand(batch, size, device=like.device, dtype=like.dtype) + keep) / keep


def locked_dropout(x: torch.Tensor, dropout: float, training: bool) -> torch.Tensor:
    """(T, B, D) -> (T, B, D): one Bernoulli mask per sequence, the same at every step (``LockedDropout``)."""
    if not training or not dropout:
        return x
    mask = x.new_empty(1, x.shape[1], x.shape[2]).bernoulli_(1 - dropout) / (1 - dropout)
    return x * mask


def embedded_dropout(embedding: nn.Embedding, words: torch.Tensor, dropout: float) -> torch.Tensor:
    """(T, B) -> (T, B, ninp) with whole embedding rows (words) dropped (``embedded_dropout``)."""
    weight = embedding.weight
    if dropout:
        mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - dropout) / (1 - dropout)
        weight = weight * mask
    return F.embedding(words, weight)


def check_sizes(ninp: int, nhid: int, nhidlast: int) -> None:
    """rnn/model.py line 101 asserts ninp == nhid == nhidlast: the decoder is tied to the embedding."""
    if not ninp == nhid == nhidlast:
        raise DartsError(f"the DARTS recurrent network ties its decoder to its embedding, so emsize, nhid and "
                         f"nhidlast must be equal; got {ninp}, {nhid}, {nhidlast}")


class HighwayCell(nn.Module, abc.ABC):
    """The cell's weights and its first state (rnn/model.py ``DARTSCell.__init__`` and
    ``_compute_init_state``, lines 16-56): W0 (ninp + nhid, 2 nhid) and one W_i (nhid, 2 nhid) per node.

    first_state: x (B, ninp), h_prev (B, nhid) -> s0 = h_prev + sigmoid(c0) (tanh(h0) - h_prev),
    [c0, h0] = [x * x_mask, h_prev * h_mask] W0 (no masks in eval mode).
    """

    def __init__(self, ninp: int, nhid: int, steps: int, dropouth: float, dropoutx: float):
        super().__init__()
        self.ninp, self.nhid, self.steps = ninp, nhid, steps
        self.dropouth, self.dropoutx = dropouth, dropoutx
        self.W0 = nn.Parameter(torch.empty(ninp + nhid, 2 * nhid).uniform_(-INIT_RANGE, INIT_RANGE))
        self.Ws = nn.ParameterList([nn.Parameter(torch.empty(nhid, 2 * nhid).uniform_(-INIT_RANGE, INIT_RANGE))
                                    for _ in range(steps)])

    def first_state(self, x, h_prev, x_mask, h_mask) -> torch.Tensor:
        if x_mask is not None:
            x, masked_h = x * x_mask, h_prev * h_mask
        else:
            masked_h = h_prev
        c0, h0 = torch.split(torch.cat([x, masked_h], dim=-1).mm(self.W0), self.nhid, dim=-1)
        return h_prev + c0.sigmoid() * (h0.tanh() - h_prev)

    @abc.abstractmethod
    def step(self, x: torch.Tensor, h_prev: torch.Tensor, x_mask, h_mask, arch) -> torch.Tensor:
        """One time step: (B, ninp), (B, nhid) -> h_t (B, nhid); the search cell mixes every op by
        ``arch``, the genotype cell runs its one op per node."""

    def forward(self, inputs: torch.Tensor, hidden: torch.Tensor, arch=None) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs (T, B, ninp), hidden (B, nhid) -> outputs (T, B, nhid), last hidden (B, nhid).
        The masks are drawn once per window (rnn/model.py lines 33-37)."""
        batch = inputs.shape[1]
        if self.training:
            x_mask = variational_mask(batch, self.ninp, self.dropoutx, inputs)
            h_mask = variational_mask(batch, self.nhid, self.dropouth, inputs)
        else:
            x_mask = h_mask = None
        outputs = []
        for t in range(inputs.shape[0]):
            hidden = self.step(inputs[t], hidden, x_mask, h_mask, arch)
            outputs.append(hidden)
        return torch.stack(outputs), hidden


class RecurrentLanguageModel(nn.Module):
    """Embedding -> one recurrent cell -> locked dropout -> decoder tied to the embedding ->
    log-softmax (rnn/model.py ``RNNModel``, lines 91-159); modules are built and initialised in the
    original's order, so one seed draws the same weights.

    forward(tokens (T, B), hidden (B, nhid)[, arch]) -> :class:`LanguageModelOutput`.
    """

    def __init__(self, ntoken: int, ninp: int, nhid: int, nhidlast: int, dropout: float, dropouth: float,
                 dropoutx: float, dropouti: float, dropoute: float, make_cell: Callable[[], HighwayCell]):
        super().__init__()
        check_sizes(ninp, nhid, nhidlast)
        self.ntoken, self.ninp, self.nhid = ntoken, ninp, nhid
        self.dropout, self.dropouti, self.dropoute = dropout, dropouti, dropoute
        self.encoder = nn.Embedding(ntoken, ninp)
        self.cell = make_cell()
        self.decoder = nn.Linear(ninp, ntoken)
        self.decoder.weight = self.encoder.weight
        with torch.no_grad():
            self.encoder.weight.uniform_(-INIT_RANGE, INIT_RANGE)
            self.decoder.bias.zero_()
            self.decoder.weight.uniform_(-INIT_RANGE, INIT_RANGE)   # the tied matrix, drawn again as there

    def init_hidden(self, batch: int) -> torch.Tensor:
        """(B, nhid) zeros: the state every stream starts an epoch with."""
        return self.encoder.weight.new_zeros(batch, self.nhid)

    def run(self, tokens: torch.Tensor, hidden: torch.Tensor, arch=None) -> LanguageModelOutput:
        emb = embedded_dropout(self.encoder, tokens, self.dropoute if self.training else 0.0)
        emb = locked_dropout(emb, self.dropouti, self.training)
        raw, hidden = self.cell(emb, hidden, arch)
        output = locked_dropout(raw, self.dropout, self.training)
        logits = self.decoder(output.reshape(-1, self.ninp))
        log_probs = F.log_softmax(logits, dim=-1).view(tokens.shape[0], tokens.shape[1], self.ntoken)
        return LanguageModelOutput(log_probs, hidden, raw)
