"""What the entry scripts decide before torch loads: the OpenMP wait policy.

torch's CPU kernels run on OpenMP threads that, by default, spin for a while when they wait. On idle
cores that is the fastest setting (31 % faster than sleeping on the demo's final training, README
"Tests and benchmarks"); on cores another busy process shares, spinning threads and working threads
take turns and a step runs 2-10x slower, where ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once) keeps it
within 10-30 % of the idle figure. OpenMP reads the policy once, when torch loads it, so the choice is
made here, at process start, from what the cores are doing now: the busy share of every core over a
short window of /proc/stat (not the load average, which lags a minute and would still count the
demo's search when its final training starts).

A policy the user set (``OMP_WAIT_POLICY`` in the environment) is always kept; ``DARTS_OMP_PROBE=0``
turns the probe off. Only the standard library is imported here: torch must not be loaded yet.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

# Busy cores (of other processes) from which threads should sleep instead of spinning: half a core
# already takes turns with one of ours.
SHARED_CORES = 0.5
PROBE_SECONDS = 0.25


def cpu_times(stat_text: str, cpus: set[int] | None = None) -> tuple[int, int]:
    """(busy, total) jiffies summed over the per-core lines of /proc/stat (``cpuN``) of the cores in
    ``cpus`` (None: every core); idle and iowait are not busy, guest time is already inside user."""
    busy = total = 0
    for line in stat_text.splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or not name[3:].isdigit() or (cpus is not None and int(name[3:]) not in cpus):
            continue
        fields = [int(value) for value in values[:8]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        busy += sum(fields) - idle
        total += sum(fields)
    return busy, total


def busy_cores(before: tuple[int, int], after: tuple[int, int], cores: int) -> float:
    """How many of ``cores`` cores were busy between two :func:`cpu_times` readings of them."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return 0.0 if total <= 0 else cores * busy / total


def wait_policy_for(busy: float) -> str | None:
    """PASSIVE when other processes keep ``busy`` >= :data:`SHARED_CORES` cores busy; else None (OpenMP's default)."""
    return "PASSIVE" if busy >= SHARED_CORES else None


def choose_omp_wait_policy(environ=os.environ, stat_path: Path = Path("/proc/stat"),
                           seconds: float = PROBE_SECONDS, modules=sys.modules) -> str | None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` in ``environ`` when the cores this process may run on are
    shared right now (and record the busy cores seen in ``DARTS_OMP_PROBE_BUSY_CORES``); returns the
    policy set, or None when it left the environment as it was (a user's policy, probe off, torch
    already loaded, i.e. in ``modules``; no /proc/stat; idle cores)."""
    if environ.get("OMP_WAIT_POLICY") or environ.get("DARTS_OMP_PROBE") == "0" or "torch" in modules:
        return None
    if not stat_path.is_file():
        return None
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    before = cpu_times(stat_path.read_text(), cpus)
    time.sleep(seconds)
    after = cpu_times(stat_path.read_text(), cpus)
    busy = busy_cores(before, after, len(cpus) if cpus else (os.cpu_count() or 1))
    policy = wait_policy_for(busy)
    if policy is not None:
        environ["OMP_WAIT_POLICY"] = policy
        environ["DARTS_OMP_PROBE_BUSY_CORES"] = f"{busy:.2f}"
    return policy
