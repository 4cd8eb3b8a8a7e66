"""The NAS-Bench-201 space: genotype strings, derivation, macro network size, search and final training."""
import pytest
import torch
from omegaconf import OmegaConf

from darts.errors import DartsError
from darts.export import count_parameters, load
from darts.engine import run_final, run_search
from darts.runtime import Runtime
from darts.spaces import EdgeWeights, NB201Space, build_space
from darts.spaces.darts_cnn.genotype import Genotype
from darts.spaces.nb201.genotype import NB201_PRIMITIVES, NB201Genotype
from darts.spaces.nb201.network import NB201Network
from darts.spaces.nb201.supernet import NB201SuperNet
from darts.strategies import build_strategy
from helpers import compose_config, read_json

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
STRINGS = [
    BEST,
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|",
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
    "|skip_connect~0|+|none~0|avg_pool_3x3~1|+|nor_conv_1x1~0|none~1|skip_connect~2|",
]
OPTIM = OmegaConf.create(dict(weights=dict(lr=0.1, lr_min=0.0, momentum=0.9, weight_decay=3e-4, grad_clip=5.0),
                              alphas=dict(lr=3e-4, betas=[0.5, 0.999], weight_decay=1e-3)))


def nb201_space(C=4, N=1, primitives=NB201_PRIMITIVES) -> NB201Space:
    space = build_space(OmegaConf.create(dict(name="nb201", primitives=list(primitives), C=C, N=N)))
    assert isinstance(space, NB201Space)
    return space


@pytest.mark.parametrize("text", STRINGS)
def test_nb201_strings_round_trip_through_every_format(text):
    space = nb201_space()
    genotype = NB201Genotype.from_string(text)
    assert str(genotype) == text and genotype.steps == 3
    assert space.parse_genotype(text) == genotype == space.resolve_genotype(text)
    assert space.parse_genotype(genotype.to_json()) == genotype
    assert space.parse_genotype_dict(genotype.to_dict()) == genotype
    assert NB201Genotype.from_dict({"arch_str": text}) == genotype
    assert space.resolve_genotype('{"genotype": {"nb201": "%s"}, "string": "%s"}' % (text, text)) == genotype


@pytest.mark.parametrize("text", [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|",                              # two nodes
    "|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|",       # node 1 reads itself
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~0|+|none~0|none~1|none~2|",       # input listed twice
    "|sep_conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|",                       # unknown op
    "|nor_conv_3x3|+|none~0|none~1|+|none~0|none~1|none~2|",                         # no ~input
    "nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|",                        # missing bar
    "|none~0|+|none~0|none~x|+|none~0|none~1|none~2|",                               # input not a number
])
def test_invalid_nb201_strings_are_rejected(text):
    with pytest.raises(DartsError):
        NB201Genotype.from_string(text)
    with pytest.raises(DartsError):
        nb201_space().parse_genotype(text)


def test_the_space_rejects_other_spaces_genotypes_and_ops_outside_its_set():
    with pytest.raises(DartsError):
        nb201_space().resolve_genotype("DARTS_V2")  # no cross-space guessing
    with pytest.raises(DartsError, match="nor_conv_3x3 not in the configured op set"):
        nb201_space(primitives=["none", "skip_connect", "nor_conv_1x1"]).parse_genotype(BEST)


def test_derivation_is_the_per_edge_argmax_over_all_ops_including_none():
    space = nb201_space()
    assert space.cell_types == ("normal",) and space.arch_shapes() == {"normal": (6, 5)}
    strategy = build_strategy(OmegaConf.create(dict(name="darts", order=1)))
    model = strategy.build_supernet(space, 3, 3)
    strategy.setup(space, model, OPTIM, epochs=1, steps_per_epoch=1, runtime=Runtime(torch.device("cpu")))
    chosen = [0, 3, 1, 4, 2, 0]  # none on 1<-0 and 3<-2
    alphas = torch.zeros(6, 5)
    for edge, op in enumerate(chosen):
        alphas[edge, op] = 1.0
    alphas[5, 3] = 1.0  # a tie on 3<-2 goes to the lower op index (none)
    with torch.no_grad():
        strategy.arch.alphas_normal.copy_(alphas)
    expected = "|none~0|+|nor_conv_3x3~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"
    assert str(strategy.genotype()) == expected
    assert str(space.derive({"normal": torch.softmax(alphas, -1)})) == expected
    assert strategy.mixing_weights()["normal"].shape == (6, 5)
    assert [id(p) for p in strategy.arch_parameters()] == [id(strategy.arch.alphas_normal)]


def published_parameter_count(genotype: NB201Genotype, C: int, N: int, num_classes: int) -> int:
    """The benchmark's network, counted from its definition (conv weights without bias, BN: 2 per channel)."""
    def cell(width):
        per_op = {"nor_conv_3x3": 9 * width * width + 2 * width, "nor_conv_1x1": width * width + 2 * width}
        return sum(per_op.get(op, 0) for op in genotype.edge_ops())

    def residual(c_in, c_out):  # conv_a 3x3 stride 2 + BN, conv_b 3x3 + BN, shortcut avgpool + 1x1 conv
        return (9 * c_in * c_out + 2 * c_out) + (9 * c_out * c_out + 2 * c_out) + c_in * c_out

    stem = 3 * 9 * C + 2 * C
    cells = N * (cell(C) + cell(2 * C) + cell(4 * C))
    lastact = 2 * 4 * C
    classifier = 4 * C * num_classes + num_classes
    return stem + cells + residual(C, 2 * C) + residual(2 * C, 4 * C) + lastact + classifier


def test_final_network_size_matches_the_published_architecture_and_outputs_have_the_contract_shapes():
    genotype = NB201Genotype.from_string(BEST)
    net = NB201Network(C=16, num_classes=10, N=5, genotype=genotype)
    expected = published_parameter_count(genotype, 16, 5, 10)
    assert expected == 1_288_506
    assert count_parameters(net) == expected
    small = NB201Network(C=4, num_classes=7, N=1, genotype=NB201Genotype.from_string(STRINGS[3]), in_channels=1)
    x = torch.randn(2, 1, 8, 8)
    logits, aux = small.train()(x)
    assert logits.shape == (2, 7) and aux is None
    assert small.eval()(x).shape == (2, 7)
    supernet = nb201_space().build_supernet(7, 1)
    assert isinstance(supernet, NB201SuperNet)
    arch = {"normal": EdgeWeights(torch.softmax(torch.randn(6, 5), -1))}
    assert supernet(x, arch).shape == (2, 7)
    with pytest.raises(DartsError, match="NB201 genotype"):
        NB201Network(C=4, num_classes=7, N=1, genotype=Genotype.from_dict(
            {"normal": [["skip_connect", 0]] * 8, "normal_concat": [2, 3, 4, 5],
             "reduce": [["skip_connect", 0]] * 8, "reduce_concat": [2, 3, 4, 5]}))


def test_supernet_with_one_hot_weights_computes_the_final_cell():
    # Every search cell under one-hot weights, run one op per edge, is the discrete cell of that genotype
    # (affine-free BN in the supernet: the final network's BN at its initial weight 1 and bias 0).
    space = nb201_space()
    genotype = NB201Genotype.from_string(STRINGS[1])
    ops = [space.primitives.index(op) for op in genotype.edge_ops()]
    torch.manual_seed(0)
    supernet = space.build_supernet(5, 3)
    network = NB201Network(C=4, num_classes=5, N=1, genotype=genotype)
    supernet_state = supernet.state_dict()
    for key, value in network.state_dict().items():
        mapped = key
        if ".ops." in key:  # the final cell's edge k is the supernet edge k's op of that genotype
            cell, rest = key.split(".ops.")
            edge, tail = rest.split(".", 1)
            mapped = f"{cell}.edges.{edge}.ops.{ops[int(edge)]}.{tail}"
        if mapped in supernet_state:
            value.copy_(supernet_state[mapped])
        else:
            assert key.endswith((".weight", ".bias")) and ".ops." in key  # the final BN's affine parameters
    one_hot = torch.nn.functional.one_hot(torch.tensor(ops), 5).float()
    x = torch.randn(4, 3, 8, 8)
    supernet.eval(), network.eval()
    with torch.no_grad():
        torch.testing.assert_close(supernet(x, {"normal": EdgeWeights(one_hot, ops)}), network(x))
        torch.testing.assert_close(supernet(x, {"normal": EdgeWeights(one_hot)}), network(x))


SEARCH = ["experiment=smoke", "space=nb201", "space.C=4", "space.N=1", "search.epochs=1", "dataset.num_train=32",
          "deterministic=true"]


def test_search_in_the_nb201_space_writes_nb201_alphas_genotype_and_drawing(tmp_path):
    # Every strategy's smoke search in this space is in test_strategies.py; this checks what is NB201's own.
    cfg = compose_config("search", [*SEARCH, "strategy=darts"])
    results = run_search(cfg, tmp_path / "run")
    space = build_space(cfg.space)
    genotype = NB201Genotype.from_dict(results["genotype"])
    assert results["space"] == "nb201" and results["genotype_string"] == str(genotype)
    assert set(results["alphas"]) == {"alphas_normal"} and list(results["softmax_weights"]) == ["normal"]
    alphas = torch.tensor(results["alphas"]["alphas_normal"])
    assert alphas.shape == (6, 5)
    torch.testing.assert_close(torch.tensor(results["softmax_weights"]["normal"]), torch.softmax(alphas, -1))
    assert space.derive({"normal": torch.softmax(alphas, -1)}) == genotype
    assert space.resolve_genotype(str(tmp_path / "run")) == genotype
    assert (tmp_path / "run" / "cells" / "cell.png").is_file()


def test_final_training_of_an_nb201_genotype(tmp_path):
    cfg = compose_config("final", ["experiment=smoke", "deterministic=true", "space=nb201", "train.network=nb201",
                                   f"genotype='{STRINGS[3]}'", "train.C=4", "train.N=1", "train.epochs=1",
                                   "train.auxiliary=false", "train.drop_path_prob=0", "train.cutout=0",
                                   "dataset.num_train=32", "train.optimizer.nesterov=true"])
    results = run_final(cfg, tmp_path / "run")
    assert results["network"] == "nb201" and results["genotype_string"] == STRINGS[3]
    loaded = load(tmp_path / "run" / "model.pt")
    assert isinstance(loaded, NB201Network) and str(loaded.genotype) == STRINGS[3]
    assert read_json(tmp_path / "run" / "genotype.json")["genotype"] == {"nb201": STRINGS[3]}


def test_the_nb201_preset_builds_the_benchmarks_best_cell_network():
    # Through the space, as train_final.py does: the preset's genotype and train block give the
    # benchmark's network of its best CIFAR-10 cell (1,288,506 parameters, counted above).
    cfg = compose_config("final", ["experiment=nb201_cifar10"])
    space = build_space(cfg.space)
    genotype = space.resolve_genotype(cfg.genotype)
    network = space.build_network(genotype, cfg.train, num_classes=10, in_channels=3)
    assert isinstance(network, NB201Network) and str(genotype) == BEST
    assert count_parameters(network) == published_parameter_count(genotype, 16, 5, 10) == 1_288_506
