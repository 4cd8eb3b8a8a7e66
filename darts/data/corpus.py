"""The language-model data path: a word corpus in the PTB layout, batchified into parallel streams,
and the windows a training epoch walks them in (quark0/darts rnn/data.py, rnn/utils.py ``batchify``
and ``get_batch``, the window loops of rnn/train_search.py lines 179-192 and rnn/train.py 168-178).

Layout: ``dataset.root`` holds three text files (``dataset.files``: the Mikolov PTB split's
``ptb.train.txt``, ``ptb.valid.txt``, ``ptb.test.txt``; WikiText-2's ``wiki.*.tokens``), one
sentence a line, tokens separated by white space. Every line gets an ``<eos>``; the vocabulary is
every token of the three files in order of first appearance, as rnn/data.py builds it. Nothing is
downloaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from darts.data.options import option, required_root
from darts.data.seeds import stream_seed
from darts.errors import DartsError

CORPUS_SPLITS = ("train", "valid", "test")
PTB_FILES = {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"}
END_OF_SENTENCE = "<eos>"


@dataclass
class Corpus:
    vocabulary: list[str]                  # id -> word
    splits: dict[str, torch.Tensor]        # split -> (tokens,) int64

    def __len__(self) -> int:
        return len(self.vocabulary)


def corpus_files(cfg) -> dict[str, Path]:
    """{split: path} under ``dataset.root``; one DartsError naming the expected layout if any is missing."""
    root = required_root(cfg)
    names = dict(PTB_FILES)
    names.update({split: str(name) for split, name in dict(option(cfg, "files", {})).items()})
    unknown = sorted(set(names) - set(CORPUS_SPLITS))
    if unknown:
        raise DartsError(f"dataset.files names unknown split(s) {', '.join(unknown)}; valid choices: "
                         f"{', '.join(CORPUS_SPLITS)}")
    paths = {split: root / names[split] for split in CORPUS_SPLITS}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        layout = ", ".join(f"{root}/{names[split]}" for split in CORPUS_SPLITS)
        raise DartsError(f"dataset {option(cfg, 'name')!r}: missing {', '.join(missing)}. A language-model corpus is "
                         f"three text files in the PTB layout ({layout}: one sentence a line, tokens separated "
                         "by spaces, e.g. the Mikolov Penn Treebank split); nothing is downloaded: put them there "
                         "or set dataset.root (and dataset.files)")
    return paths


def load_corpus(cfg) -> Corpus:
    """The corpus of the ``dataset`` config node (see the module docstring)."""
    word_ids: dict[str, int] = {}
    splits = {}
    for split, path in corpus_files(cfg).items():
        ids = []
        with open(path, encoding="utf-8") as text:
            for line in text:
                for word in line.split() + [END_OF_SENTENCE]:
                    ids.append(word_ids.setdefault(word, len(word_ids)))
        splits[split] = torch.tensor(ids, dtype=torch.int64)
    return Corpus(list(word_ids), splits)


def batchify(tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(tokens,) -> (rows, batch_size): ``batch_size`` parallel streams, the tail that does not fill
    a row dropped (rnn/utils.py ``batchify``). Column b is the b-th contiguous slice of the corpus."""
    rows = tokens.shape[0] // batch_size
    if rows < 2:
        raise DartsError(f"a split of {tokens.shape[0]} tokens has fewer than 2 rows of {batch_size} streams; "
                         "lower the batch size")
    return tokens[:rows * batch_size].view(batch_size, rows).t().contiguous()


@dataclass(frozen=True)
class Window:
    start: int      # first row of the inputs; the targets are rows start+1 .. start+length
    length: int     # rows in the window (the drawn length, cut at the data's end)
    drawn: int      # the drawn length: the learning rate of its step is scaled by drawn / bptt


def window_at(rows: int, start: int, length: int) -> Window:
    return Window(start, min(length, rows - 1 - start), length)


def evaluation_windows(rows: int, bptt: int) -> list[Window]:
    """Consecutive windows of ``bptt`` rows over the whole split (rnn/train.py ``evaluate``)."""
    return [window_at(rows, start, bptt) for start in range(0, rows - 1, bptt)]


def training_windows(rows: int, bptt: int, seed: int, epoch: int, short_window_prob: float = 0.05,
                     length_std: float = 0.0, max_length_delta: int = 20) -> list[Window]:
    """One epoch's windows of random length, from row 0 until the data ends.

    Each window's base is ``bptt``, or ``bptt / 2`` with probability ``short_window_prob``. With
    ``length_std`` = 0 (the search: rnn/train_search.py line 185) the length is that base; otherwise
    (final training: rnn/train.py lines 169-173) a normal draw around it, at least 5 and at most
    ``bptt + max_length_delta``. The draws come from a generator seeded by (seed, epoch), so a
    resumed epoch walks the same windows (the original draws from numpy's global RNG).
    """
    generator = torch.Generator().manual_seed(stream_seed(seed, "bptt", epoch))
    windows, start = [], 0
    while start < rows - 2:
        base = bptt if float(torch.rand((), generator=generator)) < 1 - short_window_prob else bptt / 2
        if length_std:
            length = max(5, int(base + length_std * float(torch.randn((), generator=generator))))
            length = min(length, bptt + max_length_delta)
        else:
            length = int(base)
        windows.append(window_at(rows, start, length))
        start += length
    return windows
