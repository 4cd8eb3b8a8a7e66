"""Architecture search. Examples:

    python train_search.py experiment=darts_v1
    python train_search.py experiment=smoke hydra.run.dir=outputs/smoke
    python train_search.py experiment=smoke hydra.run.dir=outputs/smoke resume=true
"""
from pathlib import Path

from darts.startup import choose_omp_wait_policy

if __name__ == "__main__":
    # Before anything loads torch: OpenMP reads its wait policy once (spin on idle cores, sleep on shared ones).
    choose_omp_wait_policy()

import hydra  # noqa: E402  (after the policy is chosen)
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from darts.cli import exit_on_user_error
from darts.tuning import run_tuned
from darts.engine import run_search


@hydra.main(version_base="1.3", config_path="conf", config_name="search")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    # A sweeper (hydra/sweeper=optuna) reads the returned objective; see darts/tuning.py.
    return run_tuned(cfg, Path(HydraConfig.get().runtime.output_dir), run_search)


if __name__ == "__main__":
    main()
