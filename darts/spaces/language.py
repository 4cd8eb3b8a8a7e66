"""The language-model contract, shared by every recurrent space: what its supernet and networks
return, what a batch is, and what a search step minimises (for a strategy that calls
``objective.loss``: the negative log-likelihood of a text window, carrying each stream's hidden state).

A language-model space (``language_model = True``) builds a supernet called as
``supernet(tokens (T, B), arch, hidden (B, nhid))`` and networks called as
``network(tokens, hidden)``, both returning a :class:`LanguageModelOutput`.

A batch is a :class:`TextWindow`: its tokens, the next tokens, the hidden state the window starts
from and, optionally, the :class:`HiddenCarry` of its stream. Every forward on a window writes its
final hidden state (detached: truncated backpropagation through time) into the carry, so the last
forward a step runs on a window is what the stream's next window starts from: in a first-order step
the alpha and the weight forwards; in a second-order step the weight step on the training window
(after the virtual-step and finite-difference passes) and the unrolled model's pass on the alpha
window, as quark0/darts rnn/train_search.py (lines 203-216) and rnn/architect.py (lines 59-80) carry
``hidden`` and ``hidden_valid``. The supernet keeps nothing between calls.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F


class LanguageModelOutput(NamedTuple):
    log_probs: torch.Tensor   # (T, B, ntoken)
    hidden: torch.Tensor      # (B, nhid): the state after the last step, for the next window
    raw: torch.Tensor         # (T, B, nhid): the cell's outputs before the output dropout (for TAR)


class HiddenCarry:
    """The hidden state (B, nhid) a stream's next window starts from; None at the start of an epoch."""

    def __init__(self, state: torch.Tensor | None = None):
        self.state = state


class TextWindow(NamedTuple):
    inputs: torch.Tensor            # (T, B) int64 tokens
    targets: torch.Tensor           # (T * B,) int64: the next token at every position, time-major
    hidden: torch.Tensor            # (B, nhid): the state the window starts from
    carry: HiddenCarry | None = None


class ObjectiveOutput(NamedTuple):
    log_probs: torch.Tensor         # (T * B, ntoken)
    nll: torch.Tensor               # scalar: the mean negative log-likelihood, without regularisers


@dataclass(frozen=True)
class LanguageModelObjective:
    """NLL of the window; ``regularized`` (the weight step only, rnn/train_search.py lines 217-224)
    adds the temporal activation regulariser ``tar * mean((raw_{t+1} - raw_t)^2)`` and the activation
    regulariser ``ar * mean(dropped^2)`` is not offered (the published alpha is 0).

    ``unrolled_grad_clip``: rnn/architect.py clips the virtual step's gradient, and the unrolled
    model's weight gradient, to this norm (``args.clip``) in a second-order step.
    """

    tar: float = 1e-3
    unrolled_grad_clip: float | None = 0.25

    def loss(self, forward, batch: TextWindow, arch, regularized: bool = False):
        out = forward(batch.inputs, arch, batch.hidden)
        log_probs = out.log_probs.reshape(-1, out.log_probs.shape[-1])
        if log_probs.dtype in (torch.float16, torch.bfloat16):
            log_probs = log_probs.float()
        nll = F.nll_loss(log_probs, batch.targets)
        if batch.carry is not None:
            batch.carry.state = out.hidden.detach()
        loss = nll
        if regularized and self.tar:
            raw = out.raw.float()
            loss = loss + self.tar * (raw[1:] - raw[:-1]).pow(2).mean()
        return loss, ObjectiveOutput(log_probs, nll)

    def metrics(self, prefix: str, loss: torch.Tensor, output: ObjectiveOutput, batch: TextWindow) -> dict:
        """Sums over the window's tokens: ``loss_sum`` of the plain NLL (perplexity = exp(loss)),
        ``correct`` next-token predictions, ``count`` tokens."""
        count = torch.full((), float(batch.targets.shape[0]), device=batch.targets.device)
        return {f"{prefix}loss_sum": output.nll.detach().float() * count,
                f"{prefix}correct": (output.log_probs.detach().argmax(1) == batch.targets).sum().float(),
                f"{prefix}count": count}
