"""RobustDARTS's spaces S1-S4 (per-edge op lists, the ``noise`` op) and P-DARTS's skip-connect cap.

The presets are checked against their YAML files read on their own, and the derivations against
genotypes worked out by hand from the weights written here.
"""
import copy
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf

from darts import viz
from darts.engine import run_search
from darts.errors import DartsError
from darts.fastpath import FastPathOptions, apply_fast_path
from darts.ops import activation_signature, build_op, has_random_output, is_pool
from darts.spaces import DartsSpace, MixedOp, build_space
from darts.spaces.darts_cnn.genotype import PC_DARTS, Genotype
from darts.spaces.mixed import EdgeWeights
from helpers import CONF_DIR, compose_config

PRESETS = {"rdarts_s1": 2, "rdarts_s2": 2, "rdarts_s3": 3, "rdarts_s4": 2}
SMALL = ["experiment=smoke", "deterministic=true", "search.epochs=2", "search.batch_size=8", "dataset.num_train=32",
         "dataset.image_size=8", "search.eval_max_batches=1", "fast.channels_last=false"]


def preset_edge_ops(preset: str) -> dict[str, list[list[str]]]:
    """Each edge's ops per cell type, read from the preset's own file (its per-edge rows, else its
    ``primitives`` on all 14 edges), without the space's code."""
    raw = OmegaConf.load(CONF_DIR / "space" / f"{preset}.yaml")
    if raw.get("edge_primitives") is not None:
        return {cell: [list(row) for row in raw.edge_primitives[cell]] for cell in ("normal", "reduce")}
    return {cell: [list(raw.primitives)] * 14 for cell in ("normal", "reduce")}


def pair_edges(pairs, steps: int = 4):
    """(op, edge index) for each (op, input) pair of a DARTS cell: node n's input j is edge
    n * (n + 3) / 2 + j (node 0's two edges, node 1's three, ...)."""
    return [(op, (position // 2) * (position // 2 + 3) // 2 + source) for position, (op, source) in enumerate(pairs)]


def darts_space(primitives, steps=4, edge_primitives=None) -> DartsSpace:
    cfg = dict(name="darts", primitives=list(primitives), C=4, layers=3, steps=steps, multiplier=steps,
               stem_multiplier=3, edge_primitives=edge_primitives)
    return build_space(OmegaConf.create(cfg))


# -- the presets ------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_builds_a_supernet_whose_edges_hold_exactly_their_yaml_ops(preset):
    cfg = compose_config("search", ["experiment=smoke", f"space={preset}"])
    space = build_space(cfg.space)
    k = PRESETS[preset]
    assert cfg.space.name == "darts" and space.arch_shapes() == {"normal": (14, k), "reduce": (14, k)}
    expected = preset_edge_ops(preset)
    assert all(len(row) == k for rows in expected.values() for row in rows)
    calls = []

    def recording_mixed_op(C, stride, primitives):  # the factory strategies such as PC-DARTS pass
        calls.append(list(primitives))
        return MixedOp(C, stride, primitives)

    torch.manual_seed(0)
    model = space.build_supernet(num_classes=3, in_channels=3, mixed_op=recording_mixed_op)
    reductions = [cell.reduction for cell in model.cells]
    assert reductions == [False, True, True]
    assert calls == [row for reduction in reductions for row in expected["reduce" if reduction else "normal"]]
    for cell in model.cells:
        rows = expected["reduce" if cell.reduction else "normal"]
        for e, (edge, ops) in enumerate(zip(cell.edges, rows)):
            stride = 2 if cell.reduction and e in (0, 1, 2, 3, 5, 6, 9, 10) else 1
            assert list(edge.primitives) == ops
            built = [nn.Sequential if is_pool(op) else type(build_op(op, 4, stride, False)) for op in ops]
            assert [type(module) for module in edge.ops] == built
    arch = {cell: EdgeWeights(torch.full(shape, 1.0 / shape[1])) for cell, shape in space.arch_shapes().items()}
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 8, 8), arch).shape == (2, 3)


def test_s1_is_robustdarts_two_ops_per_edge_list():
    ops = preset_edge_ops("rdarts_s1")
    # The first, a middle and the last rows of each cell type, as src/spaces.py lists them.
    assert ops["normal"][0] == ["skip_connect", "dil_conv_3x3"] and ops["normal"][5] == ["max_pool_3x3", "skip_connect"]
    assert ops["normal"][13] == ["dil_conv_3x3", "dil_conv_5x5"]
    assert ops["reduce"][0] == ["max_pool_3x3", "avg_pool_3x3"] and ops["reduce"][6] == ["max_pool_3x3", "sep_conv_3x3"]
    assert ops["reduce"][13] == ["skip_connect", "dil_conv_5x5"]
    space = build_space(compose_config("search", ["space=rdarts_s1"]).space)
    assert space.edge_ops() == {cell: tuple(map(tuple, rows)) for cell, rows in ops.items()}
    # The columns hold other ops on other edges: their heatmap labels say so; the op set is every op used.
    assert space.primitives == ["op 0", "op 1"]
    assert set(space.op_names) == {op for rows in ops.values() for row in rows for op in row}
    image = viz.alpha_heatmap(torch.rand(14, 2), space.primitives, space.edge_labels(), title="normal")
    assert image.ndim == 3 and image.shape[2] == 3
    with pytest.raises(DartsError, match="sep_conv_5x5 not in the configured op set"):
        space.checked(PC_DARTS)


def test_uniform_presets_name_their_columns_by_op():
    for preset, ops in (("rdarts_s2", ["skip_connect", "sep_conv_3x3"]),
                        ("rdarts_s3", ["none", "skip_connect", "sep_conv_3x3"]),
                        ("rdarts_s4", ["noise", "sep_conv_3x3"])):
        space = build_space(compose_config("search", [f"space={preset}"]).space)
        assert space.primitives == ops and space.edge_primitives is None


# -- per-edge op lists: derivation, random cells, validation -------------------------------------
# A 2-step cell (5 edges: n0<-c_{k-2}, n0<-c_{k-1}, n1<-c_{k-2}, n1<-c_{k-1}, n1<-n0), each edge its own pair.
OWN_OPS = {
    "normal": [["skip_connect", "dil_conv_3x3"], ["max_pool_3x3", "skip_connect"], ["none", "sep_conv_3x3"],
               ["dil_conv_3x3", "dil_conv_5x5"], ["skip_connect", "sep_conv_3x3"]],
    "reduce": [["max_pool_3x3", "avg_pool_3x3"], ["skip_connect", "dil_conv_5x5"], ["max_pool_3x3", "sep_conv_3x3"],
               ["max_pool_3x3", "avg_pool_3x3"], ["skip_connect", "dil_conv_3x3"]],
}
OWN_PRIMITIVES = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3",
                  "dil_conv_5x5"]
OWN_WEIGHTS = {
    "normal": torch.tensor([[0.3, 0.7], [0.6, 0.4], [0.9, 0.1], [0.2, 0.8], [0.55, 0.45]]),
    "reduce": torch.tensor([[0.4, 0.6], [0.5, 0.5], [0.1, 0.9], [0.7, 0.3], [0.2, 0.8]]),
}


def test_derivation_names_each_edges_column_by_that_edges_own_list():
    space = darts_space(OWN_PRIMITIVES, steps=2, edge_primitives=OWN_OPS)
    assert space.arch_shapes() == {"normal": (5, 2), "reduce": (5, 2)}
    genotype = space.derive(OWN_WEIGHTS)
    # normal: n0 keeps edge 0 (dil_conv_3x3 0.7) and edge 1 (max_pool 0.6); n1 ranks edge 3 (dil_conv_5x5
    # 0.8), edge 4 (skip 0.55), edge 2 (sep_conv_3x3 0.1: its 0.9 is `none`, which never counts).
    assert genotype.normal == (("dil_conv_3x3", 0), ("max_pool_3x3", 1), ("dil_conv_5x5", 1), ("skip_connect", 2))
    # reduce: edge 1's tie (0.5, 0.5) goes to its first column, skip_connect; n1: edge 2 0.9, edge 4 0.8.
    assert genotype.reduce == (("avg_pool_3x3", 0), ("skip_connect", 1), ("sep_conv_3x3", 0), ("dil_conv_3x3", 2))
    # Capped at no skip connection: edge 4 gives up its skip for sep_conv_3x3 (0.45) and still beats
    # edge 2 (0.1); the reduction cell keeps its skip.
    capped = space.derive(OWN_WEIGHTS, max_skip_connects=0)
    assert capped.normal == (("dil_conv_3x3", 0), ("max_pool_3x3", 1), ("dil_conv_5x5", 1), ("sep_conv_3x3", 2))
    assert capped.reduce == genotype.reduce
    network = space.build_network(genotype, OmegaConf.create(dict(network="auto", C=4, layers=3, auxiliary=False)),
                                  num_classes=3, in_channels=3)
    assert network.eval()(torch.randn(2, 3, 8, 8)).shape == (2, 3)


def test_random_cells_and_s1_derivations_use_only_each_edges_own_ops():
    space = build_space(compose_config("search", ["space=rdarts_s1"]).space)
    ops = preset_edge_ops("rdarts_s1")
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(30):
        architecture = space.random_architecture(generator)
        assert all(sum(k is not None for k in architecture[cell][edges.start:edges.stop]) == 2
                   for cell in ("normal", "reduce") for edges in space.node_edges())
        genotype = space.architecture_genotype(architecture)
        for cell, pairs in (("normal", genotype.normal), ("reduce", genotype.reduce)):
            for op, edge in pair_edges(pairs):
                assert op in ops[cell][edge] and op == ops[cell][edge][architecture[cell][edge]]
                seen.add((cell, edge, op))
    assert len(seen) > 40, "30 random cells drew only a few (edge, op) choices"
    for seed in range(3):
        weights = {cell: torch.rand(14, 2, generator=torch.Generator().manual_seed(seed)) for cell in ops}
        genotype = space.derive(weights)
        for cell, pairs in (("normal", genotype.normal), ("reduce", genotype.reduce)):
            assert all(op == ops[cell][edge][int(weights[cell][edge].argmax())] for op, edge in pair_edges(pairs))


def test_one_list_written_per_edge_is_the_shared_list_exactly():
    primitives = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"]
    shared = darts_space(primitives)
    per_edge = darts_space(primitives, edge_primitives={cell: [primitives] * 14 for cell in ("normal", "reduce")})
    assert per_edge.primitives == shared.primitives and per_edge.arch_shapes() == shared.arch_shapes()
    weights = {cell: torch.rand(14, 4, generator=torch.Generator().manual_seed(3)) for cell in ("normal", "reduce")}
    assert per_edge.derive(weights) == shared.derive(weights)
    draws = [space.random_architecture(torch.Generator().manual_seed(5)) for space in (shared, per_edge)]
    assert draws[0] == draws[1]
    arch = {cell: EdgeWeights(torch.softmax(w, -1)) for cell, w in weights.items()}
    outputs = []
    for space in (shared, per_edge):
        torch.manual_seed(0)
        model = space.build_supernet(num_classes=3, in_channels=3).eval()
        torch.manual_seed(1)
        with torch.no_grad():
            outputs.append(model(torch.randn(2, 3, 8, 8), arch))
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize("edge_primitives, message", [
    ({"normal": [["skip_connect", "sep_conv_3x3"]] * 13, "reduce": [["skip_connect", "sep_conv_3x3"]] * 14},
     r"space.edge_primitives.normal has 13 rows; this cell has 14 edges, one row each in edge order: n0<-c_\{k-2\}"),
    ({"normal": [["skip_connect", "sep_conv_9x9"]] * 14, "reduce": [["skip_connect", "sep_conv_3x3"]] * 14},
     r"normal\[0\] \(edge n0<-c_\{k-2\}\): unknown op 'sep_conv_9x9'; valid choices \(space.primitives\): "
     r"none, skip_connect, sep_conv_3x3"),
    ({"normal": [["skip_connect", "sep_conv_3x3"]] * 14,
      "reduce": [["skip_connect", "sep_conv_3x3"]] * 3 + [["none", "skip_connect", "sep_conv_3x3"]] * 11},
     r"reduce\[3\] \(edge n1<-c_\{k-1\}\) has 3 ops where the first row has 2: every edge needs the same number"),
    ({"normal": [["skip_connect", "sep_conv_3x3"]] * 14},
     r"needs exactly the cell types normal, reduce"),
    ({"normal": [["skip_connect", "skip_connect"]] * 14, "reduce": [["skip_connect", "sep_conv_3x3"]] * 14},
     r"normal\[0\] \(edge n0<-c_\{k-2\}\) lists an op twice"),
])
def test_malformed_edge_lists_get_one_readable_error(edge_primitives, message):
    with pytest.raises(DartsError, match=message):
        darts_space(["none", "skip_connect", "sep_conv_3x3"], edge_primitives=edge_primitives)


# -- the noise op ---------------------------------------------------------------------------------
@pytest.mark.parametrize("stride, size, out", [(1, 7, 7), (2, 7, 4), (2, 8, 4)])
def test_noise_is_fresh_standard_normal_of_the_strided_shape_whatever_the_input(stride, size, out):
    op = build_op("noise", 3, stride, affine=True)
    assert list(op.parameters()) == [] and activation_signature(op) is None and has_random_output(op)
    x = torch.randn(2, 3, size, size, dtype=torch.float64, requires_grad=True)
    first, second = op(x), op(x)
    assert first.shape == (2, 3, out, out) and first.dtype == torch.float64 and first.device == x.device
    assert not torch.equal(first, second) and not first.requires_grad
    # Its values do not depend on the input's: from one RNG state, any input gives the same draw.
    torch.manual_seed(7)
    drawn = op(x)
    torch.manual_seed(7)
    assert torch.equal(op(5 * x + 3), drawn)
    op.eval()  # RobustDARTS's NoiseOp draws in eval mode too
    assert not torch.equal(op(x), op(x))


def test_noise_is_standard_normal_over_a_large_draw():
    torch.manual_seed(0)
    sample = build_op("noise", 16, 1, affine=False)(torch.zeros(64, 16, 32, 32))  # 1,048,576 draws
    assert abs(float(sample.mean())) < 0.005 and abs(float(sample.std()) - 1.0) < 0.005


def test_noise_in_a_mixed_op_passes_gradient_to_its_weight_only_and_runs_alone_on_the_fast_path():
    plain = MixedOp(4, 1, ["noise", "sep_conv_3x3", "dil_conv_3x3"])
    # The two convs share their ReLU; noise has no activation to share and runs on its own.
    assert plain.activation_groups == [[1, 2]]
    fused = copy.deepcopy(plain)
    apply_fast_path(fused, FastPathOptions(fused_mixed_ops=True))
    x = torch.randn(2, 4, 6, 6)
    outputs = []
    for op in (plain, fused):
        torch.manual_seed(3)
        outputs.append(op(x, torch.tensor([0.5, 0.3, 0.2])))
    torch.testing.assert_close(outputs[1], outputs[0])
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    weights = torch.tensor([1.0, 0.0, 0.0], requires_grad=True)
    torch.manual_seed(3)
    out = plain(x, weights)
    torch.manual_seed(3)
    noise = build_op("noise", 4, 1, affine=False)(x)
    torch.testing.assert_close(out, noise)  # weight 1 on noise, 0 on the conv
    grad_w, grad_x = torch.autograd.grad(out.sum(), [weights, x])
    torch.testing.assert_close(grad_w[0], noise.sum())
    assert float(grad_x.abs().max()) == 0.0  # the conv's weight is 0; the noise ignores x


def test_a_genotype_with_noise_builds_a_final_network():
    space = build_space(compose_config("search", ["space=rdarts_s4"]).space)
    pairs = [("noise", 0), ("sep_conv_3x3", 1)] * 4
    genotype = space.checked(Genotype(pairs, [2, 3, 4, 5], pairs, [2, 3, 4, 5]))
    network = space.build_network(genotype, OmegaConf.create(dict(network="auto", C=4, layers=3, auxiliary=False)),
                                  num_classes=3, in_channels=3)
    network.set_drop_path_prob(0.2)
    logits, _ = network.train()(torch.randn(2, 3, 8, 8))
    assert logits.shape == (2, 3) and network.eval()(torch.randn(2, 3, 8, 8)).shape == (2, 3)


# -- P-DARTS's skip cap ----------------------------------------------------------------------------
CAP_OPS = ["none", "skip_connect", "sep_conv_3x3", "dil_conv_3x3"]
# Normal-cell weights (columns as CAP_OPS) whose uncapped cell has 4 skip connections (edges 0, 2, 5, 9).
CAP_WEIGHTS = torch.tensor([
    [0.10, 0.60, 0.20, 0.10],  # e0  n0<-c_{k-2}: skip 0.6
    [0.10, 0.20, 0.50, 0.20],  # e1  n0<-c_{k-1}: sep 0.5
    [0.10, 0.50, 0.30, 0.10],  # e2  n1<-c_{k-2}: skip 0.5, then sep 0.3
    [0.10, 0.10, 0.20, 0.60],  # e3  n1<-c_{k-1}: dil 0.6
    [0.30, 0.35, 0.20, 0.15],  # e4  n1<-n0: skip 0.35, then sep 0.2
    [0.10, 0.70, 0.10, 0.10],  # e5  n2<-c_{k-2}: skip 0.7
    [0.10, 0.20, 0.40, 0.30],  # e6  n2<-c_{k-1}: sep 0.4
    [0.20, 0.10, 0.36, 0.34],  # e7  n2<-n0: sep 0.36
    [0.30, 0.10, 0.10, 0.50],  # e8  n2<-n1: dil 0.5
    [0.10, 0.45, 0.25, 0.20],  # e9  n3<-c_{k-2}: skip 0.45, then sep 0.25
    [0.20, 0.20, 0.31, 0.29],  # e10 n3<-c_{k-1}: sep 0.31
    [0.50, 0.20, 0.19, 0.11],  # e11 n3<-n0: skip 0.2
    [0.10, 0.20, 0.60, 0.10],  # e12 n3<-n1: sep 0.6
    [0.10, 0.28, 0.32, 0.30],  # e13 n3<-n2: sep 0.32
], dtype=torch.float64)
UNCAPPED = (("skip_connect", 0), ("sep_conv_3x3", 1), ("dil_conv_3x3", 1), ("skip_connect", 0),
            ("skip_connect", 0), ("dil_conv_3x3", 3), ("sep_conv_3x3", 3), ("skip_connect", 0))


def skips(pairs) -> int:
    return sum(op == "skip_connect" for op, _ in pairs)


def test_the_skip_cap_follows_pdarts_loop_on_hand_worked_weights():
    space = darts_space(CAP_OPS)
    weights = {"normal": CAP_WEIGHTS, "reduce": CAP_WEIGHTS}
    uncapped = space.derive(weights)
    assert uncapped.normal == UNCAPPED == uncapped.reduce and skips(uncapped.normal) == 4
    assert space.derive(weights, max_skip_connects=None) == uncapped
    assert space.derive(weights, max_skip_connects=4) == space.derive(weights, max_skip_connects=8) == uncapped
    # Cap 3: the weakest kept skip is e9's (0.45); e9 drops to sep 0.25, so n3 keeps e12 and e13 (sep 0.32).
    capped3 = space.derive(weights, max_skip_connects=3)
    assert capped3.normal == UNCAPPED[:6] + (("sep_conv_3x3", 3), ("sep_conv_3x3", 4))
    # Cap 2: next e2 (0.5) drops to sep 0.3, which lets e4's skip (0.35) into n1: still 3 skips; then
    # e4 (0.35) drops to sep 0.2 and n1 takes e2 back, with sep: 2 skips (e0, e5).
    capped2 = space.derive(weights, max_skip_connects=2)
    assert capped2.normal == (("skip_connect", 0), ("sep_conv_3x3", 1), ("dil_conv_3x3", 1), ("sep_conv_3x3", 0),
                              ("skip_connect", 0), ("dil_conv_3x3", 3), ("sep_conv_3x3", 3), ("sep_conv_3x3", 4))
    assert skips(capped2.normal) == 2
    # Cap 1: e0 (0.6) drops to sep 0.2 and stays: a node of two edges keeps both, now e1 first.
    capped1 = space.derive(weights, max_skip_connects=1)
    assert capped1.normal == (("sep_conv_3x3", 1), ("sep_conv_3x3", 0)) + capped2.normal[2:]
    # The reduction cell is never capped.
    assert capped3.reduce == capped2.reduce == capped1.reduce == uncapped.reduce


def test_a_cap_the_space_cannot_meet_or_a_bad_cap_is_one_readable_error():
    space = darts_space(["none", "skip_connect"])
    weights = {cell: torch.rand(14, 2, generator=torch.Generator().manual_seed(0)) for cell in ("normal", "reduce")}
    assert skips(space.derive(weights).normal) == 8 == skips(space.derive(weights, max_skip_connects=8).normal)
    with pytest.raises(DartsError, match="max_skip_connects=7 cannot be met in the normal cell: node .* needs two "
                                         "input edges with an op other than none and skip_connect"):
        space.derive(weights, max_skip_connects=7)
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(DartsError, match="selection.max_skip_connects must be null .* or an integer >= 0"):
            space.derive(weights, max_skip_connects=bad)


def nb201_space(primitives):
    return build_space(OmegaConf.create(dict(name="nb201", primitives=list(primitives), C=4, N=1)))


def test_the_nb201_cap_gives_the_weakest_skip_edges_their_best_other_op():
    space = nb201_space(["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"])
    weights = torch.tensor([
        [0.10, 0.50, 0.20, 0.10, 0.10],  # 1<-0: skip 0.5, then conv 1x1
        [0.10, 0.60, 0.10, 0.15, 0.05],  # 2<-0: skip 0.6
        [0.30, 0.40, 0.10, 0.10, 0.10],  # 2<-1: skip 0.4, then none (a valid op here)
        [0.10, 0.20, 0.50, 0.10, 0.10],  # 3<-0: conv 1x1
        [0.10, 0.70, 0.10, 0.05, 0.05],  # 3<-1: skip 0.7
        [0.05, 0.10, 0.10, 0.25, 0.50],  # 3<-2: avg pool
    ], dtype=torch.float64)
    uncapped = space.derive({"normal": weights})
    assert str(uncapped) == ("|skip_connect~0|+|skip_connect~0|skip_connect~1|+"
                             "|nor_conv_1x1~0|skip_connect~1|avg_pool_3x3~2|")
    assert space.derive({"normal": weights}, max_skip_connects=None) == uncapped
    assert space.derive({"normal": weights}, max_skip_connects=4) == uncapped
    # 2<-1 (0.4) goes first, to none; then 1<-0 (0.5), to nor_conv_1x1.
    assert str(space.derive({"normal": weights}, max_skip_connects=2)) == (
        "|nor_conv_1x1~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|skip_connect~1|avg_pool_3x3~2|")
    only_skip = nb201_space(["skip_connect"])
    assert str(only_skip.derive({"normal": torch.ones(6, 1)}, max_skip_connects=6)).count("skip_connect") == 6
    with pytest.raises(DartsError, match="max_skip_connects=5 cannot be met: .* no other op"):
        only_skip.derive({"normal": torch.ones(6, 1)}, max_skip_connects=5)


# -- smoke searches -----------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_a_smoke_search_of_each_preset_writes_a_genotype_of_its_edges_ops(preset, tmp_path):
    cfg = compose_config("search", [*SMALL, f"space={preset}"])
    results = run_search(cfg, tmp_path / "run")
    space = build_space(cfg.space)
    genotype = space.parse_genotype((tmp_path / "run" / "genotype.json").read_text())
    assert str(genotype) == results["genotype_string"]
    ops = preset_edge_ops(preset)
    for cell, pairs in (("normal", genotype.normal), ("reduce", genotype.reduce)):
        for op, edge in pair_edges(pairs):
            assert op in ops[cell][edge] and op != "none", (cell, edge, op)
    assert Path(tmp_path / "run" / "results.json").is_file()
