"""The one run engine: epochs, checkpoint/resume, preemption, metrics, TensorBoard, results.json.

Supernet search, plain random sampling and final training are each a :class:`Task` (what the run
trains) driven by :class:`Run` (how every run goes):

    run = Run(cfg, run_dir, task_factory)   # task_factory(cfg, context) -> Task
    results = run.run()

Per epoch the engine asks the task for its batches from the step it resumes at, calls
``train_step`` on each, accumulates the metrics it returns (device tensors, summed over ranks),
logs a window of them every ``log_every`` steps, checks for a stop signal after every step, and at
the epoch's end lets the task finish the epoch (schedulers, evaluation, genotypes), logs the
record, and writes one checkpoint: the engine's own state (epoch, RNG, history, wall time) plus
``task.state()``; an epoch the task marks ``is_best`` is also written to ``best.pt``. When the task's
``early_stop`` decides to stop, the decision goes into that epoch's record (``stop``) and the run
ends there; a resumed stopped run stays stopped. A stop signal mid-epoch checkpoints the step it
reached and the metric sums so far; ``resume=true`` continues from there and ends as an
uninterrupted run does.
"""
from __future__ import annotations

import abc
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from omegaconf import OmegaConf

from darts.checkpoint import load_checkpoint, rng_state, save_atomic, seed_everything, set_rng_state
from darts.errors import DartsError
from darts.machine import machine_description, peak_memory_mb
from darts.preemption import StopCheck, StoppableRun
from darts.engine.context import RunContext, library_versions, start_run
from darts.tracking import MetricAccumulator, RunLogger, write_json


class Task(abc.ABC):
    """What a run trains. Built by its factory after the run's seed is set; the engine then calls
    ``load_state`` (on resume), ``start`` once, and per epoch ``start_epoch``, ``batches`` and
    ``train_step``, then ``end_epoch`` and ``log_epoch``; ``finish`` at the end. On resume
    ``check_resume`` and ``load_state`` come first, before anything is written."""

    kind: str                       # results.json "kind": "search" | "final"
    name: str                       # the strategy or network name, checked on resume
    epochs: int
    steps_per_epoch: int
    log_every: int = 0
    progress_keys: tuple[str, ...] = ("loss", "acc")

    def check_resume(self, run_dir: Path) -> None:
        """Before a resumed run writes anything: raise a DartsError to refuse it (another data split)."""

    def start(self, run_dir: Path, logger: RunLogger, writes: bool, fresh: bool) -> None:
        """Once, before the first epoch this process runs (``fresh``: the run's very first)."""

    def start_epoch(self, epoch: int) -> dict[str, float]:
        """Set up epoch ``epoch``; returns entries for its record known before training (learning rates)."""
        return {}

    @abc.abstractmethod
    def batches(self, epoch: int, start: int) -> Iterator:
        """The epoch's training batches from step ``start`` on."""

    @abc.abstractmethod
    def train_step(self, batch, epoch: int) -> dict[str, torch.Tensor]:
        """One step; device tensors for the metric accumulator (no host sync)."""

    @abc.abstractmethod
    def end_epoch(self, epoch: int, record: dict) -> None:
        """Schedulers, evaluation and per-epoch results, added to ``record`` (every rank)."""

    def log_epoch(self, epoch: int, record: dict, logger: RunLogger, run_dir: Path) -> None:
        """Pictures, texts and files of the epoch (rank 0 only)."""

    def early_stop(self, history: list[dict]) -> dict | None:
        """After an epoch's record is made: a stop decision ({"epoch", "genotype_epoch", "reason"})
        to end the run there, or None. A pure function of ``history`` (every finished epoch's record,
        the last one included), so a resumed run decides as an uninterrupted one."""
        return None

    @abc.abstractmethod
    def state(self) -> dict[str, Any]:
        """The task's checkpoint entries (state dicts of what it trains)."""

    @abc.abstractmethod
    def load_state(self, state: dict[str, Any], source: str) -> None:
        """Restore from ``state()``; ``source`` names the checkpoint in errors."""

    @abc.abstractmethod
    def finish(self, run_dir: Path, logger: RunLogger, writes: bool, history: list[dict]) -> dict[str, Any]:
        """The task's results (exports written when ``writes``); ``history`` holds every epoch's record."""


TaskFactory = Callable[[Any, RunContext], Task]


class Run(StoppableRun):
    """One run of a task in ``run_dir``: everything the tasks share."""

    def __init__(self, cfg, run_dir: Path, task_factory: TaskFactory):
        self.cfg = cfg
        self.context = start_run(cfg, run_dir)
        self.dist, self.device = self.context.dist, self.context.device
        self.run_dir, self.checkpoint_path = self.context.run_dir, self.context.checkpoint_path
        seed_everything(cfg.seed, cfg.deterministic)
        self.task = task_factory(cfg, self.context)
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
        return {"epoch": epoch, "interrupted": interrupted, "kind": self.task.kind, "name": self.task.name,
                "task": self.task.state(), "rng": rng_state(), "history": self.history,
                "wall_time_s": self.wall_time_s, "world_size": self.dist.world_size}

    def restore(self) -> None:
        state = load_checkpoint(self.checkpoint_path, map_location=self.device)
        source = f"checkpoint {self.checkpoint_path}"
        if "task" not in state:
            raise DartsError(f"{source} was written by an earlier version of this code, whose checkpoints "
                             "this engine does not read: start the run afresh in another directory")
        if (state.get("kind"), state.get("name")) != (self.task.kind, self.task.name):
            raise DartsError(f"{source} was written by a {state.get('kind')} run of {state.get('name')!r}, "
                             f"not a {self.task.kind} run of {self.task.name!r}")
        self.task.check_resume(self.run_dir)
        self.task.load_state(state["task"], source)
        set_rng_state(state["rng"])
        self.history = list(state["history"])
        self.wall_time_s = state["wall_time_s"]
        self.start_epoch = state["epoch"] + 1
        interrupted = state.get("interrupted")
        if interrupted:
            self.start_epoch, self.start_step = interrupted["epoch"], interrupted["step"]
            self.resumed_totals = {k: v.to(self.device) for k, v in interrupted["totals"].items()}

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> dict:
        task, logger = self.task, self.logger
        fresh = self.start_epoch == 0 and self.start_step == 0
        if self.context.writes:
            OmegaConf.save(self.cfg, self.run_dir / "config_resolved.yaml", resolve=True)
        task.start(self.run_dir, logger, self.context.writes, fresh)
        if not fresh:
            logger.console(f"resuming from epoch {self.start_epoch} step {self.start_step} of "
                           f"{task.epochs} epochs ({self.checkpoint_path})")
        stop_check = StopCheck(self.cfg.get("preemption"), self.dist, self.device)
        first_epoch = task.epochs if self.stop_decision() else self.start_epoch   # stopped early: stays so
        with stop_check.signals:
            for epoch in range(first_epoch, task.epochs):
                epoch_start = time.time()
                first_step = self.start_step if epoch == self.start_epoch else 0
                record = {"epoch": epoch, **task.start_epoch(epoch)}
                totals = self.train_epoch(epoch, first_step, stop_check, epoch_start)
                record.update(totals.read(self.dist.sum_metrics))
                task.end_epoch(epoch, record)
                self.wall_time_s += time.time() - epoch_start
                record["wall_time_s"] = self.wall_time_s
                decision = task.early_stop(self.history + [record])
                if decision:
                    record["stop"] = decision
                self.end_of_epoch(epoch, record)
                if decision:
                    logger.console(f"stopping early after epoch {epoch}: {decision['reason']}")
                    break
                if epoch + 1 < task.epochs and stop_check.requested_at_epoch_end():
                    self.stop(epoch + 1, 0, None, stop_check)
        return self.finish()

    def train_epoch(self, epoch: int, first_step: int, stop_check: StopCheck, epoch_start: float) -> MetricAccumulator:
        task = self.task
        totals, window = MetricAccumulator(), MetricAccumulator()
        if first_step:
            totals.add(self.resumed_totals)
        batches = task.batches(epoch, first_step)
        for step in range(first_step, task.steps_per_epoch):
            metrics = task.train_step(next(batches), epoch)
            totals.add(metrics)
            window.add(metrics)
            if task.log_every and (step + 1) % task.log_every == 0:
                values = window.read(self.dist.sum_metrics)
                window = MetricAccumulator()
                self.logger.scalars(values, epoch * task.steps_per_epoch + step + 1, prefix="step/")
                self.logger.console(f"  epoch {epoch} step {step + 1}/{task.steps_per_epoch} " +
                                    "  ".join(f"{k} {v:.4g}" for k, v in values.items()))
            if step + 1 < task.steps_per_epoch and stop_check.requested(step):
                self.wall_time_s += time.time() - epoch_start
                self.stop(epoch, step + 1, totals, stop_check)
        return totals

    def end_of_epoch(self, epoch: int, record: dict) -> None:
        self.history.append(record)
        if self.context.writes:
            self.logger.scalars({k: v for k, v in record.items()
                                 if k not in ("epoch", "wall_time_s") and isinstance(v, (int, float))},
                                epoch, prefix="epoch/")
            self.task.log_epoch(epoch, record, self.logger, self.run_dir)
            state = self.state(epoch)
            save_atomic(state, self.checkpoint_path)
            if record.get("is_best"):
                save_atomic(state, self.run_dir / "best.pt")
            self.logger.flush()
        shown = {k: record[k] for k in self.task.progress_keys if isinstance(record.get(k), (int, float))}
        self.logger.progress("epoch", epoch + 1, self.task.epochs, shown)

    def stop_decision(self) -> dict | None:
        return self.history[-1].get("stop") if self.history else None

    def finish(self) -> dict:
        results = {"kind": self.task.kind, **self.task.finish(self.run_dir, self.logger, self.context.writes, self.history)}
        decision = self.stop_decision()
        results.update(stopped_epoch=decision["epoch"] if decision else None,
                       stop_reason=decision["reason"] if decision else None, epochs_run=len(self.history))
        results.update(epochs=self.task.epochs, steps_per_epoch=self.task.steps_per_epoch,
                       wall_time_s=self.wall_time_s, world_size=self.dist.world_size, seed=self.cfg.seed,
                       device=str(self.device), machine=machine_description(self.device), versions=library_versions(),
                       peak_memory_mb=peak_memory_mb(self.device),
                       history=self.history)
        if self.context.writes:
            write_json(self.run_dir / "results.json", results)
        self.logger.close()
        return results
