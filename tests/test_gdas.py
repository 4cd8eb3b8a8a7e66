"""GDAS and GDAS-FRC as their authors ran them (D-X-Y/AutoDL-Projects): the per-node derivation worked by
hand, the supernets' parameter counts computed by hand from the published layer shapes, the order of the
steps, the unsampled ops' gradients in NAS-Bench-201, smoke searches and the presets."""
import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from darts.engine import run_search
from darts.errors import DartsError
from darts.runtime import Runtime
from darts.spaces import MixedOp, build_space
from darts.spaces.darts_cnn.genotype import PRIMITIVES
from darts.spaces.darts_cnn.fixed_reduction import FixedReductionCell
from darts.spaces.darts_cnn.supernet import SearchCell
from darts.strategies import build_strategy
from darts.strategies.gdas import UnsampledGradientMixedOp, per_node_top_two
from helpers import compose_config

OPTIM = OmegaConf.create(dict(weights=dict(lr=0.1, lr_min=0.0, momentum=0.9, weight_decay=3e-4, grad_clip=5.0),
                              alphas=dict(lr=0.01, betas=[0.5, 0.999], weight_decay=1e-3)))
THREE_OPS = ["none", "skip_connect", "sep_conv_3x3"]


def darts_space(**changes):
    base = dict(name="darts", primitives=list(PRIMITIVES), C=4, layers=6, steps=4, multiplier=4, stem_multiplier=3)
    return build_space(OmegaConf.create({**base, **changes}))


def set_up(name, space, seed=0):
    torch.manual_seed(seed)
    strategy = build_strategy(OmegaConf.create(dict(name=name)))
    model = strategy.build_supernet(space, 10, 3)
    strategy.setup(space, model, OPTIM, epochs=2, steps_per_epoch=1, runtime=Runtime(torch.device("cpu"),
                                                                                    channels_last=False))
    strategy.start_epoch(0)
    return strategy, model


def with_softmax(strategy, weights):
    """Set the alphas so that softmax(alpha) is ``weights`` ({cell: rows summing to 1})."""
    with torch.no_grad():
        for cell, alphas in strategy.arch.alphas().items():
            alphas.copy_(torch.tensor(weights[cell]).log())


# -- derivation ------------------------------------------------------------------------------------------
# A 2-node cell of the ops none, skip_connect, sep_conv_3x3 (softmax rows, none included):
#   node 0 <- input 0: [0.1, 0.5, 0.4]   node 0 <- input 1: [0.6, 0.3, 0.1]
#   node 1 <- input 0: [0.2, 0.2, 0.6]   node 1 <- input 1: [0.1, 0.7, 0.2]   node 1 <- node 0: [0.8, 0.1, 0.1]
# GDAS (per node, every (op, input) pair but none, the two largest):
#   node 0: (skip, 0) 0.5, (sep, 0) 0.4   [then (skip, 1) 0.3]   -> both from input 0
#   node 1: (skip, 1) 0.7, (sep, 0) 0.6
# DARTS (per edge its best non-none op, then the node's two strongest edges):
#   node 0: edge 0 -> skip 0.5, edge 1 -> skip 0.3 -> (skip, 0), (skip, 1)    <- differs
#   node 1: edge 0 -> sep 0.6, edge 1 -> skip 0.7, edge 2 -> sep/skip 0.1 -> (skip, 1), (sep, 0)
HAND_ROWS = [[0.1, 0.5, 0.4], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.7, 0.2], [0.8, 0.1, 0.1]]
HAND_NODE_EDGES = [range(0, 2), range(2, 5)]


def test_per_node_rule_on_a_hand_worked_cell():
    pairs = per_node_top_two(torch.tensor(HAND_ROWS, dtype=torch.float64), [THREE_OPS] * 5, HAND_NODE_EDGES)
    assert pairs == [("skip_connect", 0), ("sep_conv_3x3", 0), ("skip_connect", 1), ("sep_conv_3x3", 0)]


def test_ties_go_to_the_lower_input_then_the_lower_column_and_none_never_counts():
    rows = [[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [1 / 3] * 3, [1 / 3] * 3, [1 / 3] * 3]
    pairs = per_node_top_two(torch.tensor(rows, dtype=torch.float64), [THREE_OPS] * 5, HAND_NODE_EDGES)
    # Node 0: four pairs at 0.05 -> (skip, 0), (sep, 0); node 1: six at 1/3 -> (skip, 0), (sep, 0).
    assert pairs == [("skip_connect", 0), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 0)]
    with pytest.raises(DartsError, match="node 0 needs two"):
        per_node_top_two(torch.tensor(rows), [["none", "skip_connect"]] * 5, [range(0, 1), range(1, 5)])


def test_gdas_genotype_takes_the_per_node_rule_where_the_space_rule_differs():
    space = darts_space(primitives=THREE_OPS, steps=2, multiplier=2)
    strategy, _ = set_up("gdas", space)
    swapped = [HAND_ROWS[1], HAND_ROWS[0], HAND_ROWS[4], HAND_ROWS[2], HAND_ROWS[3]]   # inputs re-ordered
    with_softmax(strategy, {"normal": HAND_ROWS, "reduce": swapped})
    genotype = strategy.genotype()
    assert genotype.normal == (("skip_connect", 0), ("sep_conv_3x3", 0), ("skip_connect", 1), ("sep_conv_3x3", 0))
    # reduce: node 0 now has input 1's pairs at 0.5 and 0.4; node 1 (skip, 2) at 0.7 and (sep, 1) at 0.6.
    assert genotype.reduce == (("skip_connect", 1), ("sep_conv_3x3", 1), ("skip_connect", 2), ("sep_conv_3x3", 1))
    assert genotype.normal_concat == (2, 3) and genotype.reduce_concat == (2, 3)
    by_edge = space.derive(strategy.mixing_weights())
    assert by_edge.normal == (("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 1), ("sep_conv_3x3", 0))
    assert genotype != by_edge
    with pytest.raises(DartsError, match="max_skip_connects=null"):
        strategy.genotype(max_skip_connects=1)


def test_nb201_genotype_is_each_edges_largest_weight_none_included():
    space = build_space(OmegaConf.create(dict(name="nb201", primitives=["none", "skip_connect", "nor_conv_1x1",
                                                                        "nor_conv_3x3", "avg_pool_3x3"], C=4, N=1)))
    strategy, _ = set_up("gdas", space)
    rows = [[0.6, 0.1, 0.1, 0.1, 0.1], [0.1, 0.6, 0.1, 0.1, 0.1], [0.1, 0.1, 0.6, 0.1, 0.1],
            [0.1, 0.1, 0.1, 0.6, 0.1], [0.1, 0.1, 0.1, 0.1, 0.6], [0.1, 0.1, 0.1, 0.6, 0.1]]
    with_softmax(strategy, {"normal": rows})
    assert str(strategy.genotype()) == ("|none~0|+|skip_connect~0|nor_conv_1x1~1|+"
                                        "|nor_conv_3x3~0|avg_pool_3x3~1|nor_conv_3x3~2|")


# -- supernets -------------------------------------------------------------------------------------------
def conv(c_in, c_out, k=1, groups=1, bias=False):
    return c_in // groups * c_out * k + (c_out if bias else 0)


def nb201_gdas_params(C, N, classes, conv_bias=False):
    """TinyNetworkGDAS (search_model_gdas.py) counted from its layers: a 3x3 stem conv + BN; per stage N
    cells of 6 edges, each edge {none, skip, nor_conv_1x1, nor_conv_3x3, avg_pool} (ReLU-conv-BN with an
    affine-free BN; the pool without BN); between stages ResNetBasicblock (affine BNs); BN; linear.
    ``conv_bias``: their search convs' ``bias=not affine`` (True with affine=False)."""
    total = conv(3, C, 9) + 2 * C
    for stage, c in enumerate((C, 2 * C, 4 * C)):
        if stage:
            c_in = c // 2
            total += conv(c_in, c, 9) + 2 * c + conv(c, c, 9) + 2 * c + conv(c_in, c)   # conv_a, conv_b, shortcut
        edge = conv(c, c, 1, bias=conv_bias) + conv(c, c, 9, bias=conv_bias)
        total += N * 6 * edge
    return total + 2 * 4 * C + 4 * C * classes + classes


def test_nb201_gdas_supernet_has_the_published_parameter_count():
    space = build_space(OmegaConf.create(dict(name="nb201", primitives=["none", "skip_connect", "nor_conv_1x1",
                                                                        "nor_conv_3x3", "avg_pool_3x3"], C=16, N=5)))
    _, model = set_up("gdas", space)
    assert sum(p.numel() for p in model.parameters()) == nb201_gdas_params(16, 5, 10) == 1_686_106
    # Theirs holds 16 * 6 * 5 * 2 * (1 + 2 + 4) more: a bias before each search BN, which the BN cancels.
    assert nb201_gdas_params(16, 5, 10, conv_bias=True) - nb201_gdas_params(16, 5, 10) == 6720
    assert all(type(edge) is UnsampledGradientMixedOp for cell in model.cells if hasattr(cell, "edges")
               for edge in cell.edges)


def test_unsampled_ops_weights_get_the_summed_upstream_gradient_and_leave_the_value():
    torch.manual_seed(0)
    primitives = ["none", "skip_connect", "nor_conv_1x1", "avg_pool_3x3"]
    plain, theirs = MixedOp(3, 1, primitives, pool_bn=False), UnsampledGradientMixedOp(3, 1, primitives, pool_bn=False)
    theirs.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 4, 4)
    soft = torch.tensor([0.1, 0.2, 0.3, 0.4], requires_grad=True)
    weights = torch.tensor([0.0, 0.0, 1.0, 0.0]) - soft.detach() + soft   # straight-through, op 2 sampled
    out = theirs(x, weights, 2)
    torch.testing.assert_close(out, plain(x, weights, 2), rtol=0, atol=0)
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    expected = torch.full((4,), float(upstream.sum()))
    with torch.no_grad():
        expected[2] = float((plain.ops[2](x) * upstream).sum())   # d/dw_k of ops[k](x) * w_k
    torch.testing.assert_close(soft.grad, expected)


def test_darts_space_gdas_supernet_is_nasnetwork_gdas():
    space = darts_space()
    _, model = set_up("gdas", space)
    cells = list(model.cells)
    assert [cell.reduction for cell in cells] == [False, False, True, False, True, False]
    # No BN after a pool; the space's own supernet has one (affine-free, no parameters).
    pools = [op for cell in cells for edge in cell.edges for op in edge.ops if "Pool" in type(op).__name__]
    assert len(pools) == 2 * 14 * 6
    assert isinstance(model.lastact[0], torch.nn.BatchNorm2d) and isinstance(model.lastact[1], torch.nn.ReLU)
    torch.manual_seed(0)
    darts_supernet = space.build_supernet(10, 3)
    # The one parameter difference: lastact's affine BN over the last cell's 4 * 4C = 64 channels.
    assert sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in darts_supernet.parameters()) == 128


def fixed_cell_params(c_pp, c_prev, C):
    """GDAS_Reduction_Cell (cell_operations.py) with affine=False, counted from its layers: two 1x1
    preprocess convs (bias-free here); per input a branch of a (1x3) and a (3x1) conv in 8 groups and a
    1x1 conv, each with a bias (``bias=not affine``); BNs without parameters; max pools."""
    branch = conv(C, C, 3, groups=8, bias=True) * 2 + conv(C, C, 1, bias=True)
    return conv(c_pp, C) + conv(c_prev, C) + 2 * branch


def test_fixed_reduction_cell_structure_and_parameters():
    cell = FixedReductionCell(24, 16, 16, reduction_prev=False)
    assert sum(p.numel() for p in cell.parameters()) == fixed_cell_params(24, 16, 16) == 1632
    out = cell(torch.randn(2, 24, 8, 8), torch.randn(2, 16, 8, 8))
    assert out.shape == (2, 64, 4, 4)
    after_reduction = FixedReductionCell(64, 64, 32, reduction_prev=True)   # s0 at twice s1's resolution
    assert after_reduction(torch.randn(2, 64, 8, 8), torch.randn(2, 64, 4, 4)).shape == (2, 128, 2, 2)
    assert sum(p.numel() for p in after_reduction.parameters()) == fixed_cell_params(64, 64, 32)
    with pytest.raises(DartsError, match="divisible by 8"):
        FixedReductionCell(12, 12, 12, reduction_prev=False)


def test_gdas_frc_searches_the_normal_cell_only():
    space = darts_space()
    strategy, model = set_up("gdas_frc", space)
    assert [type(cell) for cell in model.cells] == [SearchCell, SearchCell, FixedReductionCell, SearchCell,
                                                   FixedReductionCell, SearchCell]
    assert [name for name, _ in strategy.arch.named_parameters()] == ["alphas_normal"]
    assert set(strategy.mixing_weights()) == {"normal"}
    # C = 4: reductions at 8 and 16 channels, each fed by 4 * C_prev-cell channels.
    fixed = fixed_cell_params(16, 16, 8) + fixed_cell_params(32, 32, 16)
    assert sum(p.numel() for cell in model.cells if isinstance(cell, FixedReductionCell)
               for p in cell.parameters()) == fixed
    data = [(torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))) for _ in range(2)]
    before = strategy.arch.alphas_normal.detach().clone()
    strategy.step(data[0], iter(data[1:]), epoch=0)
    assert not torch.equal(before, strategy.arch.alphas_normal)
    genotype = strategy.genotype()
    # Their search returns the normal cell alone; the genotype marks the fixed reduction cell with None.
    assert genotype.reduce is None and genotype.fixed_reduction and genotype.reduce_concat == genotype.normal_concat
    assert genotype.normal == tuple(per_node_top_two(strategy.mixing_weights()["normal"], space.edge_ops()["normal"],
                                                     space.node_edges()))


def test_each_step_trains_the_weights_first_then_the_alphas():
    strategy, model = set_up("gdas", darts_space(layers=3))
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    train, alpha = (torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))), (torch.randn(4, 3, 8, 8),
                                                                           torch.randint(0, 10, (4,)))
    metrics = strategy.step(train, iter([alpha]), epoch=0)
    assert len(seen) == 2 and seen[0] is train[0] and seen[1] is alpha[0]
    assert set(metrics) >= {"loss_sum", "alpha_loss_sum"}


# -- searches and presets ----------------------------------------------------------------------------------
# gdas_frc's smoke search (and the final training of its genotype) is in tests/test_frc_final.py.
@pytest.mark.parametrize("strategy, overrides", [("gdas", []), ("gdas", ["space=nb201", "space.N=1"])])
def test_smoke_search(strategy, overrides, tmp_path):
    cfg = compose_config("search", ["experiment=smoke", f"strategy={strategy}", "search.epochs=1",
                                    "dataset.num_train=32", "deterministic=true", *overrides])
    results = run_search(cfg, tmp_path)
    assert math.isfinite(results["train_loss"]) and results["strategy"] == strategy
    saved = json.loads((tmp_path / "genotype.json").read_text())
    assert saved["string"] == results["genotype_string"]


PRESETS = {
    "gdas": dict(strategy="gdas", space="darts", batch=256, layers=6),
    "gdas_frc": dict(strategy="gdas_frc", space="darts", batch=256, layers=6),
    "gdas_nb201": dict(strategy="gdas", space="nb201", batch=64, layers=None),
}


@pytest.mark.parametrize("preset", PRESETS)
def test_search_presets_hold_the_published_settings(preset):
    expected = PRESETS[preset]
    cfg = compose_config("search", [f"experiment={preset}"])
    assert (cfg.strategy.name, cfg.space.name, cfg.search.batch_size, cfg.search.epochs) == (
        expected["strategy"], expected["space"], expected["batch"], 250)
    assert cfg.space.get("layers") == expected["layers"] and cfg.space.C == 16
    weights = cfg.optim.weights
    assert (weights.lr, weights.lr_min, weights.momentum, weights.nesterov, weights.weight_decay,
            weights.schedule_every) == (0.025, 0.001, 0.9, True, 5e-4, "epoch")
    assert (cfg.optim.alphas.lr, list(cfg.optim.alphas.betas), cfg.optim.alphas.weight_decay) == (
        3e-4, [0.5, 0.999], 1e-3)
    assert (cfg.strategy.tau_max, cfg.strategy.tau_min) == (10.0, 0.1)
    assert cfg.fast.enabled is False and cfg.deterministic is True


def test_final_preset_trains_gdas_v1_with_their_recipe():
    cfg = compose_config("final", ["experiment=gdas_final"])
    train = cfg.train
    assert (train.C, train.layers, train.epochs, train.batch_size, train.auxiliary_weight, train.drop_path_prob,
            train.cutout) == (36, 20, 300, 96, 0.4, 0.2, 16)
    # NAS-CIFAR.config: 5 warm-up epochs + 295 of cosine to 0.
    assert (train.schedule.name, train.schedule.lr_min, train.schedule.warmup_epochs) == ("cosine", 0.0, 5)
    assert (train.optimizer.lr, train.optimizer.weight_decay, train.optimizer.nesterov,
            train.optimizer.grad_clip) == (0.025, 5e-4, True, None)
    genotype = build_space(cfg.space).resolve_genotype(cfg.genotype)
    assert genotype.normal[:2] == (("skip_connect", 0), ("skip_connect", 1))
    assert genotype.reduce[-2:] == (("sep_conv_5x5", 0), ("sep_conv_5x5", 1))
