"""The ``resource`` config node (conf/resource/), checked once into a :class:`ResourceConfig`.

metric: the cost the architecture loss pays for (``params`` | ``macs`` | ``latency``; null: none);
form, weight, alpha, beta, reference: how (:mod:`darts.resources.objective`); max_params, max_macs,
max_latency_ms: hard budgets at derivation (:mod:`darts.resources.budget`); network: the final
network the costs are of (``train``-like: network, C, layers, N, stem_stride); latency: how op
latencies are timed and where they are cached.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from omegaconf import OmegaConf

from darts.errors import DartsError
from darts.resources.measure import DEFAULT_CACHE, DEFAULT_REPEATS, DEFAULT_WARMUP

METRICS = ("params", "macs", "latency")
FORMS = ("linear", "mul_log", "fbnet")
# The budget key of each metric, and the unit a metric is expressed in inside the loss (so that the
# weight, reference and FBNet's log read in the units papers use: M params, M MACs, ms).
BUDGET_KEYS = {"params": "max_params", "macs": "max_macs", "latency": "max_latency_ms"}
LOSS_UNITS = {"params": 1e6, "macs": 1e6, "latency": 1.0}
UNIT_NAMES = {"params": "M params", "macs": "M MACs", "latency": "ms"}
# The cost tables' key of each metric (latency is kept in milliseconds).
TABLE_KEYS = {"params": "params", "macs": "macs", "latency": "latency_ms"}
KEYS = ("metric", "form", "weight", "alpha", "beta", "reference", "max_params", "max_macs", "max_latency_ms",
        "network", "default_network", "latency")


@dataclass(frozen=True)
class LatencyOptions:
    batch: int = 1
    warmup: int = DEFAULT_WARMUP
    repeats: int = DEFAULT_REPEATS
    cache: str | None = DEFAULT_CACHE


@dataclass(frozen=True)
class ResourceConfig:
    metric: str | None = None
    form: str = "linear"
    weight: float = 0.0
    alpha: float = 0.2
    beta: float = 0.6
    reference: float | None = None
    budgets: dict[str, float] = field(default_factory=dict)   # metric -> limit (params, MACs, ms)
    network: dict | None = None
    latency: LatencyOptions = LatencyOptions()

    @property
    def active(self) -> bool:
        """Whether the search needs cost tables (a loss term or a budget)."""
        return self.metric is not None or bool(self.budgets)

    def budget_text(self) -> str:
        return ", ".join(f"{BUDGET_KEYS[metric]}={limit:g}" for metric, limit in self.budgets.items())


def _number(where: str, value, positive: bool = False, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DartsError(f"{where} must be a number, got {value!r}")
    if positive and value <= 0:
        raise DartsError(f"{where} must be > 0, got {value!r}")
    return float(value)


def _count(where: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DartsError(f"{where} must be an integer >= {minimum}, got {value!r}")
    return value


def parse_resource(node) -> ResourceConfig:
    """The ``resource`` node (None or absent: no resource term and no budget); one DartsError for the
    first bad key or value, naming the valid choices."""
    if node is None:
        return ResourceConfig()
    raw = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    if not isinstance(raw, Mapping):
        raise DartsError(f"resource must be a mapping (conf/resource/), got {raw!r}")
    unknown = sorted(set(map(str, raw)) - set(KEYS))
    if unknown:
        raise DartsError(f"resource: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(KEYS)}")
    metric = raw.get("metric")
    if metric is not None and metric not in METRICS:
        raise DartsError(f"unknown resource.metric {metric!r}; valid choices: null, {', '.join(METRICS)}")
    form = raw.get("form", "linear")
    if form not in FORMS:
        raise DartsError(f"unknown resource.form {form!r}; valid choices: {', '.join(FORMS)}")
    budgets = {}
    for budget_metric, key in BUDGET_KEYS.items():
        limit = _number(f"resource.{key}", raw.get(key), positive=True, allow_none=True)
        if limit is not None:
            budgets[budget_metric] = limit
    network = raw.get("network") or raw.get("default_network")
    if network is not None and not isinstance(network, Mapping):
        raise DartsError(f"resource.network must be a mapping like train (network, C, layers, ...), got {network!r}")
    latency = dict(raw.get("latency") or {})
    bad = sorted(set(latency) - {"batch", "warmup", "repeats", "cache"})
    if bad:
        raise DartsError(f"resource.latency: unknown key(s) {', '.join(bad)}; valid keys: batch, warmup, repeats, cache")
    return ResourceConfig(
        metric=metric, form=form,
        weight=_number("resource.weight", raw.get("weight", 0.0)),
        alpha=_number("resource.alpha", raw.get("alpha", 0.2), positive=True),
        beta=_number("resource.beta", raw.get("beta", 0.6), positive=True),
        reference=_number("resource.reference", raw.get("reference"), positive=True, allow_none=True),
        budgets=budgets, network=None if network is None else dict(network),
        latency=LatencyOptions(batch=_count("resource.latency.batch", latency.get("batch", 1), 1),
                               warmup=_count("resource.latency.warmup", latency.get("warmup", DEFAULT_WARMUP), 0),
                               repeats=_count("resource.latency.repeats", latency.get("repeats", DEFAULT_REPEATS), 1),
                               cache=latency.get("cache", DEFAULT_CACHE)))
