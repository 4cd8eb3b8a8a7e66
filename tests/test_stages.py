"""Progressive stages (darts/stages.py, darts/net2wider.py, darts/engine/stages.py): the op pruning rule,
the widening of surviving ops to a new K, and a two-stage search that resumes exactly mid-stage and
across the stage boundary."""
import copy

import pytest
import torch
from omegaconf import OmegaConf

from darts.engine import run_search
from darts.engine.stages import carry_optimizer, carry_supernet, stage_space
from darts.errors import DartsError
from darts.net2wider import widen, widening_plan
from darts.ops import DilConv, FactorizedReduce
from darts.preemption import Preempted
from darts.spaces.mixed import MixedOp
from darts.stages import check_schedule, parse_stages, pruned_edge_ops, stage_of_epoch, top_ops
from darts.strategies import STRATEGIES
from darts.strategies.drnas import DrNAS
from darts.strategies.pcdarts import PartialChannelMixedOp
from helpers import compose_config

OPS4 = ["max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3"]
STAGES = "[{epochs: 2, keep_ops: 4, options: {partial_channels: 2}}, {epochs: 1, keep_ops: 2, options: {partial_channels: 1}}]"


def test_top_ops_keeps_the_largest_weights_per_edge_in_column_order():
    weights = torch.tensor([[0.1, 0.4, 0.3, 0.2],
                            [0.25, 0.25, 0.3, 0.2],     # a tie for second place: the lower column wins
                            [0.7, 0.1, 0.1, 0.1]])
    assert top_ops(weights, 2) == [[1, 2], [0, 2], [0, 1]]
    assert top_ops(weights, 4) == [[0, 1, 2, 3]] * 3
    with pytest.raises(DartsError, match="keep_ops must not grow"):
        top_ops(weights, 5)
    edge_ops = {"normal": (("a", "b", "c", "d"),) * 3}
    assert pruned_edge_ops(edge_ops, {"normal": top_ops(weights, 2)}) == {
        "normal": (("b", "c"), ("a", "c"), ("a", "b"))}


def test_stage_schedule_is_checked_and_located():
    stages = parse_stages([{"epochs": 25, "keep_ops": 7, "options": {"partial_channels": 6}},
                           {"epochs": 25, "keep_ops": 4, "options": {"partial_channels": 4}}], ["partial_channels"])
    assert [s.keep_ops for s in stages] == [7, 4] and stages[1].options == {"partial_channels": 4}
    assert [stage_of_epoch(stages, e) for e in (0, 24, 25, 49)] == [0, 0, 1, 1]
    check_schedule(stages, 50)
    with pytest.raises(DartsError, match="search.epochs is 40"):
        check_schedule(stages, 40)
    with pytest.raises(DartsError, match="unknown option.*valid choices: partial_channels"):
        parse_stages([{"epochs": 1, "options": {"k": 2}}], ["partial_channels"])
    with pytest.raises(DartsError, match=r"stages\[0\].epochs must be a positive integer"):
        parse_stages([{"epochs": 0}], [])


def test_widening_keeps_old_channels_and_couples_depthwise_to_pointwise():
    torch.manual_seed(0)
    old, new = DilConv(2, 2, 3, 1, 2, 2, affine=False), DilConv(3, 3, 3, 1, 2, 2, affine=False)
    old[3].running_mean.copy_(torch.tensor([0.5, -0.5]))
    plan = widening_plan(new, old)
    with torch.no_grad():
        for new_tensor, old_tensor, steps in plan:
            new_tensor.copy_(widen(old_tensor, steps))
    depthwise, pointwise = new[1].weight, new[2].weight                  # (3, 1, 3, 3), (3, 3, 1, 1)
    assert torch.equal(depthwise[:2], old[1].weight) and torch.equal(pointwise[:2, :2], old[2].weight)
    drawn = next(i for i in range(2) if torch.equal(depthwise[2], old[1].weight[i]))
    # The pointwise conv's new input channel 2 reads the copied depthwise channel: its old column.
    assert torch.equal(pointwise[:2, 2], old[2].weight[:, drawn])
    row = next(i for i in range(2) if torch.equal(pointwise[2, :2], old[2].weight[i]))
    assert new[3].running_mean[2] == old[3].running_mean[row]          # the BN follows the pointwise rows
    # A momentum buffer widens by the same steps as its parameter.
    weight_steps = next(steps for t, _, steps in plan if t is new[2].weight)
    buffer = torch.randn_like(old[2].weight)
    assert torch.equal(widen(buffer, weight_steps)[:2, 2], buffer[:, drawn])


def test_factorized_reduce_and_unchanged_ops_carry_over():
    old, new = FactorizedReduce(4, 4, affine=False), FactorizedReduce(6, 6, affine=False)
    shapes = {tuple(t.shape) for t, _, _ in widening_plan(new, old)}
    assert (3, 6, 1, 1) in shapes and (6,) in shapes
    same = widening_plan(MixedOp(4, 1, OPS4).ops[3], MixedOp(4, 1, OPS4).ops[3])
    assert all(steps == [] for _, _, steps in same)


def test_carried_supernet_runs_the_kept_ops_with_their_weights():
    """A pruned supernet at the same K equals the old one under weights zero on the dropped ops."""
    torch.manual_seed(0)
    from darts.spaces import build_space
    space = build_space(OmegaConf.create(dict(name="darts", primitives=OPS4, C=4, layers=3, steps=4,
                                              multiplier=4, stem_multiplier=3)))
    old = space.build_supernet(3, 3).eval()
    kept = {cell: [[1, 3]] * 14 for cell in ("normal", "reduce")}
    rows = {cell: [[OPS4[1], OPS4[3]]] * 14 for cell in kept}
    pruned = build_space(OmegaConf.merge(space.cfg, {"edge_primitives": rows}))
    new = pruned.build_supernet(3, 3).eval()
    mapping = carry_supernet(new, old, kept)
    x = torch.randn(2, 3, 8, 8)
    full = torch.tensor([0.0, 0.3, 0.0, 0.7]).expand(14, 4)
    from darts.spaces.mixed import EdgeWeights
    expected = old(x, {c: EdgeWeights(full) for c in kept})
    got = new(x, {c: EdgeWeights(full[:, [1, 3]]) for c in kept})
    torch.testing.assert_close(got, expected)
    # Optimizer state follows the map: a momentum buffer of a kept op lands on its new parameter.
    old_opt = torch.optim.SGD(old.parameters(), lr=0.1, momentum=0.9)
    for p in old.parameters():
        p.grad = torch.ones_like(p)
    old_opt.step()
    new_opt = torch.optim.SGD(new.parameters(), lr=0.1, momentum=0.9)
    carry_optimizer(new_opt, old_opt, mapping)
    old_conv = old.cells[0].edges[0].ops[3][0][1].weight
    new_conv = new.cells[0].edges[0].ops[1][0][1].weight
    assert torch.equal(new_opt.state[new_conv]["momentum_buffer"], old_opt.state[old_conv]["momentum_buffer"])


def staged_config(*overrides):
    return compose_config("search", ["experiment=smoke", "deterministic=true", "strategy=drnas",
                                     f"space.primitives=[{','.join(OPS4)}]", "search.epochs=3",
                                     "search.max_steps_per_epoch=2", "search.batch_size=8", "search.eval_every=0",
                                     "search.eval_max_batches=1", "strategy.warmup_epochs=1",
                                     f"strategy.stages={STAGES}", *overrides])


class StepCounter(DrNAS):
    """DrNAS that records each stage's supernet and sends SIGTERM during its ``stop_at``-th step."""
    stop_at = None
    calls = 0
    seen = []

    def step(self, train_batch, alpha_batches, epoch):
        StepCounter.calls += 1
        if StepCounter.calls == StepCounter.stop_at:
            import os
            import signal
            os.kill(os.getpid(), signal.SIGTERM)
        edge = self.model.cells[0].edges[0]
        StepCounter.seen.append((epoch, type(edge).__name__, len(edge.ops)))
        return super().step(train_batch, alpha_batches, epoch)


def run_counting(cfg, run_dir, stop_at=None):
    StepCounter.stop_at, StepCounter.calls, StepCounter.seen = stop_at, 0, []
    with STRATEGIES.temporarily("counting_drnas", StepCounter):
        return run_search(copy.deepcopy(cfg), run_dir)


def test_two_stage_search_prunes_changes_k_and_resumes_exactly(tmp_path):
    cfg = staged_config("strategy.name=counting_drnas")
    full = run_counting(cfg, tmp_path / "full")
    # Stage 1 (epochs 0-1): K = 2 partial-channel edges with all 4 ops; stage 2 (epoch 2): full edges, 2 ops.
    assert sorted(set(StepCounter.seen)) == [(0, "PartialChannelMixedOp", 4), (1, "PartialChannelMixedOp", 4),
                                             (2, "MixedOp", 2)]
    history = full["history"]
    assert [r["stage"] for r in history] == [0, 0, 1]   # the stage each epoch ran in
    assert all(len(ops) == 2 and set(ops) <= set(OPS4) for rows in history[1]["stage_ops"].values() for ops in rows)
    # Warm-up: no alpha step in the first epoch of either stage.
    assert [("alpha_loss" in r) for r in history] == [False, True, False]
    assert len(full["alphas"]["alphas_normal"][0]) == 2
    # The new stage's SGD starts again at the initial lr, the loaded cosine schedule goes on from there.
    assert history[2]["lr/weights"] == pytest.approx(cfg.optim.weights.lr)

    # Cut mid stage 1 (epoch 1 step 1), resume across the boundary and cut again mid stage 2 (epoch 2
    # step 1: the resumed run's 2nd step), resume to the end: equal to the uninterrupted run.
    cut, resume = tmp_path / "cut", staged_config("strategy.name=counting_drnas", "resume=auto")
    with pytest.raises(Preempted, match="epoch 1 step 1"):
        run_counting(cfg, cut, stop_at=3)
    with pytest.raises(Preempted, match="epoch 2 step 1"):
        run_counting(resume, cut, stop_at=2)
    resumed = run_counting(resume, cut)
    assert resumed["alphas"] == full["alphas"] and resumed["genotype_string"] == full["genotype_string"]
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in history]


def test_a_first_stage_cannot_prune_and_a_space_without_edge_lists_cannot_hold_pruned_edges(tmp_path):
    bad = STAGES.replace("keep_ops: 4, options: {partial_channels: 2}", "keep_ops: 3, options: {}")
    with pytest.raises(DartsError, match="first stage cannot prune"):
        run_search(staged_config(f"strategy.stages={bad}"), tmp_path / "a")
    # A space config without an edge_primitives key (nb201 and darts have one) cannot take a pruned stage.
    no_lists = OmegaConf.create(dict(name="nb201", primitives=OPS4, C=4, N=1))
    with pytest.raises(DartsError, match="cannot hold per-edge op lists"):
        stage_space(no_lists, {"normal": ((OPS4[0], OPS4[1]),) * 6})
