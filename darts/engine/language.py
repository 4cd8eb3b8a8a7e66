"""What the language-model tasks share (:mod:`darts.engine.language_search`,
:mod:`darts.engine.language_final`): the corpus on the device, the windows a stream is walked in,
perplexity evaluation, and the per-window learning-rate scale of quark0/darts rnn/train_search.py
(lines 187-188, 240) and rnn/train.py (lines 175-176, 214)."""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from pathlib import Path

from darts import viz
from darts.data.corpus import Corpus, Window, batchify, load_corpus, training_windows, window_at
from darts.errors import DartsError
from darts.runtime import Runtime, build_runtime
from darts.spaces.language import HiddenCarry, LanguageModelOutput, TextWindow
from darts.tracking import RunLogger


def language_corpus(cfg, context) -> Corpus:
    """The corpus of ``cfg.dataset``, refusing what this task cannot run (image datasets, DDP)."""
    if context.dist.enabled:
        raise DartsError("language-model search and training run in one process; launch without torchrun")
    if cfg.dataset.get("kind") != "text":
        raise DartsError(f"the {cfg.space.name} space trains a language model on a text corpus; dataset "
                         f"{cfg.dataset.get('name')!r} is not one: use dataset=ptb or dataset=wikitext2 "
                         "(or any corpus in the PTB layout)")
    return load_corpus(cfg.dataset)


def language_runtime(cfg, device) -> Runtime:
    """The run's runtime in float32 and eager whatever ``fast`` says: a recurrence over windows of
    random length would recompile for every length, and the published recipe (lr 20, clip 0.25)
    is tuned in float32."""
    return dataclasses.replace(build_runtime(cfg.fast, device, cfg.deterministic), compile=False, amp_dtype=None)


def show_genotype(genotype, run_dir: Path, logger: RunLogger, step: int) -> None:
    """The genotype as TensorBoard text and its cell drawn (``run_dir/cells``), at ``step``."""
    logger.text("genotype", f"`{genotype}`", step)
    for cell, path in viz.draw_genotype(genotype, run_dir / "cells").items():
        logger.image(f"cells/{cell}", viz.load_png(path), step)


def streams(tokens: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    """(tokens,) -> (rows, batch_size) on ``device``."""
    return batchify(tokens, batch_size).to(device)


def perplexity(nll: float | None) -> float | None:
    return None if nll is None else math.exp(min(nll, 700.0))


def text_window(data: torch.Tensor, window: Window, carry: HiddenCarry, init_hidden) -> TextWindow:
    """The window's tokens (T, B), its next tokens (T * B,) and the state it starts from (the
    carry's, or zeros at the start of an epoch)."""
    inputs = data[window.start:window.start + window.length]
    targets = data[window.start + 1:window.start + 1 + window.length].reshape(-1)
    hidden = carry.state if carry.state is not None else init_hidden(data.shape[1])
    return TextWindow(inputs, targets, hidden, carry)


def paired_windows(data: torch.Tensor, bptt: int, position: Callable[[], int], carry: HiddenCarry,
                   init_hidden) -> Iterator[TextWindow]:
    """Endless windows of ``bptt`` rows of ``data`` at ``position() % (rows - 1)``: the search's
    architecture windows follow the training window's row (rnn/train_search.py line 191)."""
    rows = data.shape[0]
    while True:
        yield text_window(data, window_at(rows, position() % (rows - 1), bptt), carry, init_hidden)


def epoch_windows(data: torch.Tensor, cfg, seed: int, epoch: int) -> list[Window]:
    """An epoch's training windows from the ``search``/``train`` node's ``bptt``, ``short_window_prob``,
    ``seq_len_std``, ``max_seq_len_delta``, cut to ``max_steps_per_epoch`` (CPU-sized runs)."""
    windows = training_windows(data.shape[0], int(cfg.bptt), seed, epoch, float(cfg.short_window_prob),
                               float(cfg.seq_len_std), int(cfg.max_seq_len_delta))
    cap = cfg.get("max_steps_per_epoch")
    return windows[:cap] if cap else windows


@contextlib.contextmanager
def scaled_learning_rate(optimizer: torch.optim.Optimizer, factor: float):
    """The step's learning rate times ``factor`` (drawn length / bptt), restored afterwards."""
    group = optimizer.param_groups[0]
    base = group["lr"]
    group["lr"] = base * factor
    try:
        yield
    finally:
        group["lr"] = base


@torch.no_grad()
def evaluate_nll(forward: Callable[[torch.Tensor, torch.Tensor], LanguageModelOutput], data: torch.Tensor,
                 bptt: int, init_hidden, max_windows: int | None = None) -> float:
    """Mean NLL per token over consecutive ``bptt`` windows of ``data`` (rows, B), the hidden state
    carried from window to window (rnn/train.py ``evaluate``). The caller sets eval mode. The mean is
    over the targets scored; rnn/train.py divides the summed window means by the rows (one more)."""
    hidden = init_hidden(data.shape[1])
    total = torch.zeros((), dtype=torch.float64, device=data.device)
    count = 0
    for index, start in enumerate(range(0, data.shape[0] - 1, bptt)):
        if max_windows is not None and index >= max_windows:
            break
        window = window_at(data.shape[0], start, bptt)
        out = forward(data[start:start + window.length], hidden)
        hidden = out.hidden
        targets = data[start + 1:start + 1 + window.length].reshape(-1)
        log_probs = out.log_probs.reshape(-1, out.log_probs.shape[-1]).float()
        total += F.nll_loss(log_probs, targets, reduction="sum").double()
        count += targets.numel()
    return float(total) / count
