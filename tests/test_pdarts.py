"""P-DARTS (darts/strategies/pdarts.py; chenxin061/pdarts): the stage transitions keep the ops their
get_min_k / get_min_k_no_zero keep, the skip-dropout rate follows their formula and reaches the
supernet through its weights (the fused mixed op drops what the plain one drops), a stage that carries
`none` starts from a fresh supernet of its own depth, and a smoke search runs every stage and resumes
exactly mid-stage."""
import copy
import math
import os
import signal

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from darts.engine import run_search
from darts.engine.stages import StagePlan
from darts.errors import DartsError
from darts.fastpath import FastPathOptions, apply_fast_path
from darts.preemption import Preempted
from darts.spaces import EdgeWeights, build_space
from darts.spaces.mixed import MixedOp
from darts.stages import kept_columns, parse_stages, pruned_edge_ops
from darts.strategies import STRATEGIES, build_strategy
from darts.strategies.arch import ArchParameters
from darts.strategies.drnas import DrNAS
from darts.strategies.pcdarts import PartialChannelMixedOp
from darts.strategies.pdarts import PDARTS, skip_dropout_rate
from helpers import compose_config, read_json

PRIMITIVES = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
              "dil_conv_3x3", "dil_conv_5x5"]


# -- the pruning rule ------------------------------------------------------------------------------------
def test_drop_lowest_drops_the_lower_column_on_a_tie_where_top_keeps_it():
    weights = torch.softmax(torch.tensor([[0.5, -0.2, 0.1, 0.3, 0.0, 0.0, 0.4, -0.5]]), -1)
    ops = [PRIMITIVES]
    # get_min_k: argmin finds column 7 (-0.5), then 1 (-0.2), then 4 of the tied 4 and 5 (0.0).
    assert kept_columns(weights, 5, "drop_lowest") == [[0, 2, 3, 5, 6]]
    # DrNAS's topk keeps the lower of the tied columns.
    assert kept_columns(weights, 5, "top") == [[0, 2, 3, 4, 6]]
    # none first: none (column 0, the largest weight) goes, then 7 and 1.
    assert kept_columns(weights, 5, "drop_lowest", ops, none_first=True) == [[2, 3, 4, 5, 6]]
    with pytest.raises(DartsError, match="must drop at least one op"):
        kept_columns(weights, 8, "drop_lowest", ops, none_first=True)
    with pytest.raises(DartsError, match="unknown pruning rule 'lowest'; valid choices: top, drop_lowest"):
        kept_columns(weights, 5, "lowest")


class HandWeights(PDARTS):
    """P-DARTS whose pruning ranks hand-written alphas, one (14, ops) matrix per boundary."""

    def __init__(self, alphas, **options):
        super().__init__(**options)
        self.hand = list(alphas)

    def pruning_weights(self):
        rows = self.hand.pop(0)
        return {"normal": torch.softmax(rows, -1), "reduce": torch.softmax(rows.flip(0), -1)}


def alternating(even, odd):
    """(14, ops): ``even`` on the even edges, ``odd`` on the odd ones."""
    return torch.tensor([even if edge % 2 == 0 else odd for edge in range(14)], dtype=torch.float64)


def test_stage_transitions_keep_the_ops_their_code_keeps():
    """8 -> 5 -> 3 by get_min_k, then 3 -> 1 with `none` first (get_min_k_no_zero), hand-worked per edge."""
    stages = [{"epochs": 1}, {"epochs": 1, "keep_ops": 5}, {"epochs": 1, "keep_ops": 3},
              {"epochs": 1, "keep_ops": 1, "drop_none_first": True}]
    strategy = HandWeights([
        # even edges: drop 7 (-0.5), 1 (-0.2), 4 (the lower of the tied 4 and 5): none, avg, skip, sep5, dil3.
        # odd edges: drop 0 (none, -1.0), 6 (-0.3), 7 (0.0): max, avg, skip, sep3, sep5.
        alternating([0.5, -0.2, 0.1, 0.3, 0.0, 0.0, 0.4, -0.5], [-1.0, 0.2, 0.2, 0.2, 0.1, 0.3, -0.3, 0.0]),
        # even: drop dil3 (-0.4), avg (-0.1): none, skip, sep5 (none stays: get_min_k does not single it out).
        # odd: drop sep5 (-0.2), then max, the lowest column of the tied max, avg, skip (0.1): avg, skip, sep3.
        alternating([0.9, -0.1, 0.2, 0.3, -0.4], [0.1, 0.1, 0.1, 0.4, -0.2]),
        # even: none goes first though it is the largest, then skip (0.2 < 0.3): sep5.
        # odd, no none among the survivors: drop sep3 (-0.3), then avg of the tied avg, skip: skip.
        alternating([0.9, 0.2, 0.3], [0.1, 0.1, -0.3]),
    ], stages=stages)
    space_cfg = compose_config("search", ["experiment=smoke"]).space
    plan = StagePlan(strategy, 4, space_cfg)
    space = plan.enter(0, None)
    expected = [{0: ("none", "avg_pool_3x3", "skip_connect", "sep_conv_5x5", "dil_conv_3x3"),
                 1: ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5")},
                {0: ("none", "skip_connect", "sep_conv_5x5"), 1: ("avg_pool_3x3", "skip_connect", "sep_conv_3x3")},
                {0: ("sep_conv_5x5",), 1: ("skip_connect",)}]
    for index, rows in enumerate(expected, start=1):
        edge_ops = pruned_edge_ops(space.edge_ops(), plan.kept_ops(space))
        space = plan.enter(index, edge_ops)
        assert space.edge_ops()["normal"] == tuple(rows[edge % 2] for edge in range(14)), index
        # The reduction cell ranked the same rows in reverse edge order (edge 13 is odd).
        assert space.edge_ops()["reduce"] == tuple(rows[(edge + 1) % 2] for edge in range(14)), index
    assert plan.index == 3 and strategy.hand == []


# -- the skip-dropout rate --------------------------------------------------------------------------------
def test_the_skip_dropout_rate_follows_their_formula():
    # r = 0.4, 25 epochs, 10 weight-only: r (25 - e - 1) / 25 before epoch 10, r exp(-0.2 (e - 10)) from it.
    assert skip_dropout_rate(0.4, 0, 25, 10, 0.2) == pytest.approx(0.384)
    assert skip_dropout_rate(0.4, 9, 25, 10, 0.2) == pytest.approx(0.24)
    assert skip_dropout_rate(0.4, 10, 25, 10, 0.2) == pytest.approx(0.4)      # back up to r
    assert skip_dropout_rate(0.4, 15, 25, 10, 0.2) == pytest.approx(0.14715177647)
    assert skip_dropout_rate(0.4, 24, 25, 10, 0.2) == pytest.approx(0.02432402505)
    assert skip_dropout_rate(0.7, 24, 25, 0, 0.2) == pytest.approx(0.7 * math.exp(-4.8))
    # Within a stage that starts at epoch 25: its epoch 15 is the search's epoch 40.
    strategy = PDARTS(stages=[{"epochs": 25, "options": {"skip_dropout": 0.1}},
                              {"epochs": 25, "options": {"skip_dropout": 0.4}}])
    strategy.enter_stage(1, 25)
    strategy.start_epoch(40)
    assert strategy.rate == pytest.approx(0.14715177647) and strategy.arch_start_epoch == 35
    for bad in ({"skip_dropout": 1.0}, {"skip_dropout": -0.1}, {"warmup_epochs": -1}, {"scale_factor": "x"}):
        with pytest.raises(DartsError, match="must be"):
            PDARTS(**bad)


# -- the skip dropout in the supernet ---------------------------------------------------------------------
def run_with_dropout(op, x, logits, rate):
    inputs, weights = x.clone().requires_grad_(), logits.clone().requires_grad_()
    torch.manual_seed(3)
    out = op(inputs, torch.softmax(weights, 0), skip_dropout=rate)
    grads = torch.autograd.grad(out.square().sum(), [inputs, weights, *op.parameters()])
    return out, grads


@pytest.mark.parametrize("stride", [1, 2])
def test_fused_mixed_op_drops_what_the_plain_one_drops(stride):
    torch.manual_seed(0)
    plain = MixedOp(4, stride, PRIMITIVES).double()
    fused = copy.deepcopy(plain)
    apply_fast_path(fused, FastPathOptions(fused_mixed_ops=True, depthwise_conv_grads=True))
    x = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    logits = torch.randn(len(PRIMITIVES), dtype=torch.float64)
    expected, expected_grads = run_with_dropout(plain, x, logits, 0.5)
    got, got_grads = run_with_dropout(fused, x, logits, 0.5)
    torch.testing.assert_close(got, expected)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e)
    undropped, _ = run_with_dropout(plain, x, logits, 0.0)
    # Stride 1: the skip is an Identity and drops; stride 2 it is a FactorizedReduce and does not (theirs).
    assert torch.equal(expected, undropped) == (stride == 2)
    plain.eval()
    assert torch.equal(run_with_dropout(plain, x, logits, 0.5)[0], run_with_dropout(plain, x, logits, 0.0)[0])


def test_skip_dropout_zeroes_or_scales_each_skip_output_and_passes_the_partial_channel_bypass():
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    skip_only = MixedOp(4, 1, ["skip_connect"]).double()
    out = skip_only(x, torch.tensor([0.5], dtype=torch.float64), skip_dropout=0.25)
    dropped = out == 0
    assert dropped.any() and (~dropped).any()
    torch.testing.assert_close(out[~dropped], (x * 0.5 / 0.75)[~dropped])
    # PC-DARTS's partial-channel edge: the skip drops on its C/K channels; the bypassed ones are untouched.
    partial = PartialChannelMixedOp(4, 1, ["skip_connect"], partial_channels=2).double()
    out = partial(x, torch.tensor([1.0], dtype=torch.float64), skip_dropout=0.5)
    # Channel shuffle with 2 groups: output channels 1 and 3 are the bypassed input channels 2 and 3.
    assert torch.equal(out[:, [1, 3]], x[:, [2, 3]])
    through = out[:, [0, 2]]
    assert torch.equal(through[through != 0], (2 * x[:, [0, 1]])[through != 0]) and (through == 0).any()


def test_the_supernet_drops_skips_only_when_its_weights_say_so_in_training():
    cfg = OmegaConf.create(dict(name="darts", primitives=["skip_connect", "sep_conv_3x3"], edge_primitives=None,
                                C=4, layers=3, steps=2, multiplier=2, stem_multiplier=1))
    torch.manual_seed(0)
    supernet = build_space(cfg).build_supernet(3, 3).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    weights = torch.full((5, 2), 0.5, dtype=torch.float64)

    def forward(rate):
        torch.manual_seed(1)
        return supernet(x, {cell: EdgeWeights(weights, skip_dropout=rate) for cell in ("normal", "reduce")})

    assert not torch.equal(forward(0.5), forward(0.0))
    supernet.eval()
    assert torch.equal(forward(0.5), forward(0.0))


# -- stage schedules with carry and space overrides ---------------------------------------------------------
def test_carry_state_cannot_change_the_depth_and_stage_keys_are_checked():
    space_cfg = compose_config("search", ["experiment=smoke"]).space
    deeper = [{"epochs": 1}, {"epochs": 1, "keep_ops": 4, "space": {"layers": 5}}]
    with pytest.raises(DartsError, match=r"stages\[1\] carries the previous stage's state \(carry: state\) but "
                                         r"changes the space \(layers 3 -> 5\).*set carry: none"):
        StagePlan(DrNAS(stages=deeper), 2, space_cfg)
    with pytest.raises(DartsError, match="changes the space"):
        StagePlan(PDARTS(stages=[deeper[0], {**deeper[1], "carry": "state"}]), 2, space_cfg)
    plan = StagePlan(DrNAS(stages=[deeper[0], {**deeper[1], "carry": "none"}]), 2, space_cfg)
    assert [cfg.layers for cfg in plan.space_cfgs] == [3, 5] and not plan.carries_state(1)
    with pytest.raises(DartsError, match=r"stages\[1\].space: unknown key\(s\) depth; valid keys of the darts space: "
                                         r".*\blayers\b"):
        StagePlan(PDARTS(stages=[{"epochs": 1}, {"epochs": 1, "space": {"depth": 5}}]), 2, space_cfg)
    with pytest.raises(DartsError, match=r"stages\[0\].space cannot override edge_primitives"):
        parse_stages([{"epochs": 1, "space": {"edge_primitives": None}}], [])
    with pytest.raises(DartsError, match=r"stages\[0\].carry must be null .* state, none, got 'all'"):
        parse_stages([{"epochs": 1, "carry": "all"}], [])
    with pytest.raises(DartsError, match=r"drop_none_first needs keep_ops"):
        parse_stages([{"epochs": 1, "drop_none_first": True}], [])


def test_the_pdarts_preset_runs_their_three_stages():
    cfg = compose_config("search", ["experiment=pdarts"])
    strategy = build_strategy(cfg.strategy)
    plan = StagePlan(strategy, cfg.search.epochs, cfg.space)
    assert [c.layers for c in plan.space_cfgs] == [5, 11, 17] and plan.space_cfgs[0].C == 16
    assert [plan.schedule_epochs(i) for i in range(3)] == [25, 25, 25]
    assert [plan.carries_state(i) for i in range(3)] == [False] * 3
    assert [s.keep_ops for s in strategy.stages] == [None, 5, 3] and strategy.pruning == "drop_lowest"
    assert [s.options["skip_dropout"] for s in strategy.stages] == [0.1, 0.4, 0.7]
    assert (cfg.selection.max_skip_connects, cfg.search.batch_size, cfg.optim.weights.lr_min) == (2, 96, 0.0)


# -- a smoke search ----------------------------------------------------------------------------------------
STAGES = ("[{epochs: 2, options: {skip_dropout: 0.3}}, "
          "{epochs: 1, keep_ops: 5, space: {layers: 4}, options: {skip_dropout: 0.4}}, "
          "{epochs: 2, keep_ops: 3, space: {layers: 5}, options: {skip_dropout: 0.6}}]")


def smoke_config(*overrides):
    return compose_config("search", ["experiment=smoke", "deterministic=true", "strategy=pdarts",
                                     "search.epochs=5", "search.max_steps_per_epoch=2", "search.batch_size=8",
                                     "search.eval_every=0", "search.eval_max_batches=1", "dataset.num_train=64",
                                     "dataset.image_size=8", "fast.channels_last=false", "strategy.warmup_epochs=1",
                                     "selection.max_skip_connects=2", f"strategy.stages={STAGES}",
                                     "strategy.name=recording_pdarts", *overrides])


class Recording(PDARTS):
    """P-DARTS that records each stage's supernet as built and at its first step, the weights its
    pruning ranks, and sends SIGTERM during its ``stop_at``-th step."""
    stop_at, calls, built, first_steps, ranked = None, 0, [], [], []

    def build_supernet(self, space, num_classes, in_channels):
        Recording.built.append((torch.get_rng_state(), space, num_classes, in_channels))
        return super().build_supernet(space, num_classes, in_channels)

    def pruning_weights(self):
        weights = super().pruning_weights()
        Recording.ranked.append(weights)
        return weights

    def step(self, train_batch, alpha_batches, epoch):
        Recording.calls += 1
        if Recording.calls == Recording.stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
        if not Recording.first_steps or Recording.first_steps[-1]["model"] is not self.model:
            Recording.first_steps.append({
                "model": self.model, "epoch": epoch, "state": copy.deepcopy(self.model.state_dict()),
                "alphas": copy.deepcopy(self.arch.state_dict()), "cells": len(self.model.cells),
                "edge_ops": [[edge.primitives for edge in cell.edges] for cell in self.model.cells],
                "optimizer_state": len(self.w_optimizer.state) + len(self.a_optimizer.state),
                "lr": self.w_optimizer.param_groups[0]["lr"]})
        return super().step(train_batch, alpha_batches, epoch)


def run_recording(cfg, run_dir, stop_at=None):
    Recording.stop_at, Recording.calls, Recording.built, Recording.first_steps, Recording.ranked = \
        stop_at, 0, [], [], []
    with STRATEGIES.temporarily("recording_pdarts", Recording):
        return run_search(copy.deepcopy(cfg), run_dir)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pdarts") / "full"
    results = run_recording(smoke_config(), run_dir)
    return results, run_dir, list(Recording.built), list(Recording.first_steps), list(Recording.ranked)


def test_each_stage_is_a_fresh_supernet_of_its_depth_with_the_kept_ops(full_run):
    results, _, built, first_steps, ranked = full_run
    assert [r["stage"] for r in results["history"]] == [0, 0, 1, 2, 2]
    assert [(s["epoch"], s["cells"]) for s in first_steps] == [(0, 3), (2, 4), (3, 5)]
    assert len(built) == 3 and len(ranked) == 2
    previous = {cell: [PRIMITIVES] * 14 for cell in ("normal", "reduce")}
    for stage, (step, (rng, space, num_classes, in_channels)) in enumerate(zip(first_steps, built)):
        # Fresh: what a new supernet and new 1e-3 randn alphas drawn from the RNG state at its build hold.
        torch.set_rng_state(rng)
        fresh = space.build_supernet(num_classes, in_channels)
        alphas = ArchParameters(space.arch_shapes())
        for name, tensor in fresh.state_dict().items():
            assert torch.equal(step["state"][name], tensor), (stage, name)
        assert all(torch.equal(step["alphas"][k], v) for k, v in alphas.state_dict().items())
        # New optimisers (no momentum, no Adam moments) and a new schedule from the initial lr.
        assert step["optimizer_state"] == 0 and step["lr"] == pytest.approx(0.025)
        # Every edge holds 8, 5, 3 ops: those with the largest weights of the previous stage's edge.
        for cell, edges in zip(space.cell_types, [space.edge_ops()[c] for c in space.cell_types]):
            assert {len(ops) for ops in edges} == {(8, 5, 3)[stage]}
            for edge, ops in enumerate(edges):
                old = previous[cell][edge]
                assert set(ops) <= set(old)
                if stage:
                    weights = ranked[stage - 1][cell][edge]
                    kept = [weights[old.index(op)] for op in ops]
                    dropped = [weights[k] for k, op in enumerate(old) if op not in ops]
                    assert max(dropped) <= min(kept)
        reduction = {layer for layer in range(step["cells"]) if layer in (step["cells"] // 3, 2 * step["cells"] // 3)}
        assert all(step["edge_ops"][layer] == list(map(tuple, space.edge_ops()["reduce" if layer in reduction
                                                                              else "normal"]))
                   for layer in range(step["cells"]))
        previous = {cell: [list(ops) for ops in space.edge_ops()[cell]] for cell in space.cell_types}


def test_smoke_search_runs_every_stage_and_resumes_exactly_mid_stage(full_run, tmp_path):
    full, run_dir, *_ = full_run
    history = full["history"]
    # The rate of each epoch, counted within its stage (warm-up 1 epoch): r (E - e - 1) / E, then r exp(-0.2 (e - 1)).
    assert [r["skip_dropout"] for r in history] == pytest.approx([0.15, 0.3, 0.0, 0.3, 0.6])
    assert [("alpha_loss" in r) for r in history] == [False, True, False, False, True]
    genotype = build_space(smoke_config().space).parse_genotype((run_dir / "genotype.json").read_text())
    assert sum(op == "skip_connect" for op, _ in genotype.normal) <= 2
    # The result is the last stage's softmax with the cap of 2 (selection.max_skip_connects).
    last_space = build_space(OmegaConf.merge(smoke_config().space, {
        "layers": 5, "edge_primitives": history[2]["stage_ops"]}))
    weights = {cell: torch.tensor(w, dtype=torch.float64) for cell, w in full["softmax_weights"].items()}
    assert last_space.derive(weights, max_skip_connects=2) == genotype
    assert read_json(run_dir / "genotype.json")["string"] == full["genotype_string"]

    # Cut mid stage 0 (after epoch 0's first step), resume, cut again mid stage 2 (the resumed run's 6th
    # step: epoch 3 step 0), resume to the end: equal to the uninterrupted run.
    cut, resume = tmp_path / "cut", smoke_config("resume=auto")
    with pytest.raises(Preempted, match="epoch 0 step 1"):
        run_recording(smoke_config(), cut, stop_at=1)
    with pytest.raises(Preempted, match="epoch 3 step 1"):
        run_recording(resume, cut, stop_at=6)
    resumed = run_recording(resume, cut)
    assert resumed["alphas"] == full["alphas"] and resumed["genotype_string"] == full["genotype_string"]
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in history]
    assert [r.get("alpha_loss") for r in resumed["history"]] == [r.get("alpha_loss") for r in history]
    assert [r["skip_dropout"] for r in resumed["history"]] == [r["skip_dropout"] for r in history]
