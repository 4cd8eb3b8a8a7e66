"""The task of plain random sampling: each drawn genotype trained from scratch and ranked.

The strategy (:mod:`darts.strategies.random_sampling`) draws the genotypes; this task trains each
with the final-training pieces (network builder, optimiser, schedule, augmentation, auxiliary head,
drop path, runtime) for ``strategy.train.epochs`` on the search split's weight half and scores it on
the alpha half by ``strategy.metric`` (``selection.metric``: top-1 or loss). The test set is never loaded. The run's epochs are the candidates' epochs
one after another (candidate ``e // E``, its epoch ``e % E``), so a checkpoint after every epoch
and at a stop signal resumes inside a candidate, and a larger ``strategy.num_candidates`` extends a
finished run. The best candidate (accuracy ties: the lower loss; then the earlier one) is the genotype.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn
from omegaconf import OmegaConf

from darts import export, viz
from darts.checkpoint import load_state_dicts
from darts.data import build_search_data, stream_seed
from darts.errors import DartsError
from darts.metrics import ranking_order
from darts.engine.context import RunContext, in_layout
from darts.engine.evaluate import evaluate
from darts.engine.loop import Task
from darts.engine.supernet import check_split_unchanged, genotype_record, record_split
from darts.engine.training import build_optimizer, build_schedule, train_step
from darts.runtime import build_runtime
from darts.spaces.base import build_space
from darts.strategies.base import GeneratorState
from darts.strategies.random_sampling import RandomSampling
from darts.tracking import RunLogger, write_json


class CandidateTraining(Task):
    kind = "search"
    progress_keys = ("loss", "acc", "val_acc")

    def __init__(self, cfg, context: RunContext, strategy: RandomSampling):
        if context.dist.world_size > 1:
            raise DartsError("strategy random_sampling trains its candidates in one process; "
                             "launch it without torchrun")
        self.cfg, self.strategy, self.name = cfg, strategy, strategy.name
        self.device = context.device
        self.space = build_space(cfg.space)
        strategy.setup(self.space, stream_seed(cfg.seed, "random_sampling/draws", 0))
        tc = self.train_cfg = strategy.train
        self.data = build_search_data(cfg.dataset, tc.batch_size, cfg.search.train_portion, cfg.seed, self.device,
                                      tc.get("eval_batch_size"), cutout=tc.cutout)
        # Built up front so that bad fast.* settings fail before any training; each candidate gets its own.
        self.runtime = build_runtime(cfg.fast, self.device, cfg.deterministic)
        max_steps = tc.get("max_steps_per_epoch")
        self.steps_per_epoch = len(self.data.weight_batches) if not max_steps else min(
            max_steps, len(self.data.weight_batches))
        if self.steps_per_epoch < 1:
            raise DartsError(f"the weight split ({len(self.data.weight_indices)} images) has no full batch of "
                             f"{tc.batch_size}; lower strategy.train.batch_size")
        self.epochs_per_candidate = tc.epochs
        self.epochs = strategy.num_candidates * tc.epochs
        self.criterion = nn.CrossEntropyLoss(label_smoothing=tc.label_smoothing)
        self.candidates: list[dict] = []
        self.current = None          # the candidate in training: its index, genotype and training objects
        self.check_first_candidate()

    def check_first_candidate(self) -> None:
        """Bad strategy.train settings fail now, not after the first candidate's draw has been used."""
        genotype = self.space.architecture_genotype(self.space.random_architecture(torch.Generator().manual_seed(0)))
        self.build_network(genotype)

    def build_network(self, genotype) -> nn.Module:
        info = self.data.info
        try:
            return self.space.build_network(genotype, self.train_cfg, info.num_classes, info.in_channels)
        except DartsError as err:
            raise DartsError(f"strategy.train: {err}") from None

    # -- one candidate ------------------------------------------------------------------
    def begin_candidate(self, index: int, genotype) -> None:
        """A fresh network, optimiser, schedule and runtime (its gradient scaler must not carry over)."""
        torch.manual_seed(stream_seed(self.cfg.seed, "random_sampling/candidate", index))
        runtime = build_runtime(self.cfg.fast, self.device, self.cfg.deterministic)
        model = self.build_network(genotype)
        forward = runtime.prepare(model)
        optimizer = build_optimizer(model.parameters(), self.train_cfg.optimizer)
        scheduler = build_schedule(optimizer, self.train_cfg.schedule, self.epochs_per_candidate)
        self.current = {"index": index, "genotype": genotype, "runtime": runtime, "model": model, "forward": forward,
                        "optimizer": optimizer, "scheduler": scheduler, "params": list(model.parameters()),
                        "train_time_s": 0.0}
        self.runtime = runtime

    def checkpointables(self) -> dict:
        current = self.current
        return {"model": current["model"], "optimizer": current["optimizer"], "scheduler": current["scheduler"],
                "grad_scaler": current["runtime"].scaler}

    # -- checkpoints ------------------------------------------------------------------------
    def state(self) -> dict:
        state = {"candidates": self.candidates, "sampler": GeneratorState(self.strategy.generator).state_dict(),
                 "current": None}
        if self.current is not None:
            state["current"] = {"index": self.current["index"], "genotype": self.current["genotype"].to_dict(),
                                "train_time_s": self.current["train_time_s"],
                                **{key: obj.state_dict() for key, obj in self.checkpointables().items()}}
        return state

    def load_state(self, state: dict, source: str) -> None:
        load_state_dicts({"sampler": GeneratorState(self.strategy.generator)}, state, source)
        self.candidates = list(state["candidates"])
        self.strategy.drawn = {record["genotype_string"] for record in self.candidates}
        current = state.get("current")
        if current is not None:
            genotype = self.space.parse_genotype_dict(current["genotype"])
            self.strategy.drawn.add(str(genotype))
            self.begin_candidate(current["index"], genotype)
            load_state_dicts(self.checkpointables(), current, source)
            self.current["train_time_s"] = current["train_time_s"]

    # -- the loop's parts ---------------------------------------------------------------------
    def check_resume(self, run_dir: Path) -> None:
        check_split_unchanged(run_dir, self.data)

    def start(self, run_dir: Path, logger: RunLogger, writes: bool, fresh: bool) -> None:
        record_split(run_dir, self.cfg, self.data, writes, fresh)

    def start_epoch(self, epoch: int) -> dict[str, float]:
        index, local_epoch = divmod(epoch, self.epochs_per_candidate)
        if self.current is None or self.current["index"] != index:
            self.begin_candidate(index, self.strategy.draw())
        current, tc = self.current, self.train_cfg
        current["model"].train()
        current["model"].set_drop_path_prob(tc.drop_path_prob * local_epoch / tc.epochs)
        current["started"] = time.time()
        return {"candidate": index, "lr": current["optimizer"].param_groups[0]["lr"]}

    def batches(self, epoch: int, start: int):
        # Every candidate sees the same batches in its own epoch k: candidates differ only in their cell.
        local_epoch = epoch % self.epochs_per_candidate
        return in_layout(self.data.weight_batches.epoch(local_epoch, start=start), self.current["runtime"].memory_format)

    def train_step(self, batch, epoch: int) -> dict[str, torch.Tensor]:
        current, tc = self.current, self.train_cfg
        inputs, targets = batch
        return train_step(current["forward"], inputs, targets, current["optimizer"], self.criterion,
                          current["runtime"], current["params"], grad_clip=tc.optimizer.get("grad_clip"),
                          auxiliary_weight=tc.auxiliary_weight)

    def end_epoch(self, epoch: int, record: dict) -> None:
        current = self.current
        current["train_time_s"] += time.time() - current.pop("started")
        current["scheduler"].step()
        if (epoch + 1) % self.epochs_per_candidate:
            return
        model, genotype = current["model"], current["genotype"]
        result = evaluate(model, self.data.alpha_eval_batches, self.criterion,
                          max_batches=self.train_cfg.get("eval_max_batches"))
        candidate = {"candidate": current["index"], "genotype": genotype.to_dict(), "genotype_string": str(genotype),
                     "val_acc": result["top1"], "val_loss": result["loss"],
                     "train_loss": record.get("loss"), "train_acc": record.get("acc"),
                     "params_m": export.count_parameters(model, exclude_auxiliary=True) / 1e6,
                     "train_time_s": current["train_time_s"]}
        self.candidates.append(candidate)
        self.current = None
        record.update(val_acc=candidate["val_acc"], val_loss=candidate["val_loss"],
                      best_val_acc=self.best()["val_acc"])

    def best(self) -> dict:
        """The best candidate on the alpha split by ``strategy.metric`` (ties: see ``ranking_order``)."""
        order = ranking_order([c["val_acc"] for c in self.candidates], [c["val_loss"] for c in self.candidates],
                              self.strategy.metric)
        return self.candidates[order[0]]

    def log_epoch(self, epoch: int, record: dict, logger: RunLogger, run_dir: Path) -> None:
        if "val_acc" not in record:
            return
        candidate = self.candidates[-1]
        index = candidate["candidate"]
        logger.scalars({key: candidate[key] for key in ("val_acc", "val_loss", "train_loss", "train_acc", "params_m")},
                       index, prefix="candidate/")
        logger.scalars({"val_acc": self.best()["val_acc"]}, index, prefix="best/")
        logger.text("genotype", f"`{candidate['genotype_string']}`", index)
        (run_dir / "genotypes").mkdir(exist_ok=True)
        write_json(run_dir / "genotypes" / f"candidate_{index:03d}.json",
                   {"genotype": candidate["genotype"], "string": candidate["genotype_string"],
                    "val_acc": candidate["val_acc"]})
        logger.console(f"  candidate {index + 1}/{self.strategy.num_candidates} val_acc {candidate['val_acc']:.4g}"
                       f"  genotype {candidate['genotype_string']}")

    def finish(self, run_dir: Path, logger: RunLogger, writes: bool, history: list[dict]) -> dict:
        best = self.best()
        genotype = self.space.parse_genotype_dict(best["genotype"])
        if writes:
            for cell, path in viz.draw_genotype(genotype, run_dir / "cells").items():
                logger.image(f"cells/{cell}", viz.load_png(path), best["candidate"])
            write_json(run_dir / "genotype.json", genotype_record(genotype))
        return {
            "strategy": self.strategy.name,
            "space": self.space.name,
            "genotype": genotype.to_dict(),
            "genotype_string": str(genotype),
            "best_candidate": best["candidate"],
            # The alpha split is the held-out part of the training set the candidates are ranked on.
            "alpha_eval_acc": best["val_acc"], "alpha_eval_loss": best["val_loss"],
            "train_loss": best["train_loss"], "train_acc": best["train_acc"],
            "params_m": best["params_m"],
            "num_candidates": len(self.candidates),
            "candidates": self.candidates,
            "candidate_training": OmegaConf.to_container(self.train_cfg),
            "runtime": self.runtime.describe(),
        }
