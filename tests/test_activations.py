"""Activation functions as a search dimension (``space.activations``): each conv once per activation,
``[relu]`` exactly today's space, suffixed ops through the fast path, genotypes, final networks, bad
input and a search-then-train run. Generated from the registries where it can be: a new activation or
op with an activation choice is covered the moment it is registered."""
import itertools
import json

import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf

from darts import export
from darts.activations import ACTIVATIONS, DEFAULT_ACTIVATION
from darts.diagnostics import cell_op_counts, is_parameter_free
from darts.engine import run_final, run_search
from darts.errors import DartsError
from darts.kernels import DepthwiseConv2d
from darts.ops import (ACTIVATED_OPS, OPS, activation_of, base_op, build_op, expand_activations,
                       with_activation)
from darts.spaces import build_space
from darts.spaces.darts_cnn.genotype import DARTS_V2, PRIMITIVES, Genotype
from darts.spaces.nb201.genotype import NB201_PRIMITIVES, NB201Genotype
from darts.viz import cell_to_dot, op_color
from helpers import CONF_DIR, compose_config, read_json
from test_kernels import activation_calls, assert_fused_equals_plain, mixed_op_pair

NON_DEFAULT = [name for name in ACTIVATIONS.names() if name != DEFAULT_ACTIVATION]
# Every op that exists once whatever the activations (none, noise, pools, skip_connect).
SINGLE_OPS = [name for name in OPS.names() if activation_of(name) is None]
ACTIVATION_TYPES = tuple(type(factory()) for _, factory in ACTIVATIONS.items())
# Per op with an activation choice: how many activations its module holds (a sep conv has two blocks).
ACTIVATIONS_PER_OP = {"sep_conv_3x3": 2, "sep_conv_5x5": 2, "dil_conv_3x3": 1, "dil_conv_5x5": 1,
                      "nor_conv_1x1": 1, "nor_conv_3x3": 1}

GENOTYPE = Genotype(
    normal=[("sep_conv_3x3_gelu", 0), ("dil_conv_3x3_silu", 1), ("sep_conv_5x5", 0), ("skip_connect", 2),
            ("dil_conv_5x5_gelu", 2), ("max_pool_3x3", 1), ("sep_conv_3x3_silu", 3), ("avg_pool_3x3", 0)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("sep_conv_5x5_silu", 1), ("skip_connect", 2), ("dil_conv_3x3_gelu", 0),
            ("sep_conv_3x3", 1), ("skip_connect", 2), ("dil_conv_5x5_silu", 3), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3, 4, 5])
NB201_TEXT = "|nor_conv_3x3_silu~0|+|nor_conv_1x1_gelu~0|skip_connect~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|"


def darts_cfg(**changes):
    return OmegaConf.create(dict(dict(name="darts", primitives=list(PRIMITIVES), C=4, layers=3, steps=4,
                                      multiplier=4, stem_multiplier=3), **changes))


def nb201_cfg(**changes):
    return OmegaConf.create(dict(dict(name="nb201", primitives=list(NB201_PRIMITIVES), C=4, N=1), **changes))


def final_cfg(**changes):
    return OmegaConf.create(dict(dict(network="auto", C=4, layers=3, N=1, auxiliary=False, drop_path_prob=0.0,
                                      stem_stride=1), **changes))


def activation_modules(module: nn.Module) -> list[type]:
    return [type(child) for child in module.modules() if isinstance(child, ACTIVATION_TYPES)]


# -- [relu] is today's space -----------------------------------------------------------------
@pytest.mark.parametrize("cfg", [darts_cfg(), darts_cfg(activations=["relu"]), nb201_cfg(activations=["relu"])])
def test_relu_alone_keeps_the_configured_primitives_unchanged(cfg):
    space = build_space(cfg)
    assert space.primitives == space.op_names == list(cfg.primitives)
    assert space.activations == ["relu"]


def test_relu_alone_keeps_the_published_parameter_counts():
    space = build_space(darts_cfg(C=16, layers=8, activations=["relu"]))
    # The published search network (tests/test_supernet.py works the figure out by hand).
    assert sum(p.numel() for p in space.build_supernet(10, 3).parameters()) == 1_930_618
    network = space.build_network(DARTS_V2, final_cfg(C=36, layers=20), num_classes=10, in_channels=3)
    assert export.count_parameters(network) == 3_349_342   # DARTS_V2 on CIFAR-10, as published (tests/test_model.py)


def test_the_relu_ops_are_built_as_published():
    for name, per_op in ACTIVATIONS_PER_OP.items():
        op = build_op(name, 4, 1, affine=True)
        assert activation_modules(op) == [nn.ReLU] * per_op, name
    # Same modules in the same order, so checkpoints and exports keep their state-dict keys.
    assert [type(m) for m in build_op("dil_conv_3x3", 4, 1, True)] == [nn.ReLU, DepthwiseConv2d, nn.Conv2d,
                                                                        nn.BatchNorm2d]
    assert list(build_op("nor_conv_3x3", 4, 1, True).state_dict())[:2] == ["1.weight", "2.weight"]
    assert list(build_op("sep_conv_3x3", 4, 1, True).state_dict())[:3] == ["0.1.weight", "0.2.weight", "0.3.weight"]


# -- names and registration -------------------------------------------------------------------
def test_every_op_with_an_activation_choice_exists_once_per_activation():
    assert sorted(ACTIVATED_OPS.names()) == sorted(ACTIVATIONS_PER_OP)
    for name, activation in itertools.product(ACTIVATED_OPS.names(), ACTIVATIONS.names()):
        variant = with_activation(name, activation)
        assert variant == (name if activation == "relu" else f"{name}_{activation}")
        assert variant in OPS and base_op(variant) == name and activation_of(variant) == activation
        op = build_op(variant, 4, 2, affine=False)
        assert activation_modules(op) == [type(ACTIVATIONS.get(activation)())] * ACTIVATIONS_PER_OP[name]
        # An activation has no weights: each variant has the ReLU op's parameter count.
        assert export.count_parameters(op) == export.count_parameters(build_op(name, 4, 2, affine=False))
    assert len(OPS) == len(SINGLE_OPS) + len(ACTIVATED_OPS) * len(ACTIVATIONS)
    assert {base_op(name) for name in SINGLE_OPS} == set(SINGLE_OPS)


def test_expansion_puts_each_convs_variants_in_its_place_in_the_order_given():
    assert expand_activations(["none", "sep_conv_3x3", "max_pool_3x3", "nor_conv_1x1"], ["gelu", "relu"]) == [
        "none", "sep_conv_3x3_gelu", "sep_conv_3x3", "max_pool_3x3", "nor_conv_1x1_gelu", "nor_conv_1x1"]
    space = build_space(darts_cfg(activations=ACTIVATIONS.names()))
    convs = [name for name in PRIMITIVES if name in ACTIVATED_OPS]
    assert len(space.primitives) == len(PRIMITIVES) - len(convs) + len(convs) * len(ACTIVATIONS)
    assert space.arch_shapes() == {"normal": (14, 4 + 4 * len(ACTIVATIONS)), "reduce": (14, 4 + 4 * len(ACTIVATIONS))}
    assert space.primitives[4:4 + len(ACTIVATIONS)] == ["sep_conv_3x3"] + [f"sep_conv_3x3_{a}" for a in NON_DEFAULT]
    only_gelu = build_space(nb201_cfg(activations=["gelu"]))
    assert only_gelu.primitives == ["none", "skip_connect", "nor_conv_1x1_gelu", "nor_conv_3x3_gelu", "avg_pool_3x3"]


@pytest.mark.parametrize("preset, columns", [
    ("rdarts_s2", ["skip_connect", "sep_conv_3x3", "sep_conv_3x3_silu"]),
    ("rdarts_s3", ["none", "skip_connect", "sep_conv_3x3", "sep_conv_3x3_silu"]),
    ("rdarts_s4", ["noise", "sep_conv_3x3", "sep_conv_3x3_silu"]),
])
def test_robustdarts_uniform_spaces_take_the_activations(preset, columns):
    cfg = compose_config("search", [f"space={preset}", "space.activations=[relu,silu]"])
    assert build_space(cfg.space).primitives == columns


def test_robustdarts_s1_rows_are_taken_literally():
    cfg = compose_config("search", ["space=rdarts_s1", "space.activations=[relu,gelu]"]).space
    assert build_space(cfg).arch_shapes() == {"normal": (14, 2), "reduce": (14, 2)}   # the rows, not expanded
    cfg.edge_primitives.normal[0] = ["skip_connect", "dil_conv_3x3_gelu"]
    assert build_space(cfg).edge_ops()["normal"][0] == ("skip_connect", "dil_conv_3x3_gelu")
    cfg.activations = ["relu"]
    with pytest.raises(DartsError, match=r"normal\[0\].*unknown op 'dil_conv_3x3_gelu'; valid choices"):
        build_space(cfg)


# -- the fast path --------------------------------------------------------------------------------
@pytest.mark.parametrize("first, second", list(itertools.combinations(ACTIVATIONS.names(), 2)))
@pytest.mark.parametrize("stride", [1, 2])
def test_fused_mixed_op_equals_the_plain_one_with_two_activations(first, second, stride):
    primitives = SINGLE_OPS + expand_activations(ACTIVATED_OPS.names(), [first, second])
    plain, fused = mixed_op_pair(stride, primitives)
    calls = activation_calls(fused)
    assert_fused_equals_plain(plain, fused, torch.randn(3, 4, 7, 7, dtype=torch.float64))
    # The fused forward computed each activation once for all the ops that start with it (a stride-2
    # skip_connect is a FactorizedReduce that starts with ReLU, whatever the activations searched).
    computed = {}
    for name, seen in calls.items():
        activation = activation_of(name) or DEFAULT_ACTIVATION
        computed[activation] = computed.get(activation, 0) + len(seen)
    expected = {first, second} | ({DEFAULT_ACTIVATION} if stride == 2 else set())
    assert computed == {activation: 1 for activation in expected}


# -- genotypes and final networks ------------------------------------------------------------------
def test_a_darts_genotype_with_gelu_and_silu_round_trips_and_builds_those_modules():
    space = build_space(darts_cfg())   # the default [relu]: a searched genotype trains without activations
    text = str(GENOTYPE)
    assert "('sep_conv_3x3_gelu', 0)" in text
    assert space.parse_genotype(text) == GENOTYPE == Genotype.from_string(text)
    assert space.parse_genotype(GENOTYPE.to_json()) == GENOTYPE
    assert space.parse_genotype(json.dumps({"genotype": GENOTYPE.to_dict()})) == GENOTYPE
    torch.manual_seed(0)
    network = space.build_network(GENOTYPE, final_cfg(), num_classes=3, in_channels=3).eval()
    assert network(torch.randn(2, 3, 8, 8)).shape == (2, 3)
    cell_ops = [(name, op) for cell in network.cells for name, op in zip(cell.op_names, cell.ops)]
    for name, op in cell_ops:
        expected = ACTIVATIONS.get(activation_of(name) or "relu")
        if name in ("skip_connect", "max_pool_3x3", "avg_pool_3x3"):
            assert set(activation_modules(op)) <= {nn.ReLU}, name   # FactorizedReduce keeps ReLU
        else:
            assert set(activation_modules(op)) == {type(expected())}, name
    kinds = {kind for _, op in cell_ops for kind in activation_modules(op)}
    assert {nn.GELU, nn.SiLU, nn.ReLU} <= kinds


def test_an_nb201_genotype_with_activation_variants_round_trips_and_builds():
    space = build_space(nb201_cfg())
    genotype = space.parse_genotype(NB201_TEXT)
    assert str(genotype) == NB201_TEXT and genotype.edge_ops()[:2] == ("nor_conv_3x3_silu", "nor_conv_1x1_gelu")
    assert space.parse_genotype(genotype.to_json()) == genotype == NB201Genotype.from_dict({"arch_str": NB201_TEXT})
    network = space.build_network(genotype, final_cfg(), num_classes=3, in_channels=3).eval()
    assert network(torch.randn(2, 3, 8, 8)).shape == (2, 3)
    cell = network.cells[0]
    assert [activation_modules(op) for op in cell.ops[:2]] == [[nn.SiLU], [nn.GELU]]
    assert activation_modules(cell.ops[4]) == [nn.ReLU]


def test_the_op_set_check_ignores_the_activation_but_not_the_op():
    space = build_space(darts_cfg(primitives=["none", "skip_connect", "sep_conv_3x3", "max_pool_3x3"]))
    # sep_conv_3x3_gelu and _silu pass (sep_conv_3x3 is configured); the other convs and the avg pool do not.
    extra = "avg_pool_3x3, dil_conv_3x3_gelu, dil_conv_3x3_silu, dil_conv_5x5_gelu, dil_conv_5x5_silu, sep_conv_5x5, "
    with pytest.raises(DartsError, match=rf"op\(s\) {extra}sep_conv_5x5_silu not in the configured op set"):
        space.checked(GENOTYPE)


def test_collapse_counts_and_drawings_treat_a_variant_as_its_conv():
    counts = cell_op_counts(GENOTYPE.cell_graphs()["normal"])
    assert counts == {"skip_connects": 1, "parameter_free_ops": 3}   # skip, max pool, avg pool
    assert not is_parameter_free("sep_conv_3x3_hardswish") and is_parameter_free("skip_connect")
    for name, activation in itertools.product(ACTIVATED_OPS.names(), NON_DEFAULT):
        assert op_color(with_activation(name, activation)) == op_color(name)
    dot = cell_to_dot(GENOTYPE.cell_graphs()["normal"])
    assert 'label="sep_conv_3x3_gelu"' in dot and 'label="dil_conv_3x3_silu"' in dot


# -- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("activations, message", [
    (["relu", "swish2"], "space.activations: unknown activation 'swish2'; valid choices: relu, gelu, silu, hardswish"),
    (["gelu", "relu", "gelu"], "space.activations lists gelu more than once: .*relu, gelu, silu, hardswish"),
    ([], "space.activations must be a non-empty list of activations, got .*valid choices: relu, gelu"),
])
def test_bad_activations_are_one_readable_error(activations, message):
    for cfg in (darts_cfg(activations=activations), nb201_cfg(activations=activations)):
        with pytest.raises(DartsError, match=message):
            build_space(cfg)


def test_a_conv_named_with_and_without_its_activation_is_listed_twice():
    with pytest.raises(DartsError, match="lists an op twice: .*'sep_conv_3x3_gelu', 'sep_conv_3x3_gelu'"):
        build_space(darts_cfg(primitives=["sep_conv_3x3", "sep_conv_3x3_gelu"], activations=["relu", "gelu"]))


def test_the_recurrent_space_refuses_activations():
    cfg = OmegaConf.load(CONF_DIR / "space" / "darts_rnn.yaml")
    assert build_space(OmegaConf.merge(cfg, {"activations": ["relu"]})).primitives == list(cfg.primitives)
    with pytest.raises(DartsError, match=r"space.activations=\['relu', 'gelu'\] is for the image spaces.*tanh"):
        build_space(OmegaConf.merge(cfg, {"activations": ["relu", "gelu"]}))


# -- search, then final training -----------------------------------------------------------------------
def test_a_search_with_gelu_finds_a_genotype_that_trains(tmp_path):
    tiny = ["experiment=smoke", "deterministic=true", "dataset.num_train=32", "dataset.image_size=8",
            "fast.channels_last=false"]
    search_cfg = compose_config("search", [*tiny, "space.activations=[relu,gelu]", "search.epochs=1",
                                           "search.batch_size=8", "search.eval_max_batches=1"])
    searched = run_search(search_cfg, tmp_path / "search")
    expanded = expand_activations(list(search_cfg.space.primitives), ["relu", "gelu"])
    assert len(searched["alphas"]["alphas_normal"][0]) == len(expanded) == 12
    genotype = build_space(search_cfg.space).parse_genotype(searched["genotype_string"])
    assert genotype.ops() <= set(expanded) - {"none"}
    final_cfg_ = compose_config("final", [*tiny, f"genotype={tmp_path / 'search'}", "train.epochs=1",
                                          "train.batch_size=8"])
    assert "gelu" not in final_cfg_.space.activations   # final training composes the default [relu]
    trained = run_final(final_cfg_, tmp_path / "final")
    assert trained["genotype"] == genotype.to_dict() == read_json(tmp_path / "search" / "genotype.json")["genotype"]
    assert 0 <= trained["test_top1"] <= 100
    loaded = export.load(tmp_path / "final" / "model.pt")
    assert loaded.genotype == genotype
    # The exported network's GELU modules sit exactly in the ops the genotype names with gelu.
    named = [(name, op) for cell in loaded.cells for name, op in zip(cell.op_names, cell.ops)]
    assert [name for name, op in named if nn.GELU in activation_modules(op)] == [
        name for name, _ in named if activation_of(name) == "gelu"]
