"""DrNAS's progressive search in the NAS-Bench-201 space (xiangning-chen/DrNAS
201-space/train_search_progressive.py): per-edge op lists in the nb201 space, partial channels and
widening there, a two-stage search that resumes exactly, and the presets' settings."""
import copy
import math

import pytest
import torch
from omegaconf import OmegaConf

from darts.checkpoint import CHECKPOINT_NAME
from darts.engine import run_search
from darts.engine.stages import carry_supernet
from darts.errors import DartsError
from darts.net2wider import widen, widening_plan
from darts.preemption import Preempted
from darts.spaces import EdgeWeights, build_space
from darts.strategies import STRATEGIES, build_strategy
from darts.strategies.drnas import DrNAS
from darts.strategies.pcdarts import PartialChannelMixedOp
from helpers import compose_config
from test_preemption import signalling

OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
# Per edge the kept columns of OPS (edge order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2).
KEPT = [[0, 2, 3], [1, 3, 4], [2, 3, 4], [0, 1, 3], [1, 2, 3], [0, 3, 4]]
ROWS = [[OPS[k] for k in row] for row in KEPT]
# Their schedule (ks = [4, 2], num_keeps = [5, 3]) on 2 + 2 epochs of 2 steps, 1 warm-up epoch a stage.
STAGES = ("[{epochs: 2, keep_ops: 5, options: {partial_channels: 4}}, "
          "{epochs: 2, keep_ops: 3, options: {partial_channels: 2}}]")


def nb201(edge_primitives=None, C=4):
    return build_space(OmegaConf.create(dict(name="nb201", primitives=OPS, C=C, N=1,
                                             edge_primitives=edge_primitives)))


def test_per_edge_lists_equal_the_full_supernet_with_the_dropped_ops_at_weight_zero():
    torch.manual_seed(0)
    full_space, pruned_space = nb201(), nb201({"normal": ROWS})
    assert pruned_space.arch_shapes() == {"normal": (6, 3)} and pruned_space.op_names == OPS
    assert pruned_space.edge_ops() == {"normal": tuple(map(tuple, ROWS))}
    assert pruned_space.primitives == ["op 0", "op 1", "op 2"]       # the columns differ per edge
    x = torch.randn(2, 3, 8, 8)
    kept = torch.rand(6, 3)
    full_weights = torch.zeros(6, 5).scatter(1, torch.tensor(KEPT), kept)
    for mixed_op in (None, lambda C, stride, ops: PartialChannelMixedOp(C, stride, ops, 2, pool_bn=False)):
        old = full_space.build_supernet(4, 3, mixed_op).eval()
        new = pruned_space.build_supernet(4, 3, mixed_op).eval()
        carry_supernet(new, old, {"normal": KEPT})
        assert [len(edge.ops) for edge in new.cells[0].edges] == [3] * 6
        torch.testing.assert_close(new(x, {"normal": EdgeWeights(kept)}),
                                   old(x, {"normal": EdgeWeights(full_weights)}), rtol=0, atol=0)


def test_default_space_is_unchanged_and_per_edge_lists_derive_and_draw_from_each_edges_ops():
    with_null, without_key = nb201(), build_space(OmegaConf.create(dict(name="nb201", primitives=OPS, C=4, N=1)))
    a, b = with_null.build_supernet(4, 3), without_key.build_supernet(4, 3)
    assert [(k, v.shape) for k, v in a.state_dict().items()] == [(k, v.shape) for k, v in b.state_dict().items()]
    assert with_null.edge_ops() == {"normal": (tuple(OPS),) * 6} and with_null.primitives == OPS
    space = nb201({"normal": ROWS})
    # Column 2 on the first three edges, column 0 on the last three; a tie on 3<-2 goes to column 0.
    weights = torch.tensor([[0.1, 0.2, 0.7], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8],
                            [0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.4, 0.4, 0.2]])
    assert str(space.derive({"normal": weights})) == (
        "|nor_conv_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|none~0|skip_connect~1|none~2|")
    # P-DARTS's cap: 2<-0 holds no skip_connect; 3<-1 (skip 0.5) is the one skip edge and takes nor_conv_1x1.
    assert str(space.derive({"normal": weights}, max_skip_connects=0)).endswith("|none~0|nor_conv_1x1~1|none~2|")
    architecture = space.random_architecture(torch.Generator().manual_seed(3))
    assert architecture == {"normal": torch.randint(3, (6,), generator=torch.Generator().manual_seed(3)).tolist()}
    assert space.architecture_genotype(architecture).edge_ops() == tuple(
        ROWS[edge][k] for edge, k in enumerate(architecture["normal"]))
    assert str(space.architecture_genotype({"normal": [0] * 6})) == (
        "|none~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|skip_connect~1|none~2|")
    assert nb201({"normal": [["none"]] * 6}).edge_ops()["normal"][0] == ("none",)   # a benchmark edge may be none


@pytest.mark.parametrize("rows, message", [
    ({"reduce": ROWS}, "needs exactly the cell types normal"),
    ({"normal": ROWS[:5]}, "has 5 rows; this cell has 6 edges.*1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2"),
    ({"normal": ROWS[:5] + [["none", "sep_conv_3x3", "skip_connect"]]},
     r"normal\[5\] \(edge 3<-2\): unknown op 'sep_conv_3x3'; valid choices .*none, skip_connect"),
    ({"normal": ROWS[:5] + [["none", "skip_connect"]]}, "has 2 ops where the first row has 3"),
])
def test_bad_per_edge_lists_name_the_problem_and_the_valid_choices(rows, message):
    with pytest.raises(DartsError, match=message):
        nb201(rows)


def test_nor_conv_widens_as_their_relu_conv_bn_wider():
    """cell_operations.py ReLUConvBN.wider (lines 45-52): input columns then output rows appended as copies
    of drawn old ones, the BN's running stats following the conv's drawn rows."""
    old = PartialChannelMixedOp(16, 1, OPS, 4, pool_bn=False).ops[3]   # nor_conv_3x3 on 4 channels (K = 4)
    new = PartialChannelMixedOp(16, 1, OPS, 2, pool_bn=False).ops[3]   # on 8 (K = 2)
    with torch.no_grad():
        old[2].running_mean.copy_(torch.arange(4.0))
        old[1].weight.copy_(torch.randn(4, 4, 3, 3))
    torch.manual_seed(0)
    plan = widening_plan(new, old)
    with torch.no_grad():
        for new_tensor, old_tensor, steps in plan:
            new_tensor.copy_(widen(old_tensor, steps))
    weight = new[1].weight                                             # (8, 8, 3, 3)
    assert torch.equal(weight[:4, :4], old[1].weight)
    for column in range(4, 8):                                        # each new input channel: an old one's copy
        assert any(torch.equal(weight[:4, column], old[1].weight[:, j]) for j in range(4))
    for row in range(4, 8):                                           # each new output: an old row, its BN stats too
        source = next(i for i in range(4) if torch.equal(weight[row], weight[i]))
        assert new[2].running_mean[row] == old[2].running_mean[source]
    wide, narrow = (PartialChannelMixedOp(16, 1, OPS, k, pool_bn=False).ops for k in (2, 4))
    for op in (0, 1, 4):                                               # none, skip, avg pool: nothing to widen
        assert widening_plan(wide[op], narrow[op]) == []


def staged_config(*overrides):
    return compose_config("search", ["experiment=drnas_nb201_progressive", "dataset=synthetic", "device=cpu",
                                     "dataset.image_size=8", "space.C=8", "space.N=1", "search.epochs=4",
                                     "search.max_steps_per_epoch=2", "search.batch_size=8", "search.eval_every=0",
                                     "search.eval_max_batches=1", "strategy.warmup_epochs=1",
                                     f"strategy.stages={STAGES}", *overrides])


def stopped_at(cfg, run_dir, call_number) -> dict:
    """Run ``cfg`` in ``run_dir`` with a SIGTERM during the ``call_number``-th step; the checkpoint's task state."""
    with STRATEGIES.temporarily("signalling_drnas", signalling(DrNAS, "step", call_number)):
        with pytest.raises(Preempted) as stop:
            run_search(copy.deepcopy(OmegaConf.merge(cfg, {"strategy": {"name": "signalling_drnas"}})), run_dir)
    state = torch.load(run_dir / CHECKPOINT_NAME, weights_only=False)
    return {"message": str(stop.value), **state["task"]}


def edge_shapes(model_state: dict) -> dict[int, tuple[int, ...]]:
    """{op column: conv weight shape} of the first search cell's first edge (1<-0, C = 8 channels)."""
    prefix = "cells.0.edges.0.mixed.ops."
    return {int(key[len(prefix):].split(".")[0]): tuple(value.shape) for key, value in model_state.items()
            if key.startswith(prefix) and key.endswith(".1.weight")}


def test_two_stage_nb201_search_prunes_5_to_3_ops_changes_k_4_to_2_and_resumes_exactly(tmp_path):
    cfg = staged_config()
    full = run_search(copy.deepcopy(cfg), tmp_path / "full")
    history = full["history"]
    assert [r["stage"] for r in history] == [0, 0, 1, 1]
    stage_ops = history[1]["stage_ops"]["normal"]
    assert len(stage_ops) == 6 and all(len(ops) == 3 and set(ops) <= set(OPS) for ops in stage_ops)
    assert [("alpha_loss" in r) for r in history] == [False, True, False, True]   # 1 warm-up epoch a stage
    assert len(full["alphas"]["alphas_normal"]) == 6 and len(full["alphas"]["alphas_normal"][0]) == 3
    genotype = build_space(cfg.space).parse_genotype(full["genotype_string"])
    assert all(op in kept for op, kept in zip(genotype.edge_ops(), stage_ops))     # each edge's op one it kept
    # Their learning rates: cosine over all 4 epochs, and the new stage's SGD from lr again on the loaded
    # schedule (PyTorch's recursive cosine): lr_min + (lr - lr_min) (1 + cos(pi t / T)) for t = 2, 3.
    lr, lr_min = cfg.optim.weights.lr, cfg.optim.weights.lr_min
    expected = [lr_min + (lr - lr_min) * (1 + math.cos(math.pi * t / 4)) / 2 for t in (0, 1)] + [
        lr_min + (lr - lr_min) * (1 + math.cos(math.pi * t / 4)) for t in (2, 3)]
    assert [r["lr/weights"] for r in history] == pytest.approx(expected)

    # Cut mid stage 1 (during epoch 1 step 0), resume across the boundary and cut mid stage 2 (the resumed
    # run's 4th step: epoch 3 step 0), resume to the end: equal to the uninterrupted run.
    cut, resume = tmp_path / "cut", staged_config("resume=auto")
    first = stopped_at(cfg, cut, 3)
    assert "epoch 1 step 1" in first["message"] and first["stage"] == {"index": 0, "edge_ops": None}
    # Stage 1: K = 4, all 5 ops; edge 1<-0's convs (columns 2, 3: nor_conv_1x1, nor_conv_3x3) on 8 / 4 channels.
    assert edge_shapes(first["model"]) == {2: (2, 2, 1, 1), 3: (2, 2, 3, 3)}
    second = stopped_at(resume, cut, 4)
    assert "epoch 3 step 1" in second["message"] and second["stage"]["index"] == 1
    assert second["stage"]["edge_ops"]["normal"] == stage_ops
    # Stage 2: K = 2, the edge's 3 kept ops; its convs, where kept, widened to 8 / 2 channels.
    kept_convs = {k: (4, 4, 1, 1) if op == "nor_conv_1x1" else (4, 4, 3, 3)
                  for k, op in enumerate(stage_ops[0]) if op.startswith("nor_conv")}
    assert kept_convs and edge_shapes(second["model"]) == kept_convs
    resumed = run_search(copy.deepcopy(resume), cut)
    assert resumed["alphas"] == full["alphas"] and resumed["genotype_string"] == full["genotype_string"]
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in history]


def test_presets_hold_their_plain_and_progressive_settings():
    cfg = compose_config("search", ["experiment=drnas_nb201_progressive"])
    assert (cfg.space.name, cfg.space.C, cfg.space.N, list(cfg.space.primitives)) == ("nb201", 16, 5, OPS)
    assert (cfg.search.epochs, cfg.search.batch_size, cfg.search.train_portion) == (100, 64, 0.5)
    weights, alphas = cfg.optim.weights, cfg.optim.alphas
    assert (weights.lr, weights.lr_min, weights.momentum, weights.weight_decay, weights.grad_clip) == (
        0.025, 0.001, 0.9, 3e-4, 5.0)
    assert (weights.nesterov, weights.schedule_every) == (False, "epoch")
    assert (alphas.lr, list(alphas.betas), alphas.weight_decay) == (3e-4, [0.5, 0.999], 1e-3)
    assert cfg.fast.enabled is False and cfg.deterministic is True                    # runtime=exact
    strategy = build_strategy(cfg.strategy)
    assert (strategy.partial_channels, strategy.warmup_epochs) == (4, 10)
    assert [(s.epochs, s.keep_ops, s.options) for s in strategy.stages] == [
        (50, 5, {"partial_channels": 4}), (50, 3, {"partial_channels": 2})]
    plain = build_strategy(compose_config("search", ["experiment=drnas_nb201"]).strategy)
    assert (plain.stages, plain.partial_channels, plain.warmup_epochs) == ((), 1, 0)   # issue #8: train_search.py
