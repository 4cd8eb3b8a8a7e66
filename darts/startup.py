"""What the entry scripts decide before torch loads: how OpenMP threads wait, and whether they are pinned.

torch's CPU kernels run on OpenMP threads that, by default, spin for a while when they wait. On idle
cores that is the fastest setting (31 % faster than sleeping on the demo's final training, README
"Tests and benchmarks"); on cores another busy process shares, spinning threads and working threads
take turns and a step runs 2-10x slower, where ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once) keeps it
within 10-30 % of the idle figure. OpenMP reads the policy once, when torch loads it, so the choice is
made here, at process start, from what the cores are doing now: the busy share of every core over a
short window of /proc/stat (not the load average, which lags a minute and would still count the
demo's search when its final training starts).

On idle cores, when the run has one OpenMP thread per core it may use (``OMP_NUM_THREADS`` equal to
that count, as ``make demo`` sets it), the threads are also pinned, one per core
(``OMP_PROC_BIND=close``, ``OMP_PLACES=cores``): a thread the kernel moves between cores, or stacks
two to a core for a while, holds up every parallel region, and pinned the demo's final training step
ran 12-21 % faster on a 2-core machine (README "Tests and benchmarks"). Never with fewer threads than
cores (every such process would pin its threads to the same first cores), nor on shared cores (a
pinned thread cannot move off a busy one), nor in a multirun (a launcher's job processes would
inherit the main thread's one core). DataLoader workers, started from the pinned main thread, get
the cores back from :func:`unpin_this_process`.

A policy or binding the user set is always kept; ``DARTS_OMP_PROBE=0`` turns the probe off. Only the
standard library is imported here: torch must not be loaded yet.
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
PINNED = {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}
# A binding already chosen: OpenMP's own variables, GNU libgomp's and Intel's runtime's.
AFFINITY_VARIABLES = ("OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY", "KMP_AFFINITY")


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


def is_multirun(argv: list[str]) -> bool:
    """A Hydra multirun (``-m``, ``--multirun``, ``hydra.mode=MULTIRUN``): its launcher may start the
    jobs as processes of the main thread, which would inherit its one pinned core."""
    return any(arg in ("-m", "--multirun") or arg.replace(" ", "") == "hydra.mode=MULTIRUN" for arg in argv[1:])


def pins_threads(environ, cores: int, argv: list[str] = ()) -> bool:
    """Whether idle cores get one pinned thread each: a single run (not :func:`is_multirun`) with
    ``OMP_NUM_THREADS`` equal to ``cores`` (> 1), and no binding of the user's own (OpenMP's or the
    Intel and GNU runtimes' affinity variables)."""
    threads = environ.get("OMP_NUM_THREADS", "").strip()
    return (cores > 1 and threads.isdigit() and int(threads) == cores and not is_multirun(list(argv))
            and not any(environ.get(name) for name in AFFINITY_VARIABLES))


def choose_openmp_settings(environ=os.environ, stat_path: Path = Path("/proc/stat"),
                           seconds: float = PROBE_SECONDS, modules=sys.modules,
                           cpus: set[int] | None = None, argv: list[str] | None = None) -> dict[str, str]:
    """Decide, from what the cores this process may run on (``cpus``, default its affinity mask) do
    right now, how OpenMP threads wait and whether they are pinned, and set that in ``environ``:

    * shared cores: ``OMP_WAIT_POLICY=PASSIVE``, and the busy cores seen in ``DARTS_OMP_PROBE_BUSY_CORES``;
    * idle cores with one thread per core (:func:`pins_threads`): ``OMP_PROC_BIND=close``,
      ``OMP_PLACES=cores``, and the cores in ``DARTS_UNPINNED_CPUS`` for :func:`unpin_this_process`.

    Returns what it set; nothing when the probe is off (``DARTS_OMP_PROBE=0``), torch is already
    loaded (in ``modules``), there is no /proc/stat, or the user set a wait policy (then it pins nothing
    either: the user has taken charge of OpenMP)."""
    if environ.get("OMP_WAIT_POLICY") or environ.get("DARTS_OMP_PROBE") == "0" or "torch" in modules:
        return {}
    if not stat_path.is_file():
        return {}
    if cpus is None:
        cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    before = cpu_times(stat_path.read_text(), cpus)
    time.sleep(seconds)
    after = cpu_times(stat_path.read_text(), cpus)
    busy = busy_cores(before, after, len(cpus))
    policy = wait_policy_for(busy)
    if policy is not None:
        chosen = {"OMP_WAIT_POLICY": policy, "DARTS_OMP_PROBE_BUSY_CORES": f"{busy:.2f}"}
    elif pins_threads(environ, len(cpus), sys.argv if argv is None else argv):
        chosen = {**PINNED, "DARTS_UNPINNED_CPUS": ",".join(str(cpu) for cpu in sorted(cpus))}
    else:
        chosen = {}
    environ.update(chosen)
    return chosen


def unpin_this_process(environ=os.environ) -> None:
    """Give a process started from a pinned main thread (a DataLoader worker: it inherits that
    thread's one core) all the cores the run may use again; nothing where the run pinned nothing."""
    cpus = environ.get("DARTS_UNPINNED_CPUS")
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(cpu) for cpu in cpus.split(",")})
