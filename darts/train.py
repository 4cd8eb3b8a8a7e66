"""Final training: a genotype trained from scratch as a deep network.

``run_final(cfg, run_dir)`` builds the network from the configured genotype,
trains it with the configured recipe, evaluates the test set for reporting
only, and writes the run directory: config, genotype, TensorBoard, results,
per-epoch checkpoints and the exported weights (``model.pt``).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from darts import model as networks
from darts import viz
from darts.checkpoint import (load_checkpoint, load_state_dicts, rng_state, save_atomic,
                              seed_everything, set_rng_state)
from darts.data import build_train_data
from darts.distributed import lr_scale, shard_sizes, shutdown_distributed
from darts.engine import evaluate, in_layout, library_versions, scaled_learning_rates, start_run
from darts.errors import DartsError
from darts.preemption import StoppableRun, StopCheck
from darts.runtime import build_runtime, upcast
from darts.genotypes import resolve_genotype
from darts.tracking import MetricAccumulator, RunLogger, write_json

NETWORKS = {"cifar": networks.NetworkCIFAR, "imagenet": networks.NetworkImageNet, "nb201": networks.NB201Network}
SCHEDULES = ("cosine", "exponential")
EXPORT_NAME = "model.pt"


def build_network(train_cfg, genotype, num_classes: int, in_channels: int) -> nn.Module:
    if train_cfg.network not in NETWORKS:
        raise DartsError(f"unknown network {train_cfg.network!r}; valid choices: {', '.join(NETWORKS)}")
    if train_cfg.network == "nb201":
        # The benchmark's network: N cells per stage, no auxiliary head, no drop path.
        if train_cfg.auxiliary:
            raise DartsError("the nb201 network has no auxiliary head: set train.auxiliary=false")
        if train_cfg.drop_path_prob:
            raise DartsError("the nb201 network has no drop path: set train.drop_path_prob=0")
        return NETWORKS["nb201"](C=train_cfg.C, num_classes=num_classes, N=train_cfg.get("N", 5),
                                 genotype=genotype, in_channels=in_channels)
    kwargs = dict(C=train_cfg.C, num_classes=num_classes, layers=train_cfg.layers,
                  auxiliary=train_cfg.auxiliary, genotype=genotype)
    if train_cfg.network == "cifar":
        kwargs.update(in_channels=in_channels, stem_stride=train_cfg.get("stem_stride", 1))
    elif in_channels != 3:
        raise DartsError(f"the ImageNet network takes 3-channel images; this dataset has {in_channels}")
    return NETWORKS[train_cfg.network](**kwargs)


def build_optimizer(parameters, optimizer_cfg) -> torch.optim.SGD:
    """The final-training SGD (``train.optimizer``: lr, momentum, weight_decay, optional nesterov)."""
    return torch.optim.SGD(parameters, lr=optimizer_cfg.lr, momentum=optimizer_cfg.momentum,
                           weight_decay=optimizer_cfg.weight_decay, nesterov=bool(optimizer_cfg.get("nesterov", False)),
                           foreach=True)


def train_step(forward, inputs: torch.Tensor, targets: torch.Tensor, optimizer, criterion, runtime, params,
               grad_clip: float | None = None, auxiliary_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """One optimiser step of a discrete network: forward under the runtime's autocast, the auxiliary
    head's loss weighted in when the network returns one, scaled backward, gradient-norm clipping of
    ``params`` (None: no clipping, NAS-Bench-201's recipe). Returns device tensors for the metric
    accumulator (``loss_sum``, ``correct``, ``count``); never synchronises with the device."""
    scaler = runtime.scaler
    with runtime.autocast():
        logits, logits_aux = forward(inputs)
    loss = criterion(upcast(logits), targets)
    if logits_aux is not None:
        loss = loss + auxiliary_weight * criterion(upcast(logits_aux), targets)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    runtime.dist.average_gradients(params)
    scaler.unscale_(optimizer)
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
    scaler.step(optimizer)
    scaler.update()
    count = torch.full((), float(targets.shape[0]), device=targets.device)  # a fill, not a copy: no sync
    return {"loss_sum": loss.detach() * count, "correct": (logits.detach().argmax(1) == targets).sum(), "count": count}


def build_schedule(optimizer, schedule_cfg, epochs: int):
    if schedule_cfg.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=schedule_cfg.lr_min)
    if schedule_cfg.name == "exponential":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=schedule_cfg.gamma)
    raise DartsError(f"unknown train.schedule.name {schedule_cfg.name!r}; valid choices: {', '.join(SCHEDULES)}")


def multiply_adds(model: nn.Module, input_shape: tuple[int, ...], device) -> int:
    """Exact multiply-adds of one eval-mode forward, counted by torch's FLOP counter (FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    return counter.get_total_flops() // 2


class FinalRun(StoppableRun):
    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg = cfg
        self.train_cfg = cfg.train
        self.context = start_run(cfg, run_dir)
        self.dist, self.device = self.context.dist, self.context.device
        self.run_dir, self.checkpoint_path = self.context.run_dir, self.context.checkpoint_path
        self.genotype = resolve_genotype(cfg.genotype)
        # A DARTS genotype cannot hold `none` (its constructor refuses it); an NB201 one can.
        self.genotype.check_ops_allowed(list(cfg.space.primitives))
        seed_everything(cfg.seed, cfg.deterministic)
        tc = self.train_cfg
        distributed_cfg = cfg.get("distributed")
        global_batch = shard_sizes(distributed_cfg, tc.batch_size, self.dist.world_size, "train.batch_size")
        self.data = build_train_data(cfg.dataset, global_batch, cfg.seed, self.device, cutout=tc.cutout,
                                     eval_batch_size=tc.get("eval_batch_size"),
                                     shard=(self.dist.rank, self.dist.world_size))
        info = self.data.info
        self.runtime = build_runtime(cfg.fast, self.device, cfg.deterministic, self.dist)
        self.layout = self.runtime.memory_format
        self.model = self.dist.prepare_model(build_network(tc, self.genotype, info.num_classes, info.in_channels))
        self.forward = self.runtime.prepare(self.model)
        self.dist.broadcast_parameters(self.model)
        self.epochs = tc.epochs
        max_steps = tc.get("max_steps_per_epoch")
        self.steps_per_epoch = len(self.data.train_batches) if not max_steps else min(
            max_steps, len(self.data.train_batches))
        if self.steps_per_epoch < 1:
            raise DartsError(f"the training set has no full batch of {global_batch}; lower train.batch_size")
        scale = lr_scale(distributed_cfg, global_batch, tc.batch_size)
        self.optimizer = build_optimizer(self.model.parameters(), scaled_learning_rates(tc.optimizer, scale))
        self.scheduler = build_schedule(self.optimizer, scaled_learning_rates(tc.schedule, scale), self.epochs)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=tc.label_smoothing)
        self.start_epoch, self.history, self.wall_time_s, self.train_time_s, self.images_seen = 0, [], 0.0, 0.0, 0
        self.start_step, self.resumed_totals = 0, {}
        if self.context.resume:
            self.restore()
        self.logger = RunLogger(self.run_dir, enabled=self.context.writes)

    def state(self, epoch: int, interrupted: dict | None = None) -> dict:
        """``epoch``: the last finished epoch; ``interrupted``: where a stop signal caught the next one."""
        return {"epoch": epoch, "interrupted": interrupted, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "grad_scaler": self.runtime.scaler.state_dict(),
                "rng": rng_state(), "history": self.history,
                "genotype": self.genotype.to_dict(), "wall_time_s": self.wall_time_s,
                "train_time_s": self.train_time_s, "images_seen": self.images_seen,
                "world_size": self.dist.world_size}

    def restore(self) -> None:
        state = load_checkpoint(self.checkpoint_path, map_location=self.device)
        source = f"checkpoint {self.checkpoint_path}"
        networks.check_compatible(self.model, state.get("model"), genotype=state.get("genotype"), source=source)
        load_state_dicts({"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler,
                          "grad_scaler": self.runtime.scaler}, state, source)
        set_rng_state(state["rng"])
        self.history = list(state["history"])
        self.wall_time_s, self.train_time_s = state["wall_time_s"], state["train_time_s"]
        self.images_seen = state["images_seen"]
        self.start_epoch = state["epoch"] + 1
        interrupted = state.get("interrupted")
        if interrupted:
            self.start_epoch, self.start_step = interrupted["epoch"], interrupted["step"]
            self.resumed_totals = {k: v.to(self.device) for k, v in interrupted["totals"].items()}

    def train_epoch(self, epoch: int, first_step: int, stop_check: StopCheck) -> dict:
        tc = self.train_cfg
        self.model.train()
        self.model.drop_path_prob = tc.drop_path_prob * epoch / self.epochs
        totals, window = MetricAccumulator(), MetricAccumulator()
        if first_step:
            totals.add(self.resumed_totals)
        batches = in_layout(self.data.train_batches.epoch(epoch, start=first_step), self.layout)
        params = list(self.model.parameters())
        start = time.time()
        for step in range(first_step, self.steps_per_epoch):
            inputs, targets = next(batches)
            metrics = train_step(self.forward, inputs, targets, self.optimizer, self.criterion, self.runtime, params,
                                 grad_clip=tc.optimizer.get("grad_clip"), auxiliary_weight=tc.auxiliary_weight)
            totals.add(metrics)
            window.add(metrics)
            self.images_seen += targets.shape[0] * self.dist.world_size
            if tc.log_every and (step + 1) % tc.log_every == 0:
                values = window.read(self.dist.sum_metrics)
                window = MetricAccumulator()
                self.logger.scalars(values, epoch * self.steps_per_epoch + step + 1, prefix="step/")
                self.logger.console(f"  epoch {epoch} step {step + 1}/{self.steps_per_epoch} " +
                                    "  ".join(f"{k} {v:.4g}" for k, v in values.items()))
            if step + 1 < self.steps_per_epoch and stop_check.requested(step):
                elapsed = time.time() - start
                self.train_time_s += elapsed
                self.wall_time_s += elapsed
                self.stop(epoch, step + 1, totals, stop_check)
        record = totals.read(self.dist.sum_metrics)
        self.train_time_s += time.time() - start
        return record

    def write_header(self) -> None:
        OmegaConf.save(self.cfg, self.run_dir / "config_resolved.yaml", resolve=True)
        write_json(self.run_dir / "genotype.json", {"genotype": self.genotype.to_dict(), "string": str(self.genotype)})
        drawings = viz.draw_genotype(self.genotype, self.run_dir / "cells")
        for cell, path in drawings.items():
            self.logger.image(f"cells/{cell}", viz.load_png(path), 0)
        self.logger.text("genotype", f"`{self.genotype}`", 0)

    def run(self) -> dict:
        if self.context.writes:
            self.write_header()
        if self.start_epoch or self.start_step:
            self.logger.console(f"resuming from epoch {self.start_epoch} step {self.start_step} of "
                                f"{self.epochs} epochs ({self.checkpoint_path})")
        every = self.train_cfg.eval_every
        stop_check = StopCheck(self.cfg.get("preemption"), self.dist, self.device)
        with stop_check.signals:
            for epoch in range(self.start_epoch, self.epochs):
                epoch_start = time.time()
                first_step = self.start_step if epoch == self.start_epoch else 0
                lr = self.optimizer.param_groups[0]["lr"]
                record = {"epoch": epoch, **self.train_epoch(epoch, first_step, stop_check), "lr": lr,
                          "drop_path_prob": self.model.drop_path_prob}
                self.scheduler.step()
                # Per-rank BatchNorm statistics (sync_bn off) differ; rank 0's are the run's.
                self.dist.broadcast_buffers(self.model)
                if epoch == self.epochs - 1 or (every and (epoch + 1) % every == 0):
                    result = evaluate(self.model, self.data.test_batches, self.criterion, topk=(1, 5), dist=self.dist)
                    record.update(test_loss=result["loss"], test_top1=result["top1"], test_top5=result["top5"])
                self.wall_time_s += time.time() - epoch_start
                record["wall_time_s"] = self.wall_time_s
                self.history.append(record)
                if self.context.writes:
                    self.logger.scalars({k: v for k, v in record.items() if k not in ("epoch", "wall_time_s")}, epoch,
                                        prefix="epoch/")
                    save_atomic(self.state(epoch), self.checkpoint_path)
                    self.logger.flush()
                shown = {k: record[k] for k in ("loss", "acc", "test_top1", "test_top5") if k in record}
                self.logger.progress("epoch", epoch + 1, self.epochs, shown)
                if epoch + 1 < self.epochs and stop_check.requested_at_epoch_end():
                    self.stop(epoch + 1, 0, None, stop_check)
        return self.finish()

    def finish(self) -> dict:
        if self.context.writes:
            networks.save(self.model, self.run_dir / EXPORT_NAME)
        info = self.data.info
        last_eval = next((r for r in reversed(self.history) if "test_top1" in r), {})
        results = {
            "kind": "final",
            "genotype": self.genotype.to_dict(),
            "genotype_string": str(self.genotype),
            "network": self.train_cfg.network,
            "test_top1": last_eval.get("test_top1"), "test_top5": last_eval.get("test_top5"),
            "test_loss": last_eval.get("test_loss"),
            "train_loss": self.history[-1].get("loss") if self.history else None,
            "train_acc": self.history[-1].get("acc") if self.history else None,
            "params_m": networks.count_parameters(self.model, exclude_auxiliary=True) / 1e6,
            "multiply_adds": multiply_adds(self.model, (info.in_channels, info.image_size, info.image_size),
                                           self.device),
            "epochs": self.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "wall_time_s": self.wall_time_s,
            "train_time_s": self.train_time_s,
            "images_per_s": self.images_seen / self.train_time_s if self.train_time_s else None,
            "world_size": self.dist.world_size,
            "seed": self.cfg.seed,
            "device": str(self.device),
            "runtime": self.runtime.describe(),
            "versions": library_versions(),
            "export": EXPORT_NAME,
            "history": self.history,
        }
        if self.context.writes:
            write_json(self.run_dir / "results.json", results)
        self.logger.close()
        return results


def run_final(cfg: DictConfig, run_dir: Path) -> dict:
    """Train (or resume) the configured genotype in ``run_dir`` and return its results."""
    try:
        return FinalRun(cfg, run_dir).run()
    finally:
        shutdown_distributed()
