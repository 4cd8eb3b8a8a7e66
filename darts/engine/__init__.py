"""Runs: the one engine (:mod:`darts.engine.loop`) and the tasks it drives.

``run_search`` picks the task from what the configured strategy trains (``Strategy.trains``):
``supernet`` -> :class:`~darts.engine.supernet.SupernetSearch`, ``candidates`` ->
:class:`~darts.engine.candidates.CandidateTraining`, then the selection step ``selection.name``
names (``argmax``: none, the search's own genotype; ``darts_pt``:
:mod:`darts.engine.projection`); ``run_final`` runs :class:`~darts.engine.final.FinalTraining`.
A language-model space (its class sets ``language_model``) is searched by
:class:`~darts.engine.language_search.LanguageModelSearch` and trained by
:class:`~darts.engine.language_final.LanguageModelTraining` instead.
"""
from __future__ import annotations

from pathlib import Path

from darts.distributed import shutdown_distributed
from darts.registry import Registry
from darts.engine.candidates import CandidateTraining
from darts.engine.final import FinalTraining
from darts.engine.language_final import LanguageModelTraining
from darts.engine.language_search import LanguageModelSearch
from darts.engine.loop import Run, Task
from darts.engine.projection import DARTS_PT, SelectionStep
from darts.engine.supernet import SupernetSearch
from darts.spaces import SPACES
from darts.strategies import build_strategy

# What a strategy trains -> the task that trains it: Task(cfg, context, strategy).
SEARCH_TASKS: Registry[type[Task]] = Registry("kind of search (Strategy.trains)")
SEARCH_TASKS.add("supernet", SupernetSearch)
SEARCH_TASKS.add("candidates", CandidateTraining)

# selection.name -> the step that runs after the search (None: the search's genotype is the result).
SELECTIONS: Registry[SelectionStep | None] = Registry("selection")
SELECTIONS.add("argmax", None)
SELECTIONS.add("darts_pt", DARTS_PT)


def language_model_space(cfg) -> bool:
    """Whether the configured space is a language-model space (``language_model`` on its class)."""
    return bool(getattr(SPACES.get(cfg.space.name), "language_model", False))


def run_search(cfg, run_dir: Path) -> dict:
    """Run (or resume) a search in ``run_dir`` and return its results."""
    try:
        strategy = build_strategy(cfg.strategy)
        if language_model_space(cfg):
            return Run(cfg, run_dir, lambda cfg, context: LanguageModelSearch(cfg, context, strategy)).run()
        selection = SELECTIONS.get((cfg.get("selection") or {}).get("name", "argmax"))
        if selection is not None:
            selection.check(cfg, Path(run_dir), strategy)   # before the search: a refusal costs nothing
        task_class = SEARCH_TASKS.get(strategy.trains)
        run = Run(cfg, run_dir, lambda cfg, context: task_class(cfg, context, strategy))
        results = run.run()
        return results if selection is None else selection.run(cfg, run.run_dir, results)
    finally:
        shutdown_distributed()


def run_final(cfg, run_dir: Path) -> dict:
    """Train (or resume) the configured genotype in ``run_dir`` and return its results."""
    try:
        return Run(cfg, run_dir, LanguageModelTraining if language_model_space(cfg) else FinalTraining).run()
    finally:
        shutdown_distributed()


__all__ = ["Run", "SEARCH_TASKS", "SELECTIONS", "Task", "run_final", "run_search"]
