"""The task of final training: a genotype trained from scratch as a deep network.

The genotype comes from ``cfg.genotype`` in the configured space's format (a published name, a
genotype file, a search run directory or a string); the network from the space's builder with the
``train`` settings. The test set is evaluated for reporting only; the trained weights are exported
as ``model.pt`` (:func:`darts.export.save`).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn

from darts import export, viz
from darts.checkpoint import load_state_dicts
from darts.data import build_train_data
from darts.distributed import lr_scale, shard_sizes
from darts.errors import DartsError
from darts.engine.context import RunContext, in_layout, scaled_learning_rates
from darts.engine.evaluate import evaluate
from darts.engine.loop import Task
from darts.engine.supernet import genotype_record
from darts.engine.training import build_optimizer, build_schedule, train_step
from darts.resources import parse_resource
from darts.resources.measure import count_macs, measure_latency_ms
from darts.runtime import build_runtime
from darts.spaces.base import build_space
from darts.tracking import RunLogger, write_json

EXPORT_NAME = "model.pt"


def valid_portion(value) -> float:
    """``train.valid_portion``: a share in [0, 1) of the training split held out for validation."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise DartsError(f"train.valid_portion must be a number in [0, 1) (0: no validation set), got {value!r}")
    return float(value)


class FinalTraining(Task):
    kind = "final"
    progress_keys = ("loss", "acc", "test_top1", "test_top5")

    def __init__(self, cfg, context: RunContext):
        self.cfg, self.train_cfg = cfg, cfg.train
        tc, dist, device = cfg.train, context.dist, context.device
        self.dist, self.device = dist, device
        self.space = build_space(cfg.space)
        self.genotype = self.space.resolve_genotype(cfg.genotype)
        self.name = self.space.network_name(tc.network)
        distributed_cfg = cfg.get("distributed")
        global_batch = shard_sizes(distributed_cfg, tc.batch_size, dist.world_size, "train.batch_size")
        self.data = build_train_data(cfg.dataset, global_batch, cfg.seed, device, cutout=tc.cutout,
                                     eval_batch_size=tc.get("eval_batch_size"), shard=(dist.rank, dist.world_size),
                                     valid_portion=valid_portion(tc.get("valid_portion", 0.0)))
        info = self.data.info
        self.runtime = build_runtime(cfg.fast, device, cfg.deterministic, dist)
        self.layout = self.runtime.memory_format
        network = self.space.build_network(self.genotype, tc, info.num_classes, info.in_channels)
        self.model = dist.prepare_model(network)
        self.forward = self.runtime.prepare(self.model)
        dist.broadcast_parameters(self.model)
        self.epochs = tc.epochs
        self.log_every = tc.log_every
        max_steps = tc.get("max_steps_per_epoch")
        self.steps_per_epoch = len(self.data.train_batches) if not max_steps else min(
            max_steps, len(self.data.train_batches))
        if self.steps_per_epoch < 1:
            raise DartsError(f"the training set has no full batch of {global_batch}; lower train.batch_size")
        scale = lr_scale(distributed_cfg, global_batch, tc.batch_size)
        self.optimizer = build_optimizer(self.model.parameters(), scaled_learning_rates(tc.optimizer, scale))
        self.scheduler = build_schedule(self.optimizer, scaled_learning_rates(tc.schedule, scale), self.epochs,
                                        warms_up_per_step=True)
        # Warm-up epochs set the lr before every step (WarmupSchedule.warm_up); later ones once per epoch.
        self.warmup_epochs = tc.schedule.get("warmup_epochs") or 0
        self.criterion = nn.CrossEntropyLoss(label_smoothing=tc.label_smoothing)
        self.params = list(self.model.parameters())
        self.train_time_s, self.images_seen = 0.0, 0
        self.epoch_started: float | None = None   # set while an epoch's steps run (time of its first)

    # -- checkpoints ------------------------------------------------------------------
    def state(self) -> dict:
        # A stop signal mid-epoch checkpoints the steps' time so far too.
        running = time.time() - self.epoch_started if self.epoch_started is not None else 0.0
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "grad_scaler": self.runtime.scaler.state_dict(),
                "genotype": self.genotype.to_dict(), "train_time_s": self.train_time_s + running,
                "images_seen": self.images_seen}

    def load_state(self, state: dict, source: str) -> None:
        export.check_compatible(self.model, state.get("model"), genotype=state.get("genotype"), source=source)
        load_state_dicts({"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler,
                          "grad_scaler": self.runtime.scaler}, state, source)
        self.train_time_s, self.images_seen = state["train_time_s"], state["images_seen"]

    # -- the loop's parts ---------------------------------------------------------------------
    def start(self, run_dir: Path, logger: RunLogger, writes: bool, fresh: bool) -> None:
        if not writes:
            return
        write_json(run_dir / "genotype.json", genotype_record(self.genotype))
        for cell, path in viz.draw_genotype(self.genotype, run_dir / "cells").items():
            logger.image(f"cells/{cell}", viz.load_png(path), 0)
        logger.text("genotype", f"`{self.genotype}`", 0)

    def start_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        drop_path_prob = self.train_cfg.drop_path_prob * epoch / self.epochs
        self.model.set_drop_path_prob(drop_path_prob)
        if epoch < self.warmup_epochs:   # its starting lr, also when resumed mid-epoch (AutoDL's update(epoch, 0.0))
            self.scheduler.warm_up(epoch, 0, self.steps_per_epoch)
        self.epoch_started = time.time()
        return {"lr": self.optimizer.param_groups[0]["lr"], "drop_path_prob": drop_path_prob}

    def batches(self, epoch: int, start: int):
        """(step index in the epoch, (inputs, targets)) from step ``start`` on."""
        return enumerate(in_layout(self.data.train_batches.epoch(epoch, start=start), self.layout), start)

    def train_step(self, batch, epoch: int) -> dict[str, torch.Tensor]:
        step, (inputs, targets) = batch
        if epoch < self.warmup_epochs:
            self.scheduler.warm_up(epoch, step, self.steps_per_epoch)
        self.images_seen += targets.shape[0] * self.dist.world_size
        return train_step(self.forward, inputs, targets, self.optimizer, self.criterion, self.runtime, self.params,
                          grad_clip=self.train_cfg.optimizer.get("grad_clip"),
                          auxiliary_weight=self.train_cfg.auxiliary_weight)

    def end_epoch(self, epoch: int, record: dict) -> None:
        self.train_time_s += time.time() - self.epoch_started
        self.epoch_started = None
        self.scheduler.step()
        # Per-rank BatchNorm statistics (sync_bn off) differ; rank 0's are the run's.
        self.dist.broadcast_buffers(self.model)
        every = self.train_cfg.eval_every
        if epoch == self.epochs - 1 or (every and (epoch + 1) % every == 0):
            result = evaluate(self.model, self.data.test_batches, self.criterion, topk=(1, 5), dist=self.dist)
            record.update(test_loss=result["loss"], test_top1=result["top1"], test_top5=result["top5"])
            if self.data.valid_batches is not None:
                result = evaluate(self.model, self.data.valid_batches, self.criterion, topk=(1, 5), dist=self.dist)
                record.update(valid_loss=result["loss"], valid_top1=result["top1"], valid_top5=result["top5"])

    def finish(self, run_dir: Path, logger: RunLogger, writes: bool, history: list[dict]) -> dict:
        if writes:
            export.save(self.model, run_dir / EXPORT_NAME)
        info = self.data.info
        latency = parse_resource(self.cfg.get("resource")).latency
        last_eval = next((r for r in reversed(history) if "test_top1" in r), {})
        last = history[-1] if history else {}
        return {
            "genotype": self.genotype.to_dict(),
            "genotype_string": str(self.genotype),
            "genotype_source": str(self.cfg.genotype),   # what genotype= named (random:SEED for a random cell)
            "space": self.space.name,
            "network": self.name,
            "test_top1": last_eval.get("test_top1"), "test_top5": last_eval.get("test_top5"),
            "test_loss": last_eval.get("test_loss"),
            # The held-out part of the training split (train.valid_portion): what tuning may select on.
            "valid_top1": last_eval.get("valid_top1"), "valid_loss": last_eval.get("valid_loss"),
            "train_loss": last.get("loss"), "train_acc": last.get("acc"),
            "params_m": export.count_parameters(self.model, exclude_auxiliary=True) / 1e6,
            "multiply_adds": count_macs(self.model, (info.in_channels, info.image_size, info.image_size), self.device),
            # Eval-mode forward on this run's device: the median of resource.latency.repeats after its warm-up.
            "latency_ms": measure_latency_ms(self.model, (info.in_channels, info.image_size, info.image_size),
                                             self.device, latency.batch, latency.warmup, latency.repeats),
            "latency_batch": latency.batch,
            "train_time_s": self.train_time_s,
            "images_per_s": self.images_seen / self.train_time_s if self.train_time_s else None,
            "runtime": self.runtime.describe(),
            "export": EXPORT_NAME,
        }
