"""Shared test utilities: compose Hydra configs in-process, run the CLI scripts, run a run with a test's task."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"


def compose_config(config_name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def run_script(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HYDRA_FULL_ERROR="0")
    return subprocess.run([sys.executable, str(REPO_ROOT / script), *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def assert_clean_failure(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """A non-zero exit with a readable message and no Python traceback."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    for fragment in fragments:
        assert fragment in output, output


def run_task(cfg, run_dir: Path, task_class) -> dict:
    """Run (or resume) a search or final training in ``run_dir`` as ``run_search``/``run_final`` do, with
    ``task_class``: the task they would pick or a test's subclass of it, which hooks into the task's
    steps (``Run``'s task factory is how a run is given its task)."""
    from darts.engine import SEARCH_TASKS, Run
    from darts.engine.final import FinalTraining
    from darts.strategies import build_strategy

    if issubclass(task_class, FinalTraining):
        return Run(cfg, run_dir, task_class).run()
    strategy = build_strategy(cfg.strategy)
    assert issubclass(task_class, SEARCH_TASKS.get(strategy.trains)), (task_class, strategy.trains)
    return Run(cfg, run_dir, lambda cfg, context: task_class(cfg, context, strategy)).run()
