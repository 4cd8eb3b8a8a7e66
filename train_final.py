"""Final training of a genotype from scratch. Examples:

    python train_final.py experiment=darts_cifar10 genotype=DARTS_V2
    python train_final.py experiment=smoke genotype=outputs/search/RUN   # a search run directory
    python train_final.py experiment=smoke genotype=path/to/genotype.json
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
from darts.engine import run_final


@hydra.main(version_base="1.3", config_path="conf", config_name="final")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    # A sweeper (hydra/sweeper=optuna) reads the returned objective; see darts/tuning.py.
    return run_tuned(cfg, Path(HydraConfig.get().runtime.output_dir), run_final)


if __name__ == "__main__":
    main()
