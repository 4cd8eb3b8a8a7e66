"""The selection metric (``selection.metric``): what ranks candidates, architectures and epochs.

``accuracy`` (top-1 on the alpha split, higher is better) or ``loss`` (its cross-entropy, lower is
better), used alike by random search with weight sharing, plain random sampling, early stopping and
the best-epoch tracking of a search.
"""
from __future__ import annotations

from darts.errors import DartsError

# selection.metric -> the search record key it reads and its sense (+1: higher is better).
METRICS = {"accuracy": ("alpha_eval_acc", 1), "loss": ("alpha_eval_loss", -1)}


def check_metric(metric: str, option: str = "selection.metric") -> str:
    if metric not in METRICS:
        raise DartsError(f"unknown {option} {metric!r}; valid choices: {', '.join(METRICS)}")
    return metric


def is_better(value: float, best: float, sense: int, min_delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` in the metric's sense."""
    return sense * (value - best) > min_delta


def ranking_order(accuracies: list[float], losses: list[float], metric: str) -> list[int]:
    """Candidate indices best first: by accuracy (ties: the lower loss) or by loss; then the earlier one."""
    check_metric(metric)
    if metric == "accuracy":
        return sorted(range(len(losses)), key=lambda i: (-accuracies[i], losses[i], i))
    return sorted(range(len(losses)), key=lambda i: (losses[i], i))
