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
from darts.diagnostics import EigenvalueProbe, normal_cell_counts, ranking_digest
from darts.distributed import lr_scale, shard_sizes
from darts.early_stop import build_stop_rule
from darts.errors import DartsError
from darts.metrics import METRICS, check_metric, is_better
from darts.resources import SearchResources
from darts.engine.context import RunContext, in_layout, scaled_learning_rates
from darts.engine.evaluate import entropy, evaluate
from darts.engine.loop import Task
from darts.engine.stages import StagePlan, carry_strategy, carry_supernet, edge_ops_of
from darts.runtime import build_runtime
from darts.stages import pruned_edge_ops
from darts.strategies.base import SupernetStrategy
from darts.strategies.darts import preserved_bn_stats
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
        self.stages = StagePlan(strategy, self.search_cfg.epochs, cfg.space)
        self.space = self.stages.enter(0, None)
        strategy.check_space(self.space)
        distributed_cfg = cfg.get("distributed")
        global_batch = shard_sizes(distributed_cfg, self.search_cfg.batch_size, dist.world_size, "search.batch_size")
        self.data = build_search_data(cfg.dataset, global_batch, self.search_cfg.train_portion, cfg.seed, device,
                                      self.search_cfg.get("eval_batch_size"), shard=(dist.rank, dist.world_size))
        info = self.data.info
        self.runtime = build_runtime(cfg.fast, device, cfg.deterministic, dist)
        self.layout = self.runtime.memory_format
        self.num_classes, self.in_channels = info.num_classes, info.in_channels
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
        self.optim_cfg = OmegaConf.merge(cfg.optim, {"weights": scaled_learning_rates(cfg.optim.weights, scale)})
        strategy.setup(self.space, self.model, self.optim_cfg, self.stages.schedule_epochs(0), self.steps_per_epoch,
                       self.runtime)
        # Parameters moved to the device in setup(); every rank now takes rank 0's.
        dist.broadcast_parameters(self.model)
        dist.broadcast_tensors(strategy.arch_parameters())
        # Cost tables, the resource term in the architecture loss and budgets (darts.resources).
        self.resources = SearchResources(cfg, strategy, info, device)
        self.resources.use_space(self.space)
        self.alpha_batches = in_layout(self.data.alpha_stream, self.layout)
        self.genotype = None
        self.previous_genotype: str | None = None   # the last epoch's, to say whether the genotype changed
        selection = cfg.get("selection") or {}
        self.max_skip_connects = selection.get("max_skip_connects")
        if self.resources.config.budgets:   # a budget no genotype meets fails here, before any training
            self.resources.genotype(strategy, self.max_skip_connects)
        self.metric_key, self.metric_sense = METRICS[check_metric(selection.get("metric", "accuracy"))]
        self.best: dict | None = None                 # {"epoch", "value"} of the best evaluation so far
        self.stop_rule = build_stop_rule(cfg.get("early_stop") or {"name": "none"})
        self.eigenvalues = EigenvalueProbe(cfg.get("diagnostics") or {}, self.stop_rule.eigenvalue_every, self.epochs)
        self.eigenvalue_batch = None

    # -- checkpoints ------------------------------------------------------------------
    def state(self) -> dict:
        return {"model": self.model.state_dict(), "alpha_stream": self.data.alpha_stream.state_dict(),
                "strategy": {key: obj.state_dict() for key, obj in self.strategy.checkpointables().items()},
                "previous_genotype": self.previous_genotype, "best": self.best, "stage": self.stages.state()}

    def load_state(self, state: dict, source: str) -> None:
        stage = state.get("stage") or {"index": 0, "edge_ops": None}
        if stage["index"] != self.stages.index:   # a checkpoint of a later stage: build that stage's supernet
            self.enter_stage(stage["index"], edge_ops_of(stage))
        load_state_dicts({"model": self.model}, state, source)
        load_state_dicts(self.strategy.checkpointables(), state["strategy"], source)
        self.data.alpha_stream.load_state_dict(state["alpha_stream"])
        self.previous_genotype = state.get("previous_genotype")
        self.best = state.get("best")

    # -- stages (darts.stages) ------------------------------------------------------------------
    def enter_stage(self, index: int, edge_ops) -> None:
        """Stage ``index`` with its per-edge ops: the strategy's options, then a new supernet of the
        stage's space set up, its weight schedule over the stage's (darts.engine.stages)."""
        self.space = self.stages.enter(index, edge_ops)
        self.model = self.dist.prepare_model(self.strategy.build_supernet(self.space, self.num_classes,
                                                                          self.in_channels))
        self.strategy.setup(self.space, self.model, self.optim_cfg, self.stages.schedule_epochs(index),
                            self.steps_per_epoch, self.runtime)
        self.resources.use_space(self.space)

    def next_stage(self) -> None:
        """Prune every edge to the next stage's ops and, where it carries ``state``, carry the search's
        state over (darts.engine.stages); a stage that carries ``none`` starts from its fresh supernet."""
        kept = self.stages.kept_ops(self.space)
        old_model, old_state = self.model, dict(self.strategy.checkpointables())
        index = self.stages.index + 1
        self.enter_stage(index, pruned_edge_ops(self.space.edge_ops(), kept))
        if self.stages.carries_state(index):
            carry_strategy(self.strategy.checkpointables(), old_state, carry_supernet(self.model, old_model, kept),
                           kept)
        self.dist.broadcast_parameters(self.model)
        self.dist.broadcast_tensors(self.strategy.arch_parameters())

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
            self.track_best(epoch, record)
        if self.eigenvalues.due(epoch):
            record["eigenvalue"] = self.measure_eigenvalue()
        if self.dist.enabled and self.strategy.arch_parameters():
            record["alpha_rank_divergence"] = self.dist.max_divergence(self.strategy.arch_parameters())
        # Every rank derives the genotype: a strategy may need collectives for it (random_ws ranks).
        self.genotype = self.resources.genotype(self.strategy, self.max_skip_connects)
        weights = self.strategy.mixing_weights()
        record.update(self.resources.epoch_record(weights, self.genotype))
        for cell, cell_weights in weights.items():
            record[f"entropy_{cell}"] = entropy(cell_weights)
        record["alpha_ranking"] = ranking_digest(weights, self.space.edge_ops())
        # The collapse signals in the normal cell (a space with one cell type: that cell).
        for key, count in normal_cell_counts(self.genotype).items():
            record[f"normal_{key}"] = count
        text = str(self.genotype)
        record["genotype_changed"] = self.previous_genotype is not None and text != self.previous_genotype
        record["genotype"] = text
        self.previous_genotype = text
        record["stage"] = self.stages.index
        if self.stages.ends_stage(epoch):
            self.next_stage()
            record["stage_ops"] = {cell: [list(ops) for ops in rows] for cell, rows in self.space.edge_ops().items()}

    def track_best(self, epoch: int, record: dict) -> None:
        """Mark the epoch whose alpha-split evaluation is the best so far by ``selection.metric``
        (ties: the earlier epoch); the engine writes its checkpoint to ``best.pt``."""
        value = record[self.metric_key]
        if self.best is None or is_better(value, self.best["value"], self.metric_sense):
            self.best = {"epoch": epoch, "value": value}
            record["is_best"] = True

    def measure_eigenvalue(self) -> float:
        """The dominant Hessian eigenvalue of the alpha-split loss w.r.t. the architecture
        parameters, on one fixed batch (the alpha split's first, cut to the search batch: the same
        batch every time, so the trajectory follows the curvature, not the batch), in train mode
        with the BN statistics left as they were, as RobustDARTS measures it."""
        if self.eigenvalue_batch is None:
            inputs, targets = next(iter(self.data.alpha_eval_batches.epoch(0)))
            size = self.search_cfg.batch_size
            self.eigenvalue_batch = (inputs[:size].contiguous(memory_format=self.layout), targets[:size])
        objective = self.strategy.hessian_objective(self.eigenvalue_batch)
        if objective is None:
            return float("nan")
        self.model.train()
        with preserved_bn_stats(self.model):
            value = self.eigenvalues.measure(*objective)
        # Each rank measured on its own shard's batch: the run reports their mean.
        return float(self.dist.average_tensors([torch.tensor([value], device=self.context.device)])[0])

    def early_stop(self, history: list[dict]) -> dict | None:
        decision = self.stop_rule.decide(history, self.epochs)
        return decision.to_dict() if decision else None

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

    def chosen_genotype(self, history: list[dict]):
        """The search's result: the genotype of the epoch an early stop names, else the current one."""
        decision = history[-1].get("stop") if history else None
        if decision and decision["genotype_epoch"] != history[-1]["epoch"]:
            chosen = next(record for record in history if record["epoch"] == decision["genotype_epoch"])
            return self.space.parse_genotype(chosen["genotype"])
        return self.resources.genotype(self.strategy, self.max_skip_connects)

    def finish(self, run_dir: Path, logger: RunLogger, writes: bool, history: list[dict]) -> dict:
        genotype = self.chosen_genotype(history)
        last = history[-1] if history else {}
        decision = last.get("stop")
        best_record = next((r for r in history if self.best and r["epoch"] == self.best["epoch"]), None)
        results = {
            "strategy": self.strategy.name,
            "space": self.space.name,
            "genotype": genotype.to_dict(),
            "genotype_string": str(genotype),
            "genotype_epoch": decision["genotype_epoch"] if decision else (last.get("epoch")),
            "selection_metric": self.metric_key,
            "best_epoch": self.best["epoch"] if self.best else None,
            "best_value": self.best["value"] if self.best else None,
            "best_genotype_string": best_record["genotype"] if best_record else None,
            "alphas": self.strategy.arch_record(),
            "softmax_weights": {cell: w.float().tolist() for cell, w in self.strategy.mixing_weights().items()},
            "train_loss": last.get("loss"), "train_acc": last.get("acc"),
            "alpha_loss": last.get("alpha_loss"), "alpha_acc": last.get("alpha_acc"),
            "alpha_eval_loss": last.get("alpha_eval_loss"), "alpha_eval_acc": last.get("alpha_eval_acc"),
            "weight_params": sum(p.numel() for p in self.model.parameters()),
            "runtime": self.runtime.describe(),
            # What train_final.py's network of this genotype costs (resource.network's sizes), measured.
            "final_network": self.resources.final_network(self.space, genotype),
        }
        if writes:
            write_json(run_dir / "genotype.json", genotype_record(genotype))
            if best_record:
                write_json(run_dir / "genotype_best.json",
                           genotype_record(self.space.parse_genotype(best_record["genotype"])))
            chart = viz.search_diagnostics_chart(history, self.epochs)
            viz.save_png(chart, run_dir / "diagnostics.png")
            logger.image("diagnostics", chart, last.get("epoch", 0))
        return results

