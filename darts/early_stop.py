"""When a search stops early, and which epoch's genotype it returns.

A rule is one class registered with ``@STOP_RULES.register(name)`` plus one file in
``conf/early_stop/`` whose ``name`` selects it (its other keys are the constructor's). A rule is a
pure function of the search's history (one record per finished epoch, as ``results.json`` holds
it): ``decide(history, epochs)`` looks at the records so far and returns a :class:`StopDecision` or
None. It keeps no state of its own, so a resumed run, whose history comes back from the
checkpoint, stops at exactly the epoch an uninterrupted run stops at.

The record keys the rules read (written by the supernet search every epoch): ``alpha_eval_acc`` /
``alpha_eval_loss`` (when evaluated), ``eigenvalue`` (when measured), ``normal_skip_connects``,
``alpha_ranking`` (a digest of the order of the parametric ops' weights on every edge) and
``genotype`` (its string form).
"""
from __future__ import annotations

import abc
import math
from dataclasses import asdict, dataclass
from typing import ClassVar

from darts.errors import DartsError
from darts.metrics import METRICS, check_metric, is_better
from darts.registry import Registry

STOP_RULES: Registry[type["StopRule"]] = Registry("early_stop rule")
@dataclass(frozen=True)
class StopDecision:
    """epoch: the last epoch the search trains; genotype_epoch: the epoch whose genotype it returns."""

    epoch: int
    genotype_epoch: int
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def build_stop_rule(cfg) -> "StopRule":
    """The rule named ``cfg.name`` built with the rest of ``cfg`` as keyword arguments."""
    cls = STOP_RULES.get(cfg.get("name", "none"))
    options = {key: value for key, value in cfg.items() if key != "name"}
    try:
        return cls(**options)
    except TypeError as err:
        raise DartsError(f"early_stop {cls.name!r}: bad option: {err}") from None


class StopRule(abc.ABC):
    name: ClassVar[str]
    # Epochs between the eigenvalue measurements the rule needs (0: none); the search measures then.
    eigenvalue_every: int = 0

    @abc.abstractmethod
    def decide(self, history: list[dict], epochs: int) -> StopDecision | None:
        """Stop after the last record of ``history`` (of an ``epochs``-epoch search), or None."""


@STOP_RULES.register("none")
class NoStop(StopRule):
    name = "none"

    def decide(self, history: list[dict], epochs: int) -> StopDecision | None:
        return None


@STOP_RULES.register("plateau")
class Plateau(StopRule):
    """The mission's rule: stop when the validation (alpha-split) metric has not improved on the
    best so far by more than ``min_delta`` in ``patience`` evaluations (evaluations, not epochs:
    ``search.eval_every`` spaces them, as Lightning counts validation checks). With
    ``restore_best`` the genotype is the best evaluation's, else the last epoch's."""

    name = "plateau"

    def __init__(self, metric: str = "accuracy", patience: int = 3, min_delta: float = 0.0,
                 restore_best: bool = True):
        self.key, self.sense = METRICS[check_metric(metric, "early_stop.metric")]
        if not isinstance(patience, int) or patience < 1:
            raise DartsError(f"early_stop.patience must be a positive integer, got {patience!r}")
        self.metric, self.patience, self.min_delta, self.restore_best = metric, patience, float(min_delta), restore_best

    def decide(self, history: list[dict], epochs: int) -> StopDecision | None:
        evaluated = [(record["epoch"], record[self.key]) for record in history if record.get(self.key) is not None]
        if not evaluated:
            return None
        best_epoch, best = evaluated[0]
        since = 0
        for epoch, value in evaluated[1:]:
            if is_better(value, best, self.sense, self.min_delta):
                best_epoch, best, since = epoch, value, 0
            else:
                since += 1
        last = history[-1]["epoch"]
        if since < self.patience or evaluated[-1][0] != last:
            return None
        return StopDecision(last, best_epoch if self.restore_best else last,
                            f"{self.metric} has not improved on {best:.6g} (epoch {best_epoch}) by more than "
                            f"{self.min_delta:g} in {self.patience} evaluations")


@STOP_RULES.register("darts_es")
class DartsES(StopRule):
    """RobustDARTS's DARTS-ES (Zela et al., 2020), as ``EVLocalAvg`` in their src/utils.py does it.

    The dominant eigenvalue is measured every ``interval`` epochs (epochs 0, 2, 4, ... and the last).
    Local average: the mean of all samples while there are fewer than ``window``, a sliding mean of
    ``window`` samples after that, first computed once ceil(window / 2) samples exist; the average
    computed at epoch e stands for epoch e - interval * floor(window / 2). Once that epoch minus
    interval * delta reaches ``start_epoch``, stop when the current local average over the one
    ``delta`` averages earlier exceeds ``factor``; the genotype returned is that earlier epoch's
    (e - 12 with the defaults). Never tested at the last epoch (the search ends there anyway).
    """

    name = "darts_es"

    def __init__(self, window: int = 5, interval: int = 2, factor: float = 1.3, start_epoch: int = 10,
                 delta: int = 4):
        for option, value in (("window", window), ("interval", interval), ("delta", delta)):
            if not isinstance(value, int) or value < 1:
                raise DartsError(f"early_stop.{option} must be a positive integer, got {value!r}")
        self.window, self.interval, self.factor = window, interval, float(factor)
        self.start_epoch, self.delta = start_epoch, delta
        self.eigenvalue_every = interval

    def decide(self, history: list[dict], epochs: int) -> StopDecision | None:
        last = history[-1]["epoch"]
        if last == epochs - 1 or last % self.interval or history[-1].get("eigenvalue") is None:
            return None
        # Only the rule's own sampling epochs count (diagnostics may measure more often).
        samples = [record["eigenvalue"] for record in history
                   if record.get("eigenvalue") is not None and record["epoch"] % self.interval == 0]
        # Replay the local averages up to now (the last epoch, which RobustDARTS handles apart, never is).
        averages = []
        for count in range(math.ceil(self.window / 2), len(samples) + 1):
            seen = samples[:count]
            averages.append(sum(seen[-self.window:]) / min(len(seen), self.window))
        if len(averages) <= self.delta:
            return None
        average_epoch = last - self.interval * (self.window // 2)
        stop_epoch = average_epoch - self.interval * self.delta
        if stop_epoch < self.start_epoch:
            return None
        ratio = averages[-1] / averages[-1 - self.delta]
        if ratio <= self.factor:
            return None
        return StopDecision(last, stop_epoch, f"local average of the dominant eigenvalue grew {ratio:.3g}x "
                                              f"(> {self.factor:g}) from epoch {stop_epoch} to {average_epoch}")


@STOP_RULES.register("darts_plus")
class DartsPlus(StopRule):
    """DARTS+ (Liang et al., 2019; no official code): criterion 1 stops as soon as the normal cell
    derived at an epoch has ``max_skip_connects`` (2) or more skip connections; criterion 2 stops
    when the ranking of the architecture weights of the parametric ops on every edge has stayed the
    same for ``stable_epochs`` (10) epochs. Either criterion may be switched off; the genotype is
    the stopping epoch's."""

    name = "darts_plus"

    def __init__(self, max_skip_connects: int | None = 2, stable_epochs: int | None = 10):
        if max_skip_connects is None and stable_epochs is None:
            raise DartsError("early_stop=darts_plus needs max_skip_connects or stable_epochs (or both)")
        self.max_skip_connects, self.stable_epochs = max_skip_connects, stable_epochs

    def decide(self, history: list[dict], epochs: int) -> StopDecision | None:
        record = history[-1]
        epoch = record["epoch"]
        if self.max_skip_connects is not None and record["normal_skip_connects"] >= self.max_skip_connects:
            return StopDecision(epoch, epoch, f"the normal cell has {record['normal_skip_connects']} skip connections "
                                              f"(>= {self.max_skip_connects})")
        stable = self.stable_epochs
        if stable is not None and len(history) > stable:
            rankings = {r["alpha_ranking"] for r in history[-stable - 1:]}
            if len(rankings) == 1:
                return StopDecision(epoch, epoch, f"the ranking of the parametric ops' architecture weights has "
                                                  f"not changed in {stable} epochs")
        return None
