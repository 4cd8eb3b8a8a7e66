"""The task of a recurrent (language-model) search: DARTS on a text corpus, as quark0/darts
rnn/train_search.py runs it.

The weights train on the training split, batchified into ``search.batch_size`` streams and walked
in windows of random length (:func:`~darts.data.corpus.training_windows`); the architecture trains
on the validation split batchified the same way, its window at the training window's row (lines
116-117, 191). Each stream carries its hidden state from window to window
(:class:`~darts.spaces.language.HiddenCarry`), from zeros at each epoch's start; each step's weight
learning rate is scaled by the window's drawn length / bptt (lines 187-188). Every epoch the
supernet is evaluated on the validation split (``search.eval_batch_size`` streams, line 274), the
genotype derived, the weights drawn as a heatmap and the cell as a picture.
"""
from __future__ import annotations

from pathlib import Path

import torch

from darts import viz
from darts.checkpoint import load_state_dicts
from darts.errors import DartsError
from darts.engine.context import RunContext
from darts.engine.evaluate import entropy
from darts.engine.language import (epoch_windows, evaluate_nll, language_corpus, language_runtime, paired_windows,
                                   perplexity, scaled_learning_rate, show_genotype, streams, text_window)
from darts.engine.loop import Task
from darts.engine.supernet import genotype_record
from darts.resources import parse_resource
from darts.spaces.base import build_space
from darts.spaces.language import HiddenCarry
from darts.strategies.base import SupernetStrategy
from darts.tracking import RunLogger, write_json


def check_language_search(cfg, space, strategy: SupernetStrategy) -> None:
    """Refuse, before anything runs, what a recurrent search cannot do."""
    if strategy.name not in space.search_strategies:
        raise DartsError(f"strategy {strategy.name!r} cannot search the {space.name} space; valid choices: "
                         f"{', '.join(space.search_strategies)}")
    selection = (cfg.get("selection") or {}).get("name", "argmax")
    if selection != "argmax":
        raise DartsError(f"selection {selection!r} does not apply to the {space.name} space; valid choices: argmax")
    early_stop = (cfg.get("early_stop") or {}).get("name", "none")
    if early_stop != "none":
        raise DartsError(f"early_stop {early_stop!r} does not apply to the {space.name} space; valid choices: none")
    if parse_resource(cfg.get("resource")).active:
        raise DartsError(f"resource-aware search (resource.metric, resource.max_*) does not apply to the {space.name} "
                         "space, whose costs are not measured; use resource=none")


class LanguageModelSearch(Task):
    kind = "search"
    progress_keys = ("loss", "alpha_loss", "valid_ppl")

    def __init__(self, cfg, context: RunContext, strategy: SupernetStrategy):
        self.cfg, self.search_cfg = cfg, cfg.search
        self.strategy, self.name = strategy, strategy.name
        self.space = build_space(cfg.space)
        check_language_search(cfg, self.space, strategy)
        corpus = language_corpus(cfg, context)
        sc, device = self.search_cfg, context.device
        self.vocabulary_size = len(corpus)
        self.train_data = streams(corpus.splits["train"], sc.batch_size, device)
        self.alpha_data = streams(corpus.splits["valid"], sc.batch_size, device)
        self.valid_data = streams(corpus.splits["valid"], sc.eval_batch_size, device)
        self.runtime = language_runtime(cfg, device)
        self.model = strategy.build_supernet(self.space, self.vocabulary_size, 0)
        self.epochs, self.log_every, self.bptt = sc.epochs, sc.log_every, int(sc.bptt)
        self.windows = epoch_windows(self.train_data, sc, cfg.seed, 0)
        self.steps_per_epoch = len(self.windows)
        strategy.setup(self.space, self.model, cfg.optim, self.epochs, self.steps_per_epoch, self.runtime)
        strategy.set_objective(self.space.search_objective(sc, cfg.optim))
        self.carries = {"weights": HiddenCarry(), "alphas": HiddenCarry()}
        self.position = 0   # the row of the current training window
        self.alpha_windows = paired_windows(self.alpha_data, self.bptt, lambda: self.position,
                                            self.carries["alphas"], self.model.init_hidden)
        self.lr_scale = 1.0
        self.genotype = None
        self.best: dict | None = None   # {"epoch", "value"}: the lowest validation loss so far

    # -- checkpoints ------------------------------------------------------------------
    def state(self) -> dict:
        return {"model": self.model.state_dict(),
                "strategy": {key: obj.state_dict() for key, obj in self.strategy.checkpointables().items()},
                "hidden": {name: carry.state for name, carry in self.carries.items()}, "best": self.best}

    def load_state(self, state: dict, source: str) -> None:
        load_state_dicts({"model": self.model}, state, source)
        load_state_dicts(self.strategy.checkpointables(), state["strategy"], source)
        for name, carry in self.carries.items():
            carry.state = state["hidden"][name]
        self.best = state.get("best")

    # -- the loop's parts ---------------------------------------------------------------------
    def start_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        self.strategy.start_epoch(epoch)
        self.windows = epoch_windows(self.train_data, self.search_cfg, self.cfg.seed, epoch)
        self.steps_per_epoch = len(self.windows)
        return self.strategy.learning_rates()

    def batches(self, epoch: int, start: int):
        if start == 0:   # every stream starts an epoch from zeros (rnn/train_search.py lines 176-177)
            for carry in self.carries.values():
                carry.state = None
        for window in self.windows[start:]:
            self.position, self.lr_scale = window.start, window.drawn / self.bptt
            yield text_window(self.train_data, window, self.carries["weights"], self.model.init_hidden)

    def train_step(self, batch, epoch: int) -> dict[str, torch.Tensor]:
        self.model.train()
        with scaled_learning_rate(self.strategy.w_optimizer, self.lr_scale):
            return self.strategy.step(batch, self.alpha_windows, epoch)

    def end_epoch(self, epoch: int, record: dict) -> None:
        self.strategy.end_epoch(epoch)
        arch = self.strategy.eval_arch_weights()
        self.model.eval()
        valid_loss = evaluate_nll(lambda tokens, hidden: self.model(tokens, arch, hidden), self.valid_data,
                                  self.bptt, self.model.init_hidden, self.search_cfg.get("eval_max_batches"))
        self.model.train()
        record.update(valid_loss=valid_loss, valid_ppl=perplexity(valid_loss), ppl=perplexity(record.get("loss")),
                      alpha_ppl=perplexity(record.get("alpha_loss")))
        if self.best is None or valid_loss < self.best["value"]:
            self.best = {"epoch": epoch, "value": valid_loss}
            record["is_best"] = True
        self.genotype = self.strategy.genotype()
        weights = self.strategy.mixing_weights()
        record["entropy_recurrent"] = entropy(weights["recurrent"])
        record["genotype"] = str(self.genotype)

    def log_epoch(self, epoch: int, record: dict, logger: RunLogger, run_dir: Path) -> None:
        labels = self.space.edge_labels()
        for cell, cell_weights in self.strategy.mixing_weights().items():
            logger.image(f"alphas/{cell}", viz.alpha_heatmap(cell_weights.float(), self.space.primitives, labels,
                                                            title=f"{cell} epoch {epoch}"), epoch)
        show_genotype(self.genotype, run_dir, logger, epoch)
        (run_dir / "genotypes").mkdir(exist_ok=True)
        write_json(run_dir / "genotypes" / f"epoch_{epoch:03d}.json", genotype_record(self.genotype))
        logger.console(f"  valid ppl {record['valid_ppl']:.2f}  genotype {self.genotype}")

    def finish(self, run_dir: Path, logger: RunLogger, writes: bool, history: list[dict]) -> dict:
        genotype = self.strategy.genotype()
        last = history[-1] if history else {}
        if writes:
            write_json(run_dir / "genotype.json", genotype_record(genotype))
        return {
            "strategy": self.strategy.name, "space": self.space.name,
            "genotype": genotype.to_dict(), "genotype_string": str(genotype),
            "genotype_epoch": last.get("epoch"),
            "best_epoch": self.best["epoch"] if self.best else None,
            "alphas": self.strategy.arch_record(),
            "softmax_weights": {cell: w.float().tolist() for cell, w in self.strategy.mixing_weights().items()},
            "train_loss": last.get("loss"), "train_ppl": last.get("ppl"),
            "alpha_loss": last.get("alpha_loss"), "alpha_ppl": last.get("alpha_ppl"),
            "valid_loss": last.get("valid_loss"), "valid_ppl": last.get("valid_ppl"),
            "vocabulary_size": self.vocabulary_size,
            "weight_params": sum(p.numel() for p in self.model.parameters()),
            "runtime": self.runtime.describe(),
        }
