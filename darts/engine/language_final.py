"""The task of final training of a recurrent genotype: the published language model trained from
scratch, as quark0/darts rnn/train.py trains it.

SGD (no momentum) on windows of random length (:func:`~darts.data.corpus.training_windows`), the
learning rate of each step scaled by the window's drawn length / bptt, the loss with TAR, gradients
clipped to ``train.optimizer.grad_clip`` (lines 168-214). After every epoch the validation split
is scored; once a validation loss is worse than the best of those older than the last
``train.asgd.nonmono`` epochs, SGD is switched to averaged SGD (ASGD, t0 = 0, lambd = 0; lines
302-304), whose averaged weights are what is scored from then on (lines 268-287). The best scored
weights are exported as ``model.pt`` and scored on the test split (``train.test_batch_size`` = 1
stream, lines 313-318).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn

from darts import export
from darts.checkpoint import load_checkpoint, load_state_dicts
from darts.engine.context import RunContext
from darts.engine.language import (epoch_windows, evaluate_nll, language_corpus, language_runtime, perplexity,
                                   scaled_learning_rate, show_genotype, streams, text_window)
from darts.engine.loop import Task
from darts.engine.supernet import genotype_record
from darts.spaces.base import build_space
from darts.spaces.language import HiddenCarry, LanguageModelObjective
from darts.tracking import RunLogger, write_json

EXPORT_NAME = "model.pt"
OPTIMIZERS = ("sgd", "asgd")


def should_switch(valid_losses: list[float], nonmono: int) -> bool:
    """rnn/train.py line 302: the newest loss is worse than the best of all but the last ``nonmono``
    before it (``valid_losses`` holds the SGD epochs' losses, the newest last)."""
    history, newest = valid_losses[:-1], valid_losses[-1]
    return len(history) > nonmono and newest > min(history[:-nonmono])


class LanguageModelTraining(Task):
    kind = "final"
    progress_keys = ("loss", "valid_ppl")

    def __init__(self, cfg, context: RunContext):
        self.cfg, self.train_cfg = cfg, cfg.train
        tc, device = cfg.train, context.device
        self.space = build_space(cfg.space)
        self.genotype = self.space.resolve_genotype(cfg.genotype)
        self.name = self.space.network_name(tc.network)
        corpus = language_corpus(cfg, context)
        self.vocabulary_size = len(corpus)
        self.train_data = streams(corpus.splits["train"], tc.batch_size, device)
        self.valid_data = streams(corpus.splits["valid"], tc.eval_batch_size, device)
        self.test_data = streams(corpus.splits["test"], tc.test_batch_size, device)
        self.runtime = language_runtime(cfg, device)
        self.model = self.space.build_network(self.genotype, tc, self.vocabulary_size, 0)
        self.forward = self.runtime.prepare(self.model)
        self.params = list(self.model.parameters())
        self.objective = LanguageModelObjective(tar=float(tc.tar), unrolled_grad_clip=None)
        self.epochs, self.log_every, self.bptt = tc.epochs, tc.log_every, int(tc.bptt)
        self.windows = epoch_windows(self.train_data, tc, cfg.seed, 0)
        self.steps_per_epoch = len(self.windows)
        self.optimizer_kind = "sgd"
        self.optimizer = self.build_optimizer("sgd")
        self.carry = HiddenCarry()
        self.lr_scale = 1.0
        self.sgd_valid_losses: list[float] = []   # rnn/train.py's best_val_loss: the SGD epochs' losses
        self.best: dict | None = None
        self.train_time_s, self.tokens_seen = 0.0, 0
        self.epoch_started: float | None = None

    def build_optimizer(self, kind: str) -> torch.optim.Optimizer:
        opt = self.train_cfg.optimizer
        if kind == "sgd":
            return torch.optim.SGD(self.params, lr=opt.lr, weight_decay=opt.weight_decay)
        asgd = self.train_cfg.asgd
        return torch.optim.ASGD(self.params, lr=opt.lr, t0=asgd.t0, lambd=asgd.lambd, weight_decay=opt.weight_decay)

    # -- checkpoints ------------------------------------------------------------------
    def state(self) -> dict:
        running = time.time() - self.epoch_started if self.epoch_started is not None else 0.0
        return {"model": self.model.state_dict(), "optimizer_kind": self.optimizer_kind,
                "optimizer": self.optimizer.state_dict(), "hidden": self.carry.state,
                "genotype": self.genotype.to_dict(), "sgd_valid_losses": list(self.sgd_valid_losses),
                "best": self.best, "train_time_s": self.train_time_s + running, "tokens_seen": self.tokens_seen}

    def load_state(self, state: dict, source: str) -> None:
        export.check_compatible(self.model, state.get("model"), genotype=state.get("genotype"), source=source)
        self.optimizer_kind = state["optimizer_kind"]
        self.optimizer = self.build_optimizer(self.optimizer_kind)
        load_state_dicts({"model": self.model, "optimizer": self.optimizer}, state, source)
        self.carry.state = state["hidden"]
        self.sgd_valid_losses = list(state["sgd_valid_losses"])
        self.best = state["best"]
        self.train_time_s, self.tokens_seen = state["train_time_s"], state["tokens_seen"]

    # -- the loop's parts ---------------------------------------------------------------------
    def start(self, run_dir: Path, logger: RunLogger, writes: bool, fresh: bool) -> None:
        if writes:
            write_json(run_dir / "genotype.json", genotype_record(self.genotype))
            show_genotype(self.genotype, run_dir, logger, 0)

    def start_epoch(self, epoch: int) -> dict:
        self.model.train()
        self.windows = epoch_windows(self.train_data, self.train_cfg, self.cfg.seed, epoch)
        self.steps_per_epoch = len(self.windows)
        self.epoch_started = time.time()
        return {"lr": self.optimizer.param_groups[0]["lr"], "optimizer": self.optimizer_kind}

    def batches(self, epoch: int, start: int):
        if start == 0:   # rnn/train.py line 166: every epoch starts from zeros
            self.carry.state = None
        for window in self.windows[start:]:
            self.lr_scale = window.drawn / self.bptt
            yield text_window(self.train_data, window, self.carry, self.model.init_hidden)

    def train_step(self, batch, epoch: int) -> dict[str, torch.Tensor]:
        self.tokens_seen += batch.targets.numel()
        loss, output = self.objective.loss(lambda tokens, arch, hidden: self.forward(tokens, hidden), batch, None,
                                           regularized=True)
        with scaled_learning_rate(self.optimizer, self.lr_scale):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.params, self.train_cfg.optimizer.grad_clip)
            self.optimizer.step()
        return self.objective.metrics("", loss, output, batch)

    def scored_weights(self) -> dict[str, torch.Tensor]:
        """The weights validation scores: ASGD's averages once it runs (rnn/train.py lines 268-272)."""
        weights = {name: p.detach() for name, p in self.model.named_parameters()}
        if self.optimizer_kind == "asgd":
            for name, param in self.model.named_parameters():
                if "ax" in self.optimizer.state.get(param, {}):
                    weights[name] = self.optimizer.state[param]["ax"]
        return weights

    def score(self, data: torch.Tensor, weights: dict[str, torch.Tensor]) -> float:
        """Mean validation/test NLL of the network with ``weights`` in place of its own."""
        saved = {name: p.detach().clone() for name, p in self.model.named_parameters()}
        self.model.eval()
        try:
            with torch.no_grad():
                for name, param in self.model.named_parameters():
                    param.copy_(weights[name])
            return evaluate_nll(self.forward, data, self.bptt, self.model.init_hidden,
                                self.train_cfg.get("eval_max_batches"))
        finally:
            with torch.no_grad():
                for name, param in self.model.named_parameters():
                    param.copy_(saved[name])
            self.model.train()

    def end_epoch(self, epoch: int, record: dict) -> None:
        self.train_time_s += time.time() - self.epoch_started
        self.epoch_started = None
        valid_loss = self.score(self.valid_data, self.scored_weights())
        record.update(valid_loss=valid_loss, valid_ppl=perplexity(valid_loss), ppl=perplexity(record.get("loss")))
        if self.best is None or valid_loss < self.best["value"]:
            self.best = {"epoch": epoch, "value": valid_loss}
            record["is_best"] = True
        if self.optimizer_kind == "sgd":
            self.sgd_valid_losses.append(valid_loss)
            if should_switch(self.sgd_valid_losses, int(self.train_cfg.asgd.nonmono)):
                self.optimizer_kind, self.optimizer = "asgd", self.build_optimizer("asgd")
                record["switched_to_asgd"] = True

    def best_weights(self, run_dir: Path) -> dict[str, torch.Tensor]:
        """The scored weights of the best epoch, from ``best.pt`` (the current ones when there is none)."""
        path = run_dir / "best.pt"
        if not path.is_file():
            return self.scored_weights()
        state = load_checkpoint(path, map_location=self.model.encoder.weight.device)["task"]
        names = [name for name, _ in self.model.named_parameters()]
        weights = {name: state["model"][name] for name in names}
        if state["optimizer_kind"] == "asgd":
            per_param = state["optimizer"]["state"]
            for index, name in enumerate(names):
                if "ax" in per_param.get(index, {}):
                    weights[name] = per_param[index]["ax"]
        return weights

    def finish(self, run_dir: Path, logger: RunLogger, writes: bool, history: list[dict]) -> dict:
        weights = self.best_weights(run_dir) if writes else self.scored_weights()
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                param.copy_(weights[name])
        valid_loss = self.score(self.valid_data, weights)
        test_loss = self.score(self.test_data, weights)
        if writes:
            export.save(self.model, run_dir / EXPORT_NAME)
        last = history[-1] if history else {}
        switched = next((r["epoch"] for r in history if r.get("switched_to_asgd")), None)
        return {
            "genotype": self.genotype.to_dict(), "genotype_string": str(self.genotype),
            "genotype_source": str(self.cfg.genotype), "space": self.space.name, "network": self.name,
            "best_epoch": self.best["epoch"] if self.best else None,
            "valid_loss": valid_loss, "valid_ppl": perplexity(valid_loss),
            "test_loss": test_loss, "test_ppl": perplexity(test_loss),
            "train_loss": last.get("loss"), "train_ppl": last.get("ppl"),
            "asgd_from_epoch": None if switched is None else switched + 1,
            "vocabulary_size": self.vocabulary_size,
            "params_m": export.count_parameters(self.model) / 1e6,
            "train_time_s": self.train_time_s,
            "tokens_per_s": self.tokens_seen / self.train_time_s if self.train_time_s else None,
            "runtime": self.runtime.describe(),
            "export": EXPORT_NAME,
        }
