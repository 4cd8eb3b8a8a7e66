"""Plain random sampling: the random-search baseline of the DARTS paper.

``num_candidates`` distinct genotypes are drawn uniformly from the configured
space, each is trained from scratch by the final-training engine (the network
builder, optimiser, schedule, augmentation, auxiliary head, drop path and
runtime of ``darts.train``) for the budget in ``strategy.train``, and each is
scored by top-1 accuracy on a held-out part of the *training* set: candidates
train on the search split's weight half and are evaluated on its alpha half.
The test set is never loaded. The best candidate (ties: the earlier one) is
the genotype.

No supernet is trained, so the supernet search loop does not apply: the
strategy names its own run class, :class:`RandomSamplingRun`. What a random
cell is comes from the space's supernet (``random_architecture`` and
``architecture_genotype``, the same draws random search with weight sharing
makes): it is built once on the CPU for that and never trained.

Every candidate is a pure function of (seed, index): the draws come from the
strategy's own generator (checkpointed), and the global RNG is reseeded from
the index before the candidate's network is built. A checkpoint is written
after each candidate, so ``resume=true`` continues with the next one and ends
as an uninterrupted run does; resuming a finished run with a larger
``strategy.num_candidates`` extends it.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from darts import viz
from darts.checkpoint import load_checkpoint, load_state_dicts, save_atomic, seed_everything
from darts.data import build_search_data, stream_seed
from darts.engine import evaluate, in_layout, library_versions, start_run
from darts.errors import DartsError, choices_message
from darts.genotypes import genotype_from_dict
from darts.model import count_parameters
from darts.runtime import build_runtime
from darts.spaces import build_supernet
from darts.strategies.base import GeneratorState, Strategy, build_strategy, register_strategy
from darts.tracking import MetricAccumulator, RunLogger, write_json
from darts.train import NETWORKS, build_network, build_optimizer, build_schedule, train_step

# The final networks that can train each space's genotypes; the first is what network=auto picks.
NETWORKS_OF_SPACE = {"darts": ("cifar", "imagenet"), "nb201": ("nb201",)}
# Consecutive repeats of already drawn genotypes before the space counts as exhausted.
MAX_REDRAWS = 1000


def _positive_int(option: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DartsError(f"strategy.{option} must be a positive integer, got {value!r}")
    return value


@register_strategy("random_sampling")
class RandomSampling(Strategy):
    """num_candidates: genotypes drawn, trained and ranked.
    train: one candidate's training, the keys of train_final.py's ``train`` block
    (``network: auto`` picks the space's final network)."""

    def __init__(self, train, num_candidates: int = 10):
        self.num_candidates = _positive_int("num_candidates", num_candidates)
        if isinstance(train, DictConfig):
            # Resolved now, while the node still sees the global keys its defaults point at.
            train = OmegaConf.to_container(train, resolve=True)
        if not isinstance(train, dict):
            raise DartsError("strategy.train must be a mapping of final-training settings "
                             "(see conf/strategy/random_sampling.yaml)")
        self.train = OmegaConf.create(train)
        _positive_int("train.epochs", self.train.get("epochs"))
        network = self.train.get("network")
        if network != "auto" and network not in NETWORKS:
            raise DartsError(choices_message("strategy.train.network", network, ["auto", *NETWORKS]))
        self.generator = torch.Generator()
        self.space_supernet = None
        self.drawn: set[str] = set()

    @classmethod
    def run_class(cls) -> type:
        return RandomSamplingRun

    def setup(self, space_cfg, num_classes: int, in_channels: int, seed: int) -> None:
        """Build the space's supernet (CPU, untrained) to draw from, fix the final network, seed the draws."""
        if space_cfg.name not in NETWORKS_OF_SPACE:
            raise DartsError(choices_message("search space for strategy random_sampling", space_cfg.name,
                                             NETWORKS_OF_SPACE))
        networks = NETWORKS_OF_SPACE[space_cfg.name]
        if self.train.network == "auto":
            self.train.network = networks[0]
        if self.train.network not in networks:
            raise DartsError(f"strategy.train.network {self.train.network!r} cannot train genotypes of the "
                             f"{space_cfg.name} space; valid choices: auto, {', '.join(networks)}")
        self.space_supernet = build_supernet(space_cfg, num_classes, in_channels)
        if not self.space_supernet.random_op_choices():
            raise DartsError("strategy random_sampling needs an op other than 'none' in space.primitives")
        self.generator.manual_seed(stream_seed(seed, "random_sampling/draws", 0))

    def draw(self):
        """A uniformly random genotype of the space that has not been drawn before."""
        supernet = self.space_supernet
        for _ in range(MAX_REDRAWS):
            genotype = supernet.architecture_genotype(supernet.random_architecture(self.generator))
            if str(genotype) not in self.drawn:
                self.drawn.add(str(genotype))
                return genotype
        raise DartsError(f"no new genotype in {MAX_REDRAWS} draws after {len(self.drawn)} distinct ones: the space "
                         f"(space.primitives) is too small for strategy.num_candidates={self.num_candidates}")

    def build_network(self, genotype, num_classes: int, in_channels: int) -> nn.Module:
        try:
            return build_network(self.train, genotype, num_classes, in_channels)
        except DartsError as err:
            raise DartsError(f"strategy.train: {err}") from None


class RandomSamplingRun:
    """Draws, trains and ranks the candidates; writes the run directory as a supernet search does."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise DartsError("strategy random_sampling trains its candidates in one process; "
                             "launch it without torchrun")
        self.cfg = cfg
        context = start_run(cfg, run_dir)
        self.run_dir, self.checkpoint_path, self.device = context.run_dir, context.checkpoint_path, context.device
        seed_everything(cfg.seed, cfg.deterministic)
        self.strategy = build_strategy(cfg.strategy)
        tc = self.train_cfg = self.strategy.train
        self.data = build_search_data(cfg.dataset, tc.batch_size, cfg.search.train_portion, cfg.seed, self.device,
                                      tc.get("eval_batch_size"), cutout=tc.cutout)
        info = self.data.info
        self.strategy.setup(cfg.space, info.num_classes, info.in_channels, cfg.seed)
        # Built up front so that bad fast.* settings fail before any training; each candidate gets its own.
        self.runtime = build_runtime(cfg.fast, self.device, cfg.deterministic)
        max_steps = tc.get("max_steps_per_epoch")
        self.steps_per_epoch = len(self.data.weight_batches) if not max_steps else min(
            max_steps, len(self.data.weight_batches))
        if self.steps_per_epoch < 1:
            raise DartsError(f"the weight split ({len(self.data.weight_indices)} images) has no full batch of "
                             f"{tc.batch_size}; lower strategy.train.batch_size")
        self.candidates: list[dict] = []
        self.wall_time_s = 0.0
        if context.resume:
            self.restore()
        self.logger = RunLogger(self.run_dir)

    # -- checkpoints ---------------------------------------------------------------
    def split_key(self) -> dict:
        """What the weight/alpha split is a function of: a resumed run must rank on the same one."""
        return {"seed": self.cfg.seed, "portion": self.cfg.search.train_portion,
                "examples": len(self.data.weight_indices) + len(self.data.alpha_indices)}

    def state(self) -> dict:
        # load_checkpoint knows a checkpoint by its "epoch" entry; here it counts finished candidates.
        return {"epoch": len(self.candidates) - 1, "strategy_name": self.strategy.name, "candidates": self.candidates,
                "sampler": GeneratorState(self.strategy.generator).state_dict(), "split": self.split_key(),
                "wall_time_s": self.wall_time_s}

    def restore(self) -> None:
        state = load_checkpoint(self.checkpoint_path, map_location="cpu")
        source = f"checkpoint {self.checkpoint_path}"
        if state.get("strategy_name") != self.strategy.name:
            raise DartsError(f"{source} was written by strategy {state.get('strategy_name')!r}, "
                             f"not {self.strategy.name!r}")
        if state.get("split") != self.split_key():
            raise DartsError(f"this configuration splits the data differently from the run in {self.run_dir}: "
                             "resume with the run's own seed, dataset and search.train_portion")
        load_state_dicts({"sampler": GeneratorState(self.strategy.generator)}, state, source)
        self.candidates = list(state["candidates"])
        self.strategy.drawn = {record["genotype_string"] for record in self.candidates}
        self.wall_time_s = state["wall_time_s"]

    # -- the loop --------------------------------------------------------------------
    def run(self) -> dict:
        OmegaConf.save(self.cfg, self.run_dir / "config_resolved.yaml", resolve=True)
        if not self.candidates:
            write_json(self.run_dir / "split.json", {
                "seed": self.cfg.seed, "portion": self.cfg.search.train_portion,
                "weight_indices": self.data.weight_indices, "alpha_indices": self.data.alpha_indices})
        else:
            self.logger.console(f"resuming after candidate {len(self.candidates)} of "
                                f"{self.strategy.num_candidates} ({self.checkpoint_path})")
        for index in range(len(self.candidates), self.strategy.num_candidates):
            start = time.time()
            record = self.train_candidate(index, self.strategy.draw())
            self.wall_time_s += time.time() - start
            record["wall_time_s"] = self.wall_time_s
            self.end_of_candidate(record)
        return self.finish()

    def train_candidate(self, index: int, genotype) -> dict:
        """Train ``genotype`` from scratch on the weight half; evaluate it on the alpha half."""
        tc, info = self.train_cfg, self.data.info
        torch.manual_seed(stream_seed(self.cfg.seed, "random_sampling/candidate", index))
        # A fresh runtime: its gradient scaler's state must not carry over from the previous candidate.
        runtime = build_runtime(self.cfg.fast, self.device, self.cfg.deterministic)
        model = self.strategy.build_network(genotype, info.num_classes, info.in_channels)
        forward = runtime.prepare(model)
        optimizer = build_optimizer(model.parameters(), tc.optimizer)
        scheduler = build_schedule(optimizer, tc.schedule, tc.epochs)
        criterion = nn.CrossEntropyLoss(label_smoothing=tc.label_smoothing)
        params = list(model.parameters())
        start = time.time()
        for epoch in range(tc.epochs):
            model.train()
            model.drop_path_prob = tc.drop_path_prob * epoch / tc.epochs
            batches = in_layout(self.data.weight_batches.epoch(epoch), runtime.memory_format)
            totals = MetricAccumulator()
            for _ in range(self.steps_per_epoch):
                inputs, targets = next(batches)
                totals.add(train_step(forward, inputs, targets, optimizer, criterion, runtime, params,
                                      grad_clip=tc.optimizer.get("grad_clip"), auxiliary_weight=tc.auxiliary_weight))
            scheduler.step()
        last_epoch = totals.read()
        result = evaluate(model, self.data.alpha_eval_batches, criterion, max_batches=tc.get("eval_max_batches"))
        return {"candidate": index, "genotype": genotype.to_dict(), "genotype_string": str(genotype),
                "val_acc": result["top1"], "val_loss": result["loss"],
                "train_loss": last_epoch["loss"], "train_acc": last_epoch["acc"],
                "params_m": count_parameters(model, exclude_auxiliary=True) / 1e6,
                "train_time_s": time.time() - start}

    def best(self) -> dict:
        """The candidate with the highest alpha-split accuracy; max keeps the first of equals."""
        return max(self.candidates, key=lambda record: record["val_acc"])

    def end_of_candidate(self, record: dict) -> None:
        self.candidates.append(record)
        index, best = record["candidate"], self.best()
        self.logger.scalars({key: record[key] for key in ("val_acc", "val_loss", "train_loss", "train_acc",
                                                           "params_m")}, index, prefix="candidate/")
        self.logger.scalars({"val_acc": best["val_acc"]}, index, prefix="best/")
        self.logger.text("genotype", f"`{record['genotype_string']}`", index)
        (self.run_dir / "genotypes").mkdir(exist_ok=True)
        write_json(self.run_dir / "genotypes" / f"candidate_{index:03d}.json",
                   {"genotype": record["genotype"], "string": record["genotype_string"], "val_acc": record["val_acc"]})
        save_atomic(self.state(), self.checkpoint_path)
        self.logger.flush()
        self.logger.progress("candidate", index + 1, self.strategy.num_candidates,
                             {"val_acc": record["val_acc"], "best_val_acc": best["val_acc"]})
        self.logger.console(f"  genotype {record['genotype_string']}")

    def finish(self) -> dict:
        best = self.best()
        genotype = genotype_from_dict(best["genotype"])
        for cell, path in viz.draw_genotype(genotype, self.run_dir / "cells").items():
            self.logger.image(f"cells/{cell}", viz.load_png(path), best["candidate"])
        results = {
            "kind": "search",
            "strategy": self.strategy.name,
            "genotype": genotype.to_dict(),
            "genotype_string": str(genotype),
            "best_candidate": best["candidate"],
            # The alpha split is the held-out part of the training set the candidates are ranked on.
            "alpha_eval_acc": best["val_acc"], "alpha_eval_loss": best["val_loss"],
            "train_loss": best["train_loss"], "train_acc": best["train_acc"],
            "params_m": best["params_m"],
            "num_candidates": len(self.candidates),
            "candidates": self.candidates,
            "candidate_training": OmegaConf.to_container(self.train_cfg),
            "steps_per_epoch": self.steps_per_epoch,
            "wall_time_s": self.wall_time_s,
            "seed": self.cfg.seed,
            "device": str(self.device),
            "runtime": self.runtime.describe(),
            "versions": library_versions(),
        }
        write_json(self.run_dir / "genotype.json", {"genotype": genotype.to_dict(), "string": str(genotype)})
        write_json(self.run_dir / "results.json", results)
        self.logger.close()
        return results

