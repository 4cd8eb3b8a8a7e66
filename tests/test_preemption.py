"""A stop signal mid-epoch: checkpoint at the current step, hand over to the displaced handler,
and a resumed run (resume=auto) that ends exactly like an uninterrupted one."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from darts.checkpoint import CHECKPOINT_NAME
from darts.errors import DartsError
from darts.preemption import PREEMPTED_EXIT_CODE, Preempted, StopSignals, finish_preempted
from darts.engine import run_final, run_search
from darts.engine.final import FinalTraining
from darts.strategies import STRATEGIES
from darts.strategies.darts import DARTS
from helpers import REPO_ROOT, compose_config, read_json, run_task


def search_config(*overrides):
    return compose_config("search", ["experiment=smoke", "deterministic=true", "search.epochs=2",
                                     *overrides])


def final_config(*overrides):
    return compose_config("final", ["experiment=smoke", "deterministic=true", "train.max_steps_per_epoch=5",
                                    *overrides])


def signalling(cls, method, call_number, signum=signal.SIGTERM):
    """A subclass of ``cls`` whose ``method`` sends ``signum`` to this process during its
    ``call_number``-th call (the signal arrives mid-step, as a scheduler's would)."""
    calls = []

    def wrapped(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == call_number:
            os.kill(os.getpid(), signum)
        return getattr(super(subclass, self), method)(*args, **kwargs)

    subclass = type(f"Signalling{cls.__name__}", (cls,), {method: wrapped})
    return subclass


def test_search_stopped_mid_epoch_resumes_exactly(tmp_path):
    full = run_search(search_config(), tmp_path / "full")
    # The smoke data gives 4 steps an epoch: the 6th step is the second epoch's second.
    # The subclass keeps DARTS's name, so the checkpoint is a darts run's and resumes as one.
    with STRATEGIES.temporarily("signalling_darts", signalling(DARTS, "step", 6)):
        with pytest.raises(Preempted, match="SIGTERM at epoch 1 step 2"):
            run_search(search_config("strategy.name=signalling_darts"), tmp_path / "cut")
    state = torch.load(tmp_path / "cut" / CHECKPOINT_NAME, weights_only=False)
    assert state["epoch"] == 0 and state["interrupted"]["epoch"] == 1 and state["interrupted"]["step"] == 2
    assert not (tmp_path / "cut" / "results.json").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL     # the run put the old handler back

    resumed = run_search(search_config("resume=auto"), tmp_path / "cut")
    assert resumed["alphas"] == full["alphas"]
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    assert [h["alpha_loss"] for h in resumed["history"]] == [h["alpha_loss"] for h in full["history"]]


def test_final_training_stopped_mid_epoch_resumes_exactly(tmp_path):
    full = run_final(final_config(), tmp_path / "full")
    with pytest.raises(Preempted, match="SIGUSR1 at epoch 0 step 3"):
        run_task(final_config(), tmp_path / "cut", signalling(FinalTraining, "train_step", 3, signal.SIGUSR1))
    resumed = run_final(final_config("resume=auto"), tmp_path / "cut")
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    assert resumed["test_top1"] == full["test_top1"] and resumed["test_loss"] == full["test_loss"]


def test_resume_auto_starts_afresh_without_a_checkpoint_and_bad_values_are_refused(tmp_path):
    fresh = run_search(search_config("resume=auto", "search.epochs=1"), tmp_path / "run")
    assert len(fresh["history"]) == 1
    with pytest.raises(DartsError, match="valid choices: true, false, auto"):
        run_search(search_config("resume=sometimes"), tmp_path / "other")


def test_the_displaced_handler_runs_after_the_checkpoint():
    received = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: received.append(signum))
    try:
        with StopSignals(["SIGUSR2"]) as signals:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert signals.requested == "SIGUSR2" and not received    # recorded, nothing acted on yet
        with pytest.raises(SystemExit) as exit_info:
            finish_preempted(Preempted("stopped", signals.chained_handlers()))
        assert exit_info.value.code == PREEMPTED_EXIT_CODE and received == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)
    with pytest.raises(DartsError, match="unknown signal 'SIGFOO'"):
        StopSignals(["SIGFOO"])


def test_cli_exits_143_with_one_line_and_leaves_a_resumable_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HYDRA_FULL_ERROR="0")
    job = subprocess.Popen([sys.executable, str(REPO_ROOT / "train_search.py"), "experiment=smoke",
                            "search.epochs=50", f"hydra.run.dir={run_dir}"], cwd=REPO_ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run_dir / CHECKPOINT_NAME).exists() and job.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == PREEMPTED_EXIT_CODE, stderr
    assert "stopped: SIGTERM at epoch" in stderr and "Traceback" not in stderr
    state = torch.load(run_dir / CHECKPOINT_NAME, weights_only=False)
    assert state["epoch"] >= 0 and not (run_dir / "results.json").exists()
    assert read_json(run_dir / "split.json")["seed"] == 0    # the run directory is intact for resume
