"""The OpenMP settings chosen at process start: sleep on shared cores, spin (and pin one thread per
core) on idle ones, and never override what the user set."""
import os

import torch

from darts.data.batches import LoaderBatches
from darts.machine import usable_cores
from darts.startup import (PINNED, busy_cores, choose_openmp_settings, cpu_times, pins_threads, unpin_this_process,
                           wait_policy_for)

STAT = """cpu  {a} 0 {b} {idle} 0 0 0 0 0 0
cpu0 {a0} 0 {b0} {idle0} {io0} 0 0 0 0 0
cpu1 {a1} 0 {b1} {idle1} 0 0 0 0 0 0
intr 1 2 3
"""


def stat(a0, b0, idle0, io0, a1, b1, idle1):
    return STAT.format(a=a0 + a1, b=b0 + b1, idle=idle0 + idle1, a0=a0, b0=b0, idle0=idle0, io0=io0,
                       a1=a1, b1=b1, idle1=idle1)


def test_busy_cores_count_user_and_system_time_of_the_cores_this_process_may_use():
    before = stat(100, 50, 1000, 10, 0, 0, 1000)
    # 100 jiffies pass on each core: core 0 fully busy (60 user + 40 system), core 1 idle.
    after = stat(160, 90, 1000, 10, 0, 0, 1100)
    assert busy_cores(cpu_times(before), cpu_times(after), 2) == 1.0
    assert busy_cores(cpu_times(before, {0}), cpu_times(after, {0}), 1) == 1.0
    assert busy_cores(cpu_times(before, {1}), cpu_times(after, {1}), 1) == 0.0
    # iowait is waiting, not work
    assert busy_cores(cpu_times(stat(0, 0, 0, 0, 0, 0, 0)), cpu_times(stat(0, 0, 50, 50, 0, 0, 100)), 2) == 0.0


def test_half_a_busy_core_of_other_processes_makes_threads_sleep():
    assert wait_policy_for(0.49) is None
    assert wait_policy_for(0.5) == "PASSIVE"


class Stat:
    """/proc/stat read twice: ``busy`` jiffies of other processes on each of two cores in between."""

    def __init__(self, busy: int):
        self.readings = iter([stat(0, 0, 0, 0, 0, 0, 0), stat(busy, 0, 100 - busy, 0, busy, 0, 100 - busy)])

    def is_file(self):
        return True

    def read_text(self):
        return next(self.readings)


def choose(environ, busy, argv=("train_search.py",)):
    return choose_openmp_settings(environ, Stat(busy), seconds=0, modules={}, cpus={0, 1}, argv=list(argv))


def test_the_probe_sets_passive_on_shared_cores_and_keeps_a_users_policy():
    environ = {"OMP_NUM_THREADS": "2"}
    assert choose(environ, busy=100) == {"OMP_WAIT_POLICY": "PASSIVE", "DARTS_OMP_PROBE_BUSY_CORES": "2.00"}
    assert environ["OMP_WAIT_POLICY"] == "PASSIVE" and "OMP_PROC_BIND" not in environ   # never pinned on busy cores
    kept = {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "2"}
    assert choose(kept, busy=0) == {} and kept == {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "2"}
    off = {"DARTS_OMP_PROBE": "0", "OMP_NUM_THREADS": "2"}
    assert choose(off, busy=100) == {} and "OMP_WAIT_POLICY" not in off
    # Once torch has loaded OpenMP nothing can change any more: the probe does nothing.
    late = {}
    assert choose_openmp_settings(late, Stat(100), seconds=0, modules={"torch": object()}) == {} and late == {}


def test_idle_cores_get_one_pinned_thread_each_only_with_one_thread_per_core():
    environ = {"OMP_NUM_THREADS": "2"}
    assert choose(environ, busy=10) == {**PINNED, "DARTS_UNPINNED_CPUS": "0,1"}
    assert environ["OMP_PROC_BIND"] == "close" and environ["OMP_PLACES"] == "cores" and "OMP_WAIT_POLICY" not in environ
    # Fewer threads than cores (the test workers' one each): every process would pin to core 0.
    for threads in ({"OMP_NUM_THREADS": "1"}, {}, {"OMP_NUM_THREADS": "4"}):
        assert choose(dict(threads), busy=0) == {}
    # A binding of the user's own is kept, whichever runtime's variable it is.
    for variable in ("OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY", "KMP_AFFINITY"):
        assert not pins_threads({"OMP_NUM_THREADS": "2", variable: "x"}, 2)
    assert not pins_threads({"OMP_NUM_THREADS": "1"}, 1)   # one core: nowhere to move to anyway
    # A multirun's launcher may start its jobs from the pinned main thread: they would share its core.
    for multirun in (["train_search.py", "-m", "seed=0,1"], ["train_search.py", "--multirun"],
                     ["train_final.py", "hydra.mode=MULTIRUN"]):
        assert choose({"OMP_NUM_THREADS": "2"}, busy=0, argv=multirun) == {}
    assert choose({"OMP_NUM_THREADS": "2"}, busy=0, argv=["train_search.py", "seed=1"]) != {}


class AffinityDataset(torch.utils.data.Dataset):
    """Each item: how many cores the process that loads it may run on."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return torch.tensor([len(os.sched_getaffinity(0))]), torch.tensor(0)


def test_a_pinned_run_records_its_cores_and_its_dataloader_workers_get_them_back(monkeypatch):
    cores = os.sched_getaffinity(0)
    monkeypatch.setenv("DARTS_UNPINNED_CPUS", ",".join(map(str, sorted(cores))))
    os.sched_setaffinity(0, {min(cores)})   # as OpenMP pins the main thread to the first core
    try:
        batches = LoaderBatches(AffinityDataset(), None, 2, 0, "s", "cpu", shuffle=False, num_workers=1)
        seen = {int(count) for inputs, _ in batches.epoch(0) for count in inputs.flatten()}
        assert os.sched_getaffinity(0) == {min(cores)}   # the main thread itself stays pinned
        assert usable_cores() == len(cores)   # what the run records and prints: its cores, not the thread's one
    finally:
        os.sched_setaffinity(0, cores)
    assert seen == {len(cores)}
    unpin_this_process({})   # a run that pinned nothing leaves the cores as they are
    assert os.sched_getaffinity(0) == cores
