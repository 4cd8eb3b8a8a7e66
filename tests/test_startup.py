"""The OpenMP wait policy chosen at process start: sleep on shared cores, spin on idle ones, and
never override a policy the user set."""
from darts.startup import busy_cores, choose_omp_wait_policy, cpu_times, wait_policy_for

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


def test_the_probe_sets_passive_on_shared_cores_and_keeps_a_users_policy(tmp_path):
    readings = iter([stat(0, 0, 0, 0, 0, 0, 0), stat(100, 0, 0, 0, 100, 0, 0)])

    class Stat:   # /proc/stat read twice: both cores busy in between
        def is_file(self):
            return True

        def read_text(self):
            return next(readings)

    environ = {}
    assert choose_omp_wait_policy(environ, Stat(), seconds=0, modules={}) == "PASSIVE"
    assert environ["OMP_WAIT_POLICY"] == "PASSIVE" and float(environ["DARTS_OMP_PROBE_BUSY_CORES"]) > 0.5
    kept = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert choose_omp_wait_policy(kept, Stat(), seconds=0, modules={}) is None and kept == {"OMP_WAIT_POLICY": "ACTIVE"}
    off = {"DARTS_OMP_PROBE": "0"}
    assert choose_omp_wait_policy(off, Stat(), seconds=0, modules={}) is None and "OMP_WAIT_POLICY" not in off
    # Once torch has loaded OpenMP the policy can no longer change: the probe does nothing.
    late = {}
    assert choose_omp_wait_policy(late, Stat(), seconds=0, modules={"torch": object()}) is None and late == {}
