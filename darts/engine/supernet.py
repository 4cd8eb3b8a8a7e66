"""The task of a weight-sharing search: a strategy trains a supernet of the configured space.

The search reads only the training split, halved by a seeded permutation: the weights train on one
half, the architecture on the other (``search.train_portion``). Every epoch the genotype is
derived, the architecture weights are drawn as heatmaps and the cells as pictures.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from darts import viz
from darts.checkpoint import load_state_dicts
from darts.data import SearchData, build_search_data
from darts.diagnostics import cell_op_counts
from darts.distributed import lr_scale, shard_sizes
from darts.errors import DartsError
from darts.engine.context import RunContext, in_layout, scaled_learning_rates
from darts.engine.evaluate import entropy, evaluate
from darts.engine.loop import Task
from darts.runtime import build_runtime
from darts.spaces.base import build_space
from darts.strategies.base import SupernetStrategy
from darts.tracking import RunLogger, write_json


def genotype_record(genotype) -> dict:
    return {"genotype": genotype.to_dict(), "string": str(genotype)}


def record_split(run_dir: Path, cfg, data: SearchData, writes: bool, fresh: bool) -> None:
    """A fresh run records its weight/alpha split in ``split.json`` (rank 0 only)."""
    if fresh and writes:
        write_json(run_dir / "split.json", {"seed": cfg.seed, "portion": cfg.search.train_portion,
                                            "weight_indices": data.weight_indices, "alpha_indices": data.alpha_indices})


def check_split_unchanged(run_dir: Path, data: SearchData) -> None:
    """A resume must train on the split the run started with (same seed, portion, dataset)."""
    recorded = run_dir / "split.json"
    if not recorded.is_file():
        return
    split = json.loads(recorded.read_text())
    if (split["weight_indices"] != data.weight_indices.tolist()
            or split["alpha_indices"] != data.alpha_indices.tolist()):
        raise DartsError(f"this configuration splits the data differently from the run in {run_dir} "
                         f"(seed {split['seed']}, portion {split['portion']}): resume with the run's own "
                         "seed, dataset and search.train_portion")


class SupernetSearch(Task):
    kind = "search"
    progress_keys = ("loss", "acc", "alpha_loss", "alpha_acc", "alpha_eval_acc")

    def __init__(self, cfg, context: RunContext, strategy: SupernetStrategy):
        self.cfg, self.search_cfg, self.context = cfg, cfg.search, context
        self.strategy, self.name = strategy, strategy.name
        dist, device = context.dist, context.device
        self.dist = dist
        self.space = build_space(cfg.space)
        strategy.check_space(self.space)
        distributed_cfg = cfg.get("distributed")
        global_batch = shard_sizes(distributed_cfg, self.search_cfg.batch_size, dist.world_size, "search.batch_size")
        self.data = build_search_data(cfg.dataset, global_batch, self.search_cfg.train_portion, cfg.seed, device,
                                      self.search_cfg.get("eval_batch_size"), shard=(dist.rank, dist.world_size))
        info = self.data.info
        self.runtime = build_runtime(cfg.fast, device, cfg.deterministic, dist)
        self.layout = self.runtime.memory_format
        self.model = dist.prepare_model(strategy.build_supernet(self.space, info.num_classes, info.in_channels))
        self.epochs = self.search_cfg.epochs
        self.log_every = self.search_cfg.log_every
        max_steps = self.search_cfg.get("max_steps_per_epoch")
        self.steps_per_epoch = len(self.data.weight_batches) if not max_steps else min(
            max_steps, len(self.data.weight_batches))
        if self.steps_per_epoch < 1:
            raise DartsError(f"the weight split ({len(self.data.weight_indices)} images) has no full batch of "
                             f"{global_batch}; lower search.batch_size")
        scale = lr_scale(distributed_cfg, global_batch, self.search_cfg.batch_size)
        # The scaling rule moves the weights' learning rates only: the alphas' Adam step is left as published.
        optim_cfg = OmegaConf.merge(cfg.optim, {"weights": scaled_learning_rates(cfg.optim.weights, scale)})
        strategy.setup(self.space, self.model, optim_cfg, self.epochs, self.steps_per_epoch, self.runtime)
        # Parameters moved to the device in setup(); every rank now takes rank 0's.
        dist.broadcast_parameters(self.model)
        dist.broadcast_tensors(strategy.arch_parameters())
        self.alpha_batches = in_layout(self.data.alpha_stream, self.layout)
        self.genotype = None
        self.previous_genotype: str | None = None   # the last epoch's, to say whether the genotype changed

    # -- checkpoints ------------------------------------------------------------------
    def state(self) -> dict:
        return {"model": self.model.state_dict(), "alpha_stream": self.data.alpha_stream.state_dict(),
                "strategy": {key: obj.state_dict() for key, obj in self.strategy.checkpointables().items()},
                "previous_genotype": self.previous_genotype}

    def load_state(self, state: dict, source: str) -> None:
        load_state_dicts({"model": self.model}, state, source)
        load_state_dicts(self.strategy.checkpointables(), state["strategy"], source)
        self.data.alpha_stream.load_state_dict(state["alpha_stream"])
        self.previous_genotype = state.get("previous_genotype")

    # -- the loop's parts ---------------------------------------------------------------------
    def check_resume(self, run_dir: Path) -> None:
        check_split_unchanged(run_dir, self.data)

    def start(self, run_dir: Path, logger: RunLogger, writes: bool, fresh: bool) -> None:
        record_split(run_dir, self.cfg, self.data, writes, fresh)

    def start_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        self.strategy.start_epoch(epoch)
        return self.strategy.learning_rates()

    def batches(self, epoch: int, start: int):
        return in_layout(self.data.weight_batches.epoch(epoch, start=start), self.layout)

    def train_step(self, batch, epoch: int) -> dict[str, torch.Tensor]:
        return self.strategy.step(batch, self.alpha_batches, epoch)

    def end_epoch(self, epoch: int, record: dict) -> None:
        self.strategy.end_epoch(epoch)
        # Per-rank BatchNorm statistics (sync_bn off) differ; rank 0's are the run's.
        self.dist.broadcast_buffers(self.model)
        every = self.search_cfg.eval_every
        if epoch == self.epochs - 1 or bool(every and (epoch + 1) % every == 0):
            arch = self.strategy.eval_arch_weights()
            result = evaluate(self.model, self.data.alpha_eval_batches, forward=lambda x: self.model(x, arch),
                              max_batches=self.search_cfg.get("eval_max_batches"), dist=self.dist)
            record.update(alpha_eval_loss=result["loss"], alpha_eval_acc=result["top1"])
        if self.dist.enabled and self.strategy.arch_parameters():
            record["alpha_rank_divergence"] = self.dist.max_divergence(self.strategy.arch_parameters())
        # Every rank derives the genotype: a strategy may need collectives for it (random_ws ranks).
        self.genotype = self.strategy.genotype()
        for cell, cell_weights in self.strategy.mixing_weights().items():
            record[f"entropy_{cell}"] = entropy(cell_weights)
        # The collapse signals in the normal cell (a space with one cell type: that cell).
        graphs = self.genotype.cell_graphs()
        for key, count in cell_op_counts(graphs.get("normal") or next(iter(graphs.values()))).items():
            record[f"normal_{key}"] = count
        text = str(self.genotype)
        record["genotype_changed"] = self.previous_genotype is not None and text != self.previous_genotype
        self.previous_genotype = text

    def log_epoch(self, epoch: int, record: dict, logger: RunLogger, run_dir: Path) -> None:
        labels = self.space.edge_labels()
        for cell, cell_weights in self.strategy.mixing_weights().items():
            logger.image(f"alphas/{cell}", viz.alpha_heatmap(cell_weights.float().cpu(), self.space.primitives,
                                                            labels, title=f"{cell} epoch {epoch}"), epoch)
        logger.text("genotype", f"`{self.genotype}`", epoch)
        for cell, path in viz.draw_genotype(self.genotype, run_dir / "cells").items():
            logger.image(f"cells/{cell}", viz.load_png(path), epoch)
        (run_dir / "genotypes").mkdir(exist_ok=True)
        write_json(run_dir / "genotypes" / f"epoch_{epoch:03d}.json", genotype_record(self.genotype))
        logger.console(f"  genotype {self.genotype}")

    def finish(self, run_dir: Path, logger: RunLogger, writes: bool, history: list[dict]) -> dict:
        genotype = self.strategy.genotype()
        last = history[-1] if history else {}
        results = {
            "strategy": self.strategy.name,
            "space": self.space.name,
            "genotype": genotype.to_dict(),
            "genotype_string": str(genotype),
            "alphas": self.strategy.arch_record(),
            "softmax_weights": {cell: w.float().tolist() for cell, w in self.strategy.mixing_weights().items()},
            "train_loss": last.get("loss"), "train_acc": last.get("acc"),
            "alpha_loss": last.get("alpha_loss"), "alpha_acc": last.get("alpha_acc"),
            "alpha_eval_loss": last.get("alpha_eval_loss"), "alpha_eval_acc": last.get("alpha_eval_acc"),
            "weight_params": sum(p.numel() for p in self.model.parameters()),
            "runtime": self.runtime.describe(),
        }
        if writes:
            write_json(run_dir / "genotype.json", genotype_record(genotype))
        return results

