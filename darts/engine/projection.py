"""The DARTS-PT selection step (``selection=darts_pt``): a second run after the supernet search.

``run_darts_pt`` runs :class:`DartsPTSelection` as its own engine run in ``<run_dir>/selection/``
(its own checkpoint, stop signals and ``resume``), then publishes the result in the search's
directory: ``genotype.json`` becomes the selected genotype (the search's own is kept as
``genotype_argmax.json``) and ``results.json`` gains a ``selection`` entry.

The task rebuilds the search's supernet and strategy (through :class:`SupernetSearch`, configured
for tuning), loads the search's final weights, architecture parameters, alpha optimiser and alpha
stream from ``<run_dir>/checkpoint.pt``, constrains the strategy with the
:class:`~darts.projection.Projection`, and tunes with the strategy's own steps while deciding
(ruocwang/darts-pt sota/cnn/projection.py ``pt_project``; nasbench201/projection.py for NB201):

* tuning optimiser: ``model.reset_optimizer(learning_rate / 10, momentum, weight_decay)``: a fresh
  SGD at ``selection.lr_factor`` x ``optim.weights.lr``. Theirs builds a cosine scheduler over the
  tuning epochs (eta_min 0.001) but never steps it in ``pt_project``, and the NB201 code has none:
  the lr stays 0.0025 in both; ``selection.lr_min: null`` does that, a number anneals to it;
* the alphas keep their Adam state and keep moving (``architect.step``, first order); with
  ``selection.update_alphas=false`` they stay fixed (their ``blank`` architect); either way through
  ``strategy.arch_start_epoch`` (PC-DARTS's warm-up does not restart);
* weight batches continue the search's shuffles (tuning epoch e reads epoch ``search.epochs + e``).

Deviations: a strategy's own epoch schedules (GDAS's tau, SDARTS's epsilon, DARTS-'s beta) run again
over the tuning epochs, as the strategy is rebuilt for them; DARTS-PT itself only has DARTS's.
See :mod:`darts.projection` for the decisions and their deviations.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from omegaconf import OmegaConf

from darts.checkpoint import CHECKPOINT_NAME, load_checkpoint, load_state_dicts
from darts.errors import DartsError
from darts.engine.context import RunContext, in_layout, resume_requested
from darts.engine.evaluate import evaluate
from darts.engine.loop import Run, Task
from darts.engine.supernet import SupernetSearch, check_split_unchanged, genotype_record
from darts.projection import (UNPROJECTABLE_STRATEGIES, Projection, Schedule, Settings, draw, op_decision,
                              supernet_score, topology_decision)
from darts.spaces.base import build_space
from darts.strategies import STRATEGIES, build_strategy
from darts.strategies.base import GeneratorState, Strategy
from darts.tracking import RunLogger, write_json

# What pt_project resets (model.reset_optimizer, a new scheduler); the rest of the strategy carries on.
RESET_FOR_TUNING = ("w_optimizer", "scheduler")


class SelectionStep(NamedTuple):
    """A step after the search: ``check(cfg, run_dir, strategy)`` before it (refuse early), ``run(cfg,
    run_dir, search_results) -> results`` after it."""

    check: Callable[[object, Path, Strategy], None]
    run: Callable[[object, Path, dict], dict]


def projectable_strategies() -> list[str]:
    return [name for name, cls in STRATEGIES.items()
            if getattr(cls, "trains", None) == "supernet" and name not in UNPROJECTABLE_STRATEGIES]


def refuse(strategy_name: str, why: str) -> DartsError:
    return DartsError(f"selection=darts_pt cannot select with strategy {strategy_name!r} ({why}); valid "
                      f"strategies: {', '.join(projectable_strategies())}")


def check_same_settings(saved: dict | None, settings: Settings, source: str) -> None:
    """A selection resumes only under the settings it started with: another schedule or criterion
    would not continue the decisions already made."""
    changed = sorted(key for key, value in asdict(settings).items() if (saved or {}).get(key, value) != value)
    if changed:
        raise DartsError(f"{source} was written with other selection settings ({', '.join(changed)}): "
                         f"resume with the run's own, or select afresh in another directory")


def check_darts_pt(cfg, run_dir: Path, strategy: Strategy) -> None:
    """Before the search: the selection config is valid, the strategy has weights to project and a
    selection to resume in ``run_dir`` ran with the same settings (a refusal then costs nothing)."""
    settings = Settings.from_cfg(cfg.selection)
    if strategy.trains != "supernet":
        raise refuse(strategy.name, "it trains no supernet")
    if strategy.name in UNPROJECTABLE_STRATEGIES:
        raise refuse(strategy.name, "it has no architecture weights")
    checkpoint = Path(run_dir) / "selection" / CHECKPOINT_NAME
    if checkpoint.is_file() and resume_requested(cfg.resume) != "false":
        saved = load_checkpoint(checkpoint).get("task", {}).get("settings")
        check_same_settings(saved, settings, f"checkpoint {checkpoint}")


def tuning_config(cfg, settings: Settings, tune_epochs: int):
    """The run's config with the tuning settings in the places the search task reads them."""
    lr = float(cfg.optim.weights.lr) * settings.lr_factor
    search = {"epochs": tune_epochs}
    if settings.eval_batch_size is not None:
        search["eval_batch_size"] = settings.eval_batch_size
    overrides = {"search": search,
                 "optim": {"weights": {"lr": lr, "lr_min": lr if settings.lr_min is None else settings.lr_min}}}
    if "arch_start_epoch" in cfg.strategy:
        overrides["strategy"] = {"arch_start_epoch": 0 if settings.update_alphas else tune_epochs}
    elif not settings.update_alphas:
        raise DartsError(f"selection.update_alphas=false freezes the alphas through strategy.arch_start_epoch, "
                         f"which strategy {cfg.strategy.name!r} does not have")
    return OmegaConf.merge(cfg, overrides)


def constrain_or_refuse(strategy, projection: Projection) -> None:
    """Constrain ``strategy`` with ``projection`` once a probe shows its forwards go through it."""
    seen = []

    def probe(arch):
        seen.append(True)
        return arch

    try:
        strategy.constrain(probe)
        strategy.eval_arch_weights()
    except DartsError:
        seen.clear()
    if not seen or not strategy.arch_parameters():
        raise refuse(strategy.name, "its forwards do not pass through constrained()")
    strategy.constrain(projection)


class DartsPTSelection(Task):
    """Tuning epochs with a decision event at the start of the scheduled ones (see the module docstring)."""

    kind = "selection"
    progress_keys = ("loss", "acc", "alpha_eval_acc", "decisions")

    def __init__(self, cfg, context: RunContext, settings: Settings, search_dir: Path):
        self.cfg, self.context, self.settings, self.search_dir = cfg, context, settings, Path(search_dir)
        counting = build_space(cfg.space)
        node_edges = counting.node_edges()
        topology_nodes = settings.topology_nodes(counting.name, node_edges)
        self.schedule = Schedule(counting.num_edges, len(topology_nodes), settings.interval, settings.tune_epochs)
        tune_cfg = tuning_config(cfg, settings, self.schedule.epochs)
        self.strategy = build_strategy(tune_cfg.strategy)
        self.name = f"darts_pt:{self.strategy.name}"
        self.tuning = SupernetSearch(tune_cfg, context, self.strategy)
        self.space, self.model, self.data, self.dist = (self.tuning.space, self.tuning.model, self.tuning.data,
                                                        self.tuning.dist)
        self.projection = Projection(self.space.cell_types, node_edges, topology_nodes)
        constrain_or_refuse(self.strategy, self.projection)
        self.epochs, self.steps_per_epoch = self.schedule.epochs, self.tuning.steps_per_epoch
        self.log_every = self.tuning.log_every
        self.epoch_offset = int(cfg.search.epochs)
        self.generator = torch.Generator().manual_seed(cfg.seed if settings.seed is None else settings.seed)
        self.decisions: list[dict] = []
        self.events_done = 0
        self.labels = self.space.edge_labels()
        # Whether a cell of this space may keep `none` (NAS-Bench-201) or not (DARTS: see darts.projection).
        self.keeps_none = "none" in [self.space.primitives[k] for k in self.space.random_op_choices()]

    # -- checkpoints ----------------------------------------------------------------------
    def state(self) -> dict:
        return {"tuning": self.tuning.state(), "projection": self.projection.state_dict(),
                "edge_generator": GeneratorState(self.generator).state_dict(),
                "decisions": self.decisions, "events_done": self.events_done, "settings": asdict(self.settings)}

    def load_state(self, state: dict, source: str) -> None:
        check_same_settings(state.get("settings"), self.settings, source)
        self.tuning.load_state(state["tuning"], source)
        self.projection.load_state_dict(state["projection"])
        GeneratorState(self.generator).load_state_dict(state["edge_generator"])
        self.decisions, self.events_done = list(state["decisions"]), int(state["events_done"])

    def load_search(self) -> None:
        """The search's final supernet weights and strategy state, less what tuning resets."""
        path = self.search_dir / CHECKPOINT_NAME
        state = load_checkpoint(path, map_location=self.context.device)
        source = f"search checkpoint {path}"
        if state.get("kind") != "search" or "task" not in state or state.get("name") != self.strategy.name:
            raise DartsError(f"{source} is not a supernet search's checkpoint of strategy {self.strategy.name!r}")
        if state.get("interrupted"):
            raise DartsError(f"{source} was stopped mid-epoch: finish the search (resume=true) before selecting")
        task_state = state["task"]
        load_state_dicts({"model": self.model}, task_state, source)
        kept = {key: obj for key, obj in self.strategy.checkpointables().items() if key not in RESET_FOR_TUNING}
        load_state_dicts(kept, task_state["strategy"], source)
        self.data.alpha_stream.load_state_dict(task_state["alpha_stream"])

    # -- the loop's parts --------------------------------------------------------------------
    def check_resume(self, run_dir: Path) -> None:
        check_split_unchanged(self.search_dir, self.data)

    def start(self, run_dir: Path, logger: RunLogger, writes: bool, fresh: bool) -> None:
        check_split_unchanged(self.search_dir, self.data)
        if fresh:
            self.load_search()
            logger.console(f"darts_pt: {self.schedule.events} decision events over {self.epochs} tuning epochs "
                           f"(every {self.settings.interval}), from {self.search_dir / CHECKPOINT_NAME}")

    def start_epoch(self, epoch: int) -> dict[str, float]:
        record = self.tuning.start_epoch(epoch)
        # A resumed epoch has its decisions already (events_done is checkpointed).
        for event in self.schedule.events_at(epoch):
            if event >= self.events_done:
                for cell in self.space.cell_types:
                    decide = self.decide_op if self.schedule.is_op_event(event) else self.decide_topology
                    self.decisions.append({"epoch": epoch, "event": event, **decide(cell)})
                self.events_done = event + 1
        self.model.train()
        return {**record, "decisions": len(self.decisions)}

    def batches(self, epoch: int, start: int):
        return in_layout(self.data.weight_batches.epoch(self.epoch_offset + epoch, start=start), self.tuning.layout)

    def train_step(self, batch, epoch: int) -> dict[str, torch.Tensor]:
        return self.tuning.train_step(batch, epoch)

    def end_epoch(self, epoch: int, record: dict) -> None:
        self.strategy.end_epoch(epoch)
        self.dist.broadcast_buffers(self.model)
        every = self.cfg.search.eval_every
        if epoch == self.epochs - 1 or bool(every and (epoch + 1) % every == 0):
            arch = self.strategy.eval_arch_weights()
            result = evaluate(self.model, self.data.alpha_eval_batches, forward=lambda x: self.model(x, arch),
                              max_batches=self.cfg.search.get("eval_max_batches"), dist=self.dist)
            record.update(alpha_eval_loss=result["loss"], alpha_eval_acc=result["top1"])
        record["genotype"] = str(self.selected_genotype())

    def log_epoch(self, epoch: int, record: dict, logger: RunLogger, run_dir: Path) -> None:
        for decision in (d for d in self.decisions if d["epoch"] == epoch):
            what = (f"edge {decision['edge_label']} keeps {decision['op']}" if decision["kind"] == "op" else
                    f"node {decision['node']} keeps {', '.join(e['edge_label'] for e in decision['kept'])}")
            logger.console(f"  darts_pt {decision['cell']}: {what}")
        logger.text("selection/genotype", f"`{record['genotype']}`", epoch)

    def finish(self, run_dir: Path, logger: RunLogger, writes: bool, history: list[dict]) -> dict:
        genotype = self.selected_genotype()
        last = history[-1] if history else {}
        projected = self.projection.project_weights(self.strategy.mixing_weights())
        results = {
            "selection": "darts_pt", "strategy": self.strategy.name, "space": self.space.name,
            "genotype": genotype.to_dict(), "genotype_string": str(genotype),
            "metric": self.settings.metric, "interval": self.settings.interval, "tune_epochs": self.epochs,
            "decision_epochs": self.schedule.epoch_of, "decisions": self.decisions,
            "op_decisions": sum(d["kind"] == "op" for d in self.decisions),
            "topology_decisions": sum(d["kind"] == "topology" for d in self.decisions),
            "projection": self.projection.state_dict(), "alphas": self.strategy.arch_record(),
            "projected_weights": {cell: w.float().tolist() for cell, w in projected.items()},
            "train_loss": last.get("loss"), "train_acc": last.get("acc"),
            "alpha_eval_loss": last.get("alpha_eval_loss"), "alpha_eval_acc": last.get("alpha_eval_acc"),
        }
        if writes:
            write_json(run_dir / "genotype.json", genotype_record(genotype))
        logger.console(f"  darts_pt genotype {genotype}")
        return results

    # -- decisions ------------------------------------------------------------------------------
    def measure(self, arch) -> tuple[float, float]:
        batches = in_layout(self.data.alpha_eval_batches.epoch(0), self.tuning.layout)
        return supernet_score(self.model, self.model, arch, batches, self.settings.eval_max_batches, self.dist)

    def op_names(self, cell: str, edge: int) -> list[str]:
        """What each weight column of ``edge`` is (a DARTS space with per-edge op lists has its own)."""
        edge_ops = getattr(self.space, "edge_ops", None)
        return list(edge_ops()[cell][edge]) if edge_ops else list(self.space.primitives)

    def decide_op(self, cell: str) -> dict:
        state = self.projection.cells[cell]
        edge = draw(state.undecided(), self.generator)
        names = self.op_names(cell, edge)
        candidates = [k for k, name in enumerate(names) if name != "none" or self.keeps_none]
        op, scores = op_decision(self.measure, self.strategy.eval_arch_weights(), cell, edge, candidates,
                                 self.settings.metric)
        state.decide_op(edge, op)
        return {"cell": cell, "kind": "op", "edge": edge, "edge_label": self.labels[edge], "op": names[op],
                "alternatives": [{"removed_op": names[k], "acc": acc, "loss": loss}
                                 for k, (acc, loss) in zip(candidates, scores)]}

    def decide_topology(self, cell: str) -> dict:
        state = self.projection.cells[cell]
        node = draw(state.open_nodes, self.generator)
        edges = state.node_edges[node]
        kept, rounds = topology_decision(self.measure, self.strategy.eval_arch_weights(), cell, edges,
                                         self.settings.metric)
        state.keep_inputs(node, kept)
        label = lambda edge: {"edge": edge, "edge_label": self.labels[edge]}
        return {"cell": cell, "kind": "topology", "node": node, "kept": [label(e) for e in kept],
                "removed": [label(e) for e in edges if e not in kept],
                "rounds": [[{**label(edge), "acc": acc, "loss": loss} for edge, (acc, loss) in scored]
                           for scored in rounds]}

    def selected_genotype(self):
        """The space's rule on the projected mixing weights: decided edges one-hot, removed ones zero."""
        weights = self.projection.project_weights(self.strategy.mixing_weights())
        cap = self.settings.max_skip_connects
        return self.space.derive(weights) if cap is None else self.space.derive(weights, max_skip_connects=cap)


def publish(search_dir: Path, selection: dict, entry: dict) -> None:
    """The search directory's genotype.json becomes the selected one (the argmax one is kept beside
    it) and its results.json gains the ``selection`` entry."""
    argmax = search_dir / "genotype.json"
    if argmax.is_file():
        write_json(search_dir / "genotype_argmax.json", json.loads(argmax.read_text()))
    write_json(argmax, {"genotype": selection["genotype"], "string": selection["genotype_string"]})
    results_path = search_dir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    write_json(results_path, {**results, "selection": entry})


def run_darts_pt(cfg, search_dir: Path, search_results: dict) -> dict:
    """Run (or resume) the selection in ``search_dir/selection`` and publish it; returns the search's
    results with the ``selection`` entry."""
    settings = Settings.from_cfg(cfg.selection)
    search_dir = Path(search_dir)
    (search_dir / "selection").mkdir(parents=True, exist_ok=True)
    # auto: a selection that stopped resumes; one that never started starts (the search guards resume=false).
    run_cfg = OmegaConf.merge(cfg, {"resume": "auto"})
    run = Run(run_cfg, search_dir / "selection",
              lambda run_cfg, context: DartsPTSelection(run_cfg, context, settings, search_dir))
    selection = run.run()
    entry = {"name": "darts_pt", "genotype": selection["genotype"], "genotype_string": selection["genotype_string"],
             "decisions": len(selection["decisions"]), "results": "selection/results.json"}
    if run.context.writes:
        publish(search_dir, selection, entry)
    return {**search_results, "selection": entry}


DARTS_PT = SelectionStep(check=check_darts_pt, run=run_darts_pt)
