"""Cluster launchers (hydra-submitit-launcher) and the published-protocol sweep presets."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from darts.report import build_report
from helpers import CONF_DIR, REPO_ROOT, read_json, run_script

TINY = ["dataset.num_train=64", "search.epochs=1"]


def compose_with_hydra(config_name: str, overrides: list[str]):
    """Compose with the ``hydra`` node kept, as a launch would see it."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=True)


def swept_values(params) -> dict[str, list[str]]:
    """Expand ``hydra.sweeper.params`` the way the basic sweeper does, one list of values per key."""
    parser = OverridesParser.create()
    parsed = parser.parse_overrides([f"{key}={value}" for key, value in params.items()])
    return {o.get_key_element(): list(o.sweep_string_iterator()) for o in parsed}


@pytest.mark.parametrize("config_name", ["search", "final"])
def test_slurm_launcher_composes_with_cluster_overrides(config_name):
    cfg = compose_with_hydra(config_name, [
        "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4",
        "hydra.launcher.timeout_min=720", "+hydra.launcher.additional_parameters.mail-type=END"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 4, 720)
    assert launcher.additional_parameters == {"mail-type": "END"}
    # slurm.yaml's settings win over the plugin's defaults (no requeue after a timeout).
    assert launcher.max_num_timeout >= 1
    # Submitit's job folder follows our sweep directory, so requeue state lives beside the jobs.
    assert cfg.hydra.sweep.dir.startswith(f"multirun/{config_name}/")
    assert launcher.submitit_folder == f"{cfg.hydra.sweep.dir}/.submitit/%j"


def test_local_launcher_composes():
    launcher = compose_with_hydra("search", ["hydra/launcher=local"]).hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.LocalLauncher")
    # A GPU for every job (0 would hide it), and a limit no search reaches.
    assert launcher.gpus_per_node >= 1 and launcher.timeout_min >= 24 * 60


@pytest.mark.parametrize("config_name, presets, field, value", [
    ("search", "[darts_v2,protocol_search]", "strategy.order", 2),
    ("search", "[pcdarts,protocol_search]", "strategy.name", "pcdarts"),
    ("final", "[darts_cifar10,protocol_final]", "train.epochs", 600),
])
def test_protocol_presets_sweep_four_seeds_on_top_of_a_method(config_name, presets, field, value):
    cfg = compose_with_hydra(config_name, [f"experiment={presets}"])
    assert swept_values(cfg.hydra.sweeper.params) == {"seed": ["0", "1", "2", "3"]}
    # The method preset still applies underneath the protocol.
    node = cfg
    for key in field.split("."):
        node = node[key]
    assert node == value


def test_local_launcher_runs_jobs_in_parallel_processes_and_the_report_reads_them(tmp_path):
    sweep = tmp_path / "sweep"
    # seed=0,1 on the command line replaces the preset's four seeds: two jobs, not four.
    result = run_script("train_search.py", "-m", "hydra/launcher=local", "experiment=[smoke,protocol_search]",
                        "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in sweep.iterdir() if p.name.isdigit()) == ["0", "1"]
    for job, seed in (("0", 0), ("1", 1)):
        assert read_json(sweep / job / "results.json")["seed"] == seed
    # Each job ran in its own submitit process, not inside the launching one.
    job_logs = sorted(sweep.glob(".submitit/*/*_0_log.out"))
    assert len(job_logs) == 2
    assert all("Job completed successfully" in log.read_text() for log in job_logs)

    report = subprocess.run([sys.executable, "-m", "darts.report", str(sweep)], cwd=REPO_ROOT,
                            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    rows, failed = build_report(sweep)
    assert failed == [] and [(r["jobs"], r["finished"]) for r in rows] == [(2, 2)]
    assert "seed 0: Genotype(" in rows[0]["genotypes"] and "seed 1: Genotype(" in rows[0]["genotypes"]
    assert "## Failed jobs (0)" in (sweep / "report.md").read_text()


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _is_ours(controller: int, sweep: Path) -> bool:
    """The pid is still this sweep's submitit controller (not a reused pid)."""
    return str(sweep).encode() in _cmdline(controller)


def _wait_for(predicate, timeout_s: float, what: str):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the job process through /proc")
def test_preempted_local_job_is_requeued_and_resumes_in_its_own_directory(tmp_path):
    sweep = tmp_path / "sweep"
    epochs = 4
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HYDRA_FULL_ERROR="0")
    controller = None
    launch = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "train_search.py"), "-m", "hydra/launcher=local", "experiment=smoke",
         "dataset.num_train=64", f"search.epochs={epochs}", "resume=auto", f"hydra.sweep.dir={sweep}"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: (sweep / "0" / "checkpoint.pt").exists(), 120, "the first epoch's checkpoint")
        controller = _wait_for(lambda: [int(p.name) for p in (sweep / ".submitit").iterdir() if p.name.isdigit()],
                               10, "submitit's job folder")[0]
        task = _wait_for(lambda: _children(controller), 10, "the job process")[0]
        assert _is_ours(controller, sweep) and b"submitit.core._submit" in _cmdline(task)
        # Submitit's preemption signal: SLURM sends it signal_delay_s before the time limit
        # (sbatch --signal=USR2@120), submitit's local controller likewise.
        os.kill(task, signal.SIGUSR2)
        output, _ = launch.communicate(timeout=240)
    finally:
        if launch.poll() is None:
            # A failed wait must not leave this sweep's processes running after the test.
            if controller is not None and _is_ours(controller, sweep):
                for pid in _children(controller) + [controller]:
                    os.kill(pid, signal.SIGKILL)
            launch.kill()
            launch.wait()
    assert launch.returncode == 0, output
    job_out = "".join(p.read_text() for p in sorted((sweep / ".submitit" / str(controller)).glob("*_0_log.*")))
    # Our handler saved a checkpoint at the current step first, then handed the signal to submitit.
    assert re.search(r"^stopped: SIGUSR2", job_out, re.M), job_out
    assert "Requeued job" in job_out
    resumed = re.search(r"resuming from epoch (\d+)", job_out)
    assert resumed and 1 <= int(resumed.group(1)) < epochs, job_out
    results = read_json(sweep / "0" / "results.json")
    assert results["epochs"] == epochs and len(results["history"]) == epochs
    assert [p.name for p in sweep.iterdir() if p.name.isdigit()] == ["0"]
