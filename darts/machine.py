"""What machine a run or a benchmark ran on, in the words a reader needs to compare figures.

Timings of the same code differ several-fold between machines that are sold as the same (two
"2-core" cloud machines: another CPU generation, no AVX-512, one physical core shared by two
threads, another process on the cores, whose spinning OpenMP threads collapse torch's), so every
figure this project prints names these facts, the load average when it started among them.
"""
from __future__ import annotations

import os
import platform
import resource
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what the platform module says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask; a container's quota can be lower)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_average() -> float | None:
    """The 1-minute load average: above the core count, another process shares the cores."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine_description(device: torch.device | None = None) -> dict:
    """{cpu, cores, torch, threads, interop_threads, cpu_capability, omp_num_threads, omp_wait_policy,
    omp_probe_busy_cores, omp_proc_bind, load_1min, gpu}."""
    facts = {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        # The widest vector instructions torch's CPU kernels dispatch to (AVX512, AVX2, DEFAULT).
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        # PASSIVE: idle OpenMP threads sleep instead of spinning (README "Tests and benchmarks" measures both).
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        # Set when darts/startup.py chose PASSIVE because other processes kept this many cores busy.
        "omp_probe_busy_cores": os.environ.get("DARTS_OMP_PROBE_BUSY_CORES"),
        # A binding of OpenMP threads to cores the user set (close, spread, true): it changes timings.
        "omp_proc_bind": os.environ.get("OMP_PROC_BIND"),
        "load_1min": load_average(),
        "gpu": None,
    }
    if device is not None and device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts


def peak_memory_mb(device: torch.device) -> float:
    """This process's peak memory so far, in MiB: on a GPU the most the caching allocator held for
    tensors (``torch.cuda.max_memory_allocated``), on the CPU the peak resident set (torch included)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def machine_line(facts: dict) -> str:
    """One line: 'AMD EPYC, 2 cores, torch 2.14.1, 2 threads, AVX512, load 0.1'."""
    parts = [facts["cpu"], f"{facts['cores']} cores", f"torch {facts['torch']}", f"{facts['threads']} threads",
             facts["cpu_capability"]]
    if facts.get("gpu"):
        parts.insert(0, facts["gpu"])
    if facts.get("omp_wait_policy"):
        parts.append(f"OMP_WAIT_POLICY={facts['omp_wait_policy']}")
    if facts.get("omp_proc_bind"):
        parts.append(f"OMP_PROC_BIND={facts['omp_proc_bind']}")
    if facts.get("load_1min") is not None:
        parts.append(f"load {facts['load_1min']}")
    return ", ".join(parts)
