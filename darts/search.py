"""The search loop: every strategy, every space, one loop.

``run_search(cfg, run_dir)`` trains the supernet with the configured strategy
and writes the run directory: genotypes, results, TensorBoard, checkpoints.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from darts import viz
from darts.checkpoint import load_checkpoint, load_state_dicts, rng_state, save_atomic, seed_everything, set_rng_state
from darts.data import build_search_data
from darts.distributed import lr_scale, shard_sizes, shutdown_distributed
from darts.engine import entropy, evaluate, in_layout, library_versions, scaled_learning_rates, start_run
from darts.errors import DartsError
from darts.preemption import StoppableRun, StopCheck
from darts.runtime import build_runtime
from darts.strategies import build_strategy, strategy_class
from darts.tracking import MetricAccumulator, RunLogger, write_json


def _genotype_record(genotype) -> dict:
    return {"genotype": genotype.to_dict(), "string": str(genotype)}


class SearchRun(StoppableRun):
    """The state of one search and the steps of its loop."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg = cfg
        self.search_cfg = cfg.search
        self.context = start_run(cfg, run_dir)
        self.dist, self.device = self.context.dist, self.context.device
        self.run_dir, self.checkpoint_path = self.context.run_dir, self.context.checkpoint_path
        seed_everything(cfg.seed, cfg.deterministic)

        distributed_cfg = cfg.get("distributed")
        global_batch = shard_sizes(distributed_cfg, self.search_cfg.batch_size, self.dist.world_size,
                                   "search.batch_size")
        self.data = build_search_data(cfg.dataset, global_batch, self.search_cfg.train_portion, cfg.seed,
                                      self.device, self.search_cfg.get("eval_batch_size"),
                                      shard=(self.dist.rank, self.dist.world_size))
        info = self.data.info
        self.strategy = build_strategy(cfg.strategy)
        self.runtime = build_runtime(cfg.fast, self.device, cfg.deterministic, self.dist)
        self.layout = self.runtime.memory_format
        self.model = self.dist.prepare_model(self.strategy.build_supernet(cfg.space, info.num_classes,
                                                                          info.in_channels))
        self.epochs = self.search_cfg.epochs
        max_steps = self.search_cfg.get("max_steps_per_epoch")
        self.steps_per_epoch = len(self.data.weight_batches) if not max_steps else min(
            max_steps, len(self.data.weight_batches))
        if self.steps_per_epoch < 1:
            raise DartsError(f"the weight split ({len(self.data.weight_indices)} images) has no full batch of "
                             f"{global_batch}; lower search.batch_size")
        scale = lr_scale(distributed_cfg, global_batch, self.search_cfg.batch_size)
        # The scaling rule moves the weights' learning rates only: the alphas' Adam step is left as published.
        optim_cfg = OmegaConf.merge(cfg.optim, {"weights": scaled_learning_rates(cfg.optim.weights, scale)})
        self.strategy.setup(self.model, optim_cfg, self.epochs, self.steps_per_epoch, self.runtime)
        # Parameters moved to the device in setup(); every rank now takes rank 0's.
        self.dist.broadcast_parameters(self.model)
        self.start_epoch, self.start_step = 0, 0
        self.resumed_totals: dict[str, torch.Tensor] = {}
        self.history: list[dict] = []
        self.wall_time_s = 0.0
        if self.context.resume:
            self.restore()
        self.logger = RunLogger(self.run_dir, enabled=self.context.writes)

    # -- checkpoints ---------------------------------------------------------------
    def state(self, epoch: int, interrupted: dict | None = None) -> dict:
        """``epoch``: the last finished epoch. ``interrupted``: where a stop signal caught the next
        one (its epoch, the next step, the metric sums so far), or None at an epoch's end."""
        return {
            "epoch": epoch,
            "interrupted": interrupted,
            "model": self.model.state_dict(),
            "strategy": {key: obj.state_dict() for key, obj in self.strategy.checkpointables().items()},
            "alpha_stream": self.data.alpha_stream.state_dict(),
            "rng": rng_state(),
            "history": self.history,
            "wall_time_s": self.wall_time_s,
            "strategy_name": self.strategy.name,
            "world_size": self.dist.world_size,
        }

    def restore(self) -> None:
        state = load_checkpoint(self.checkpoint_path, map_location=self.device)
        if state.get("strategy_name") != self.strategy.name:
            raise DartsError(f"checkpoint {self.checkpoint_path} was written by strategy "
                             f"{state.get('strategy_name')!r}, not {self.strategy.name!r}")
        load_state_dicts({"model": self.model}, state, f"checkpoint {self.checkpoint_path}")
        load_state_dicts(self.strategy.checkpointables(), state["strategy"], f"checkpoint {self.checkpoint_path}")
        self.check_split_unchanged()
        self.data.alpha_stream.load_state_dict(state["alpha_stream"])
        set_rng_state(state["rng"])
        self.history = list(state["history"])
        self.wall_time_s = state["wall_time_s"]
        self.start_epoch = state["epoch"] + 1
        interrupted = state.get("interrupted")
        if interrupted:
            self.start_epoch, self.start_step = interrupted["epoch"], interrupted["step"]
            self.resumed_totals = {k: v.to(self.device) for k, v in interrupted["totals"].items()}

    def check_split_unchanged(self) -> None:
        """A resume must train on the split the run started with (same seed, portion, dataset)."""
        recorded = self.run_dir / "split.json"
        if not recorded.is_file():
            return
        split = json.loads(recorded.read_text())
        if (split["weight_indices"] != self.data.weight_indices.tolist()
                or split["alpha_indices"] != self.data.alpha_indices.tolist()):
            raise DartsError(f"this configuration splits the data differently from the run in {self.run_dir} "
                             f"(seed {split['seed']}, portion {split['portion']}): resume with the run's own "
                             "seed, dataset and search.train_portion")

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> dict:
        if self.context.writes:
            OmegaConf.save(self.cfg, self.run_dir / "config_resolved.yaml", resolve=True)
            if self.start_epoch == 0 and self.start_step == 0:
                write_json(self.run_dir / "split.json", {
                    "seed": self.cfg.seed, "portion": self.search_cfg.train_portion,
                    "weight_indices": self.data.weight_indices, "alpha_indices": self.data.alpha_indices})
        if self.start_epoch or self.start_step:
            self.logger.console(f"resuming from epoch {self.start_epoch} step {self.start_step} of "
                                f"{self.epochs} epochs ({self.checkpoint_path})")
        alpha_batches = in_layout(self.data.alpha_stream, self.layout)
        log_every = self.search_cfg.log_every
        stop_check = StopCheck(self.cfg.get("preemption"), self.dist, self.device)
        with stop_check.signals:
            for epoch in range(self.start_epoch, self.epochs):
                epoch_start = time.time()
                first_step = self.start_step if epoch == self.start_epoch else 0
                self.model.train()
                self.strategy.start_epoch(epoch)
                totals, window = MetricAccumulator(), MetricAccumulator()
                if first_step:
                    totals.add(self.resumed_totals)
                lrs = self.strategy.learning_rates()
                batches = in_layout(self.data.weight_batches.epoch(epoch, start=first_step), self.layout)
                for step in range(first_step, self.steps_per_epoch):
                    metrics = self.strategy.step(next(batches), alpha_batches, epoch)
                    totals.add(metrics)
                    window.add(metrics)
                    if log_every and (step + 1) % log_every == 0:
                        values = window.read(self.dist.sum_metrics)
                        window = MetricAccumulator()
                        global_step = epoch * self.steps_per_epoch + step + 1
                        self.logger.scalars(values, global_step, prefix="step/")
                        self.logger.console(f"  epoch {epoch} step {step + 1}/{self.steps_per_epoch} " +
                                            "  ".join(f"{k} {v:.4g}" for k, v in values.items()))
                    if step + 1 < self.steps_per_epoch and stop_check.requested(step):
                        self.wall_time_s += time.time() - epoch_start
                        self.stop(epoch, step + 1, totals, stop_check)
                self.strategy.end_epoch(epoch)
                record = {"epoch": epoch, **totals.read(self.dist.sum_metrics), **lrs}
                # Per-rank BatchNorm statistics (sync_bn off) differ; rank 0's are the run's.
                self.dist.broadcast_buffers(self.model)
                if self.should_evaluate(epoch):
                    result = evaluate(self.model, self.data.alpha_eval_batches,
                                      max_batches=self.search_cfg.get("eval_max_batches"), dist=self.dist)
                    record.update(alpha_eval_loss=result["loss"], alpha_eval_acc=result["top1"])
                if self.dist.enabled:
                    record["alpha_rank_divergence"] = self.dist.max_divergence(self.model.arch_parameters())
                self.wall_time_s += time.time() - epoch_start
                record["wall_time_s"] = self.wall_time_s
                self.end_of_epoch(epoch, record)
                if epoch + 1 < self.epochs and stop_check.requested_at_epoch_end():
                    self.stop(epoch + 1, 0, None, stop_check)
        return self.finish()

    def should_evaluate(self, epoch: int) -> bool:
        every = self.search_cfg.eval_every
        return epoch == self.epochs - 1 or bool(every and (epoch + 1) % every == 0)

    def end_of_epoch(self, epoch: int, record: dict) -> None:
        # Every rank derives the genotype: a strategy may need collectives for it (random_ws ranks).
        genotype = self.strategy.genotype()
        weights = self.strategy.arch_weights()
        for cell, cell_weights in weights.items():
            record[f"entropy_{cell}"] = entropy(cell_weights)
        self.history.append(record)
        if not self.context.writes:
            return
        self.logger.scalars({k: v for k, v in record.items() if k not in ("epoch", "wall_time_s")}, epoch,
                            prefix="epoch/")
        # Spaces whose edges are not DARTS's (NAS-Bench-201) name the heatmap rows themselves.
        row_labels = self.model.heatmap_row_labels() if hasattr(self.model, "heatmap_row_labels") else None
        for cell, cell_weights in weights.items():
            self.logger.image(f"alphas/{cell}", viz.alpha_heatmap(cell_weights.cpu(), self.model.primitives,
                                                                 self.model.steps, title=f"{cell} epoch {epoch}",
                                                                 row_labels=row_labels),
                              epoch)
        self.logger.text("genotype", f"`{genotype}`", epoch)
        drawings = viz.draw_genotype(genotype, self.run_dir / "cells")
        for cell, path in drawings.items():
            self.logger.image(f"cells/{cell}", viz.load_png(path), epoch)
        (self.run_dir / "genotypes").mkdir(exist_ok=True)
        write_json(self.run_dir / "genotypes" / f"epoch_{epoch:03d}.json", _genotype_record(genotype))
        save_atomic(self.state(epoch), self.checkpoint_path)
        self.logger.flush()
        shown = {k: record[k] for k in ("loss", "acc", "alpha_loss", "alpha_acc", "alpha_eval_acc") if k in record}
        self.logger.progress("epoch", epoch + 1, self.epochs, shown)
        self.logger.console(f"  genotype {genotype}")

    def finish(self) -> dict:
        genotype = self.strategy.genotype()
        last = self.history[-1] if self.history else {}
        results = {
            "kind": "search",
            "strategy": self.strategy.name,
            "genotype": genotype.to_dict(),
            "genotype_string": str(genotype),
            "alphas": {name: p.detach().cpu().tolist() for name, p in self.model.arch_named_parameters()},
            "softmax_weights": {cell: w.cpu().tolist() for cell, w in self.strategy.arch_weights().items()},
            "train_loss": last.get("loss"), "train_acc": last.get("acc"),
            "alpha_loss": last.get("alpha_loss"), "alpha_acc": last.get("alpha_acc"),
            "alpha_eval_loss": last.get("alpha_eval_loss"), "alpha_eval_acc": last.get("alpha_eval_acc"),
            "epochs": self.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "weight_params": sum(p.numel() for p in self.model.weight_parameters()),
            "wall_time_s": self.wall_time_s,
            "world_size": self.dist.world_size,
            "seed": self.cfg.seed,
            "device": str(self.device),
            "runtime": self.runtime.describe(),
            "versions": library_versions(),
            "history": self.history,
        }
        if self.context.writes:
            write_json(self.run_dir / "genotype.json", _genotype_record(genotype))
            write_json(self.run_dir / "results.json", results)
        self.logger.close()
        return results


def run_search(cfg: DictConfig, run_dir: Path) -> dict:
    """Run (or resume) a search in ``run_dir`` and return its results. The strategy names the run that
    drives it: ``SearchRun`` for every supernet strategy."""
    try:
        return strategy_class(cfg.strategy).run_class()(cfg, run_dir).run()
    finally:
        shutdown_distributed()
