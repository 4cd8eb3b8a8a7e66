"""Plain random sampling: the random-search baseline of the DARTS paper.

``num_candidates`` distinct genotypes are drawn uniformly from the configured
space, each is trained from scratch by the final-training engine (the network
builder, optimiser, schedule, augmentation, auxiliary head, drop path and
runtime of ``darts.train``) for the budget in ``strategy.train``, and each is
scored by top-1 accuracy on a held-out part of the *training* set: candidates
train on the search split's weight half and are evaluated on its alpha half.
The test set is never loaded. The best candidate (ties: the earlier one) is
the genotype.

No supernet is trained: the strategy declares ``trains = "candidates"`` and
the run engine's candidate task (:mod:`darts.engine.candidates`) trains what it
draws. What a random cell is comes from the space (``random_architecture`` and
``architecture_genotype``, the same draws random search with weight sharing
makes).

Every candidate is a pure function of (seed, index): the draws come from the
strategy's own generator (checkpointed), and the global RNG is reseeded from
the index before the candidate's network is built. A checkpoint is written
after each epoch of each candidate, so ``resume=true`` continues where the run
stopped and ends as an uninterrupted run does; resuming a finished run with a
larger ``strategy.num_candidates`` extends it.
"""
from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from darts.errors import DartsError
from darts.metrics import check_metric
from darts.spaces.base import SearchSpace, positive_int
from darts.strategies.base import STRATEGIES, Strategy

# Consecutive repeats of already drawn genotypes before the space counts as exhausted.
MAX_REDRAWS = 1000


@STRATEGIES.register("random_sampling")
class RandomSampling(Strategy):
    """num_candidates: genotypes drawn, trained and ranked by ``metric`` (accuracy | loss on the alpha split).
    train: one candidate's training, the keys of train_final.py's ``train`` block
    (``network: auto`` picks the space's final network)."""

    name = "random_sampling"
    trains = "candidates"

    def __init__(self, train, num_candidates: int = 10, metric: str = "accuracy"):
        self.num_candidates = positive_int("strategy.num_candidates", num_candidates)
        self.metric = check_metric(metric)
        if isinstance(train, DictConfig):
            # Resolved now, while the node still sees the global keys its defaults point at.
            train = OmegaConf.to_container(train, resolve=True)
        if not isinstance(train, dict):
            raise DartsError("strategy.train must be a mapping of final-training settings "
                             "(see conf/strategy/random_sampling.yaml)")
        self.train = OmegaConf.create(train)
        positive_int("strategy.train.epochs", self.train.get("epochs"))
        self.generator = torch.Generator()
        self.space: SearchSpace | None = None
        self.drawn: set[str] = set()

    def setup(self, space: SearchSpace, seed: int) -> None:
        """Fix the final network for the space's genotypes and seed the draws."""
        try:
            self.train.network = space.network_name(self.train.network)
        except DartsError as err:
            raise DartsError(f"strategy.train.network: {err}") from None
        if not space.random_op_choices():
            raise DartsError("strategy random_sampling needs an op other than 'none' in space.primitives")
        self.space = space
        self.generator.manual_seed(seed)

    def draw(self):
        """A uniformly random genotype of the space that has not been drawn before."""
        for _ in range(MAX_REDRAWS):
            genotype = self.space.architecture_genotype(self.space.random_architecture(self.generator))
            if str(genotype) not in self.drawn:
                self.drawn.add(str(genotype))
                return genotype
        raise DartsError(f"no new genotype in {MAX_REDRAWS} draws after {len(self.drawn)} distinct ones: the space "
                         f"(space.primitives) is too small for strategy.num_candidates={self.num_candidates}")
