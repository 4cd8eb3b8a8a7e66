"""The NAS-Bench-201 space: genotype strings, derivation, macro network size, search and final training."""
import pytest
import torch

from darts import model as networks
from darts.errors import DartsError
from darts.genotypes import parse_genotype, resolve_genotype
from darts.nb201 import NB201_PRIMITIVES, NB201Genotype, NB201Network, NB201SuperNet
from darts.search import run_search
from darts.train import run_final
from helpers import compose_config, read_json

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
STRINGS = [
    BEST,
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|",
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
    "|skip_connect~0|+|none~0|avg_pool_3x3~1|+|nor_conv_1x1~0|none~1|skip_connect~2|",
]


@pytest.mark.parametrize("text", STRINGS)
def test_nb201_strings_round_trip_through_every_format(text):
    genotype = NB201Genotype.from_string(text)
    assert str(genotype) == text and genotype.steps == 3
    assert parse_genotype(text) == genotype == resolve_genotype(text)
    assert parse_genotype(genotype.to_json()) == genotype
    assert NB201Genotype.from_dict({"arch_str": text}) == genotype
    assert resolve_genotype('{"genotype": {"nb201": "%s"}, "string": "%s"}' % (text, text)) == genotype


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


def test_derivation_is_the_per_edge_argmax_over_all_ops_including_none():
    model = NB201SuperNet(C=4, num_classes=3, N=1)
    chosen = [0, 3, 1, 4, 2, 0]  # none on 1<-0 and 3<-2
    alphas = torch.zeros(6, 5)
    for edge, op in enumerate(chosen):
        alphas[edge, op] = 1.0
    alphas[5, 3] = 1.0  # a tie on 3<-2 goes to the lower op index (none)
    with torch.no_grad():
        model.alphas_normal.copy_(alphas)
    expected = "|none~0|+|nor_conv_3x3~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"
    assert str(model.genotype()) == expected
    assert model.softmax_weights()["normal"].shape == (6, 5)
    assert [id(p) for p in model.arch_parameters()] == [id(model.alphas_normal)] and model.cell_types == ("normal",)


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
    assert networks.count_parameters(net) == expected
    small = NB201Network(C=4, num_classes=7, N=1, genotype=NB201Genotype.from_string(STRINGS[3]), in_channels=1)
    x = torch.randn(2, 1, 8, 8)
    logits, aux = small.train()(x)
    assert logits.shape == (2, 7) and aux is None
    assert small.eval()(x).shape == (2, 7)
    supernet = NB201SuperNet(C=4, num_classes=7, N=1, in_channels=1)
    assert supernet(x).shape == (2, 7)
    with pytest.raises(DartsError, match="NB201 genotype"):
        NB201Network(C=4, num_classes=7, N=1, genotype=networks.Genotype.from_dict(
            {"normal": [["skip_connect", 0]] * 8, "normal_concat": [2, 3, 4, 5],
             "reduce": [["skip_connect", 0]] * 8, "reduce_concat": [2, 3, 4, 5]}))


def test_export_and_load_round_trip(tmp_path):
    net = NB201Network(C=4, num_classes=5, N=1, genotype=NB201Genotype.from_string(STRINGS[1]))
    net.eval()
    networks.save(net, tmp_path / "model.pt")
    loaded = networks.load(tmp_path / "model.pt")
    assert isinstance(loaded, NB201Network) and loaded.genotype == net.genotype and loaded.config == net.config
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(loaded(x), net(x))


SEARCH = ["experiment=smoke", "space=nb201", "space.C=4", "space.N=1", "search.epochs=1", "dataset.num_train=32",
          "deterministic=true"]


def test_search_in_the_nb201_space_writes_nb201_alphas_genotype_and_drawing(tmp_path):
    # Every strategy's smoke search in this space is in test_strategies.py; this checks what is NB201's own.
    results = run_search(compose_config("search", [*SEARCH, "strategy=darts"]), tmp_path / "run")
    genotype = NB201Genotype.from_dict(results["genotype"])
    assert results["genotype_string"] == str(genotype)
    assert set(results["alphas"]) == {"alphas_normal"} and list(results["softmax_weights"]) == ["normal"]
    assert resolve_genotype(str(tmp_path / "run")) == genotype
    assert (tmp_path / "run" / "cells" / "cell.png").is_file()


def test_final_training_of_an_nb201_genotype(tmp_path):
    cfg = compose_config("final", ["experiment=smoke", "deterministic=true", "space=nb201", "train.network=nb201",
                                   f"genotype='{STRINGS[3]}'", "train.C=4", "train.N=1", "train.epochs=1",
                                   "train.auxiliary=false", "train.drop_path_prob=0", "train.cutout=0",
                                   "dataset.num_train=32", "train.optimizer.nesterov=true"])
    results = run_final(cfg, tmp_path / "run")
    assert results["network"] == "nb201" and results["genotype_string"] == STRINGS[3]
    loaded = networks.load(tmp_path / "run" / "model.pt")
    assert isinstance(loaded, NB201Network) and str(loaded.genotype) == STRINGS[3]
    assert read_json(tmp_path / "run" / "genotype.json")["genotype"] == {"nb201": STRINGS[3]}


def test_the_nb201_preset_carries_the_published_recipe():
    cfg = compose_config("final", ["experiment=nb201_cifar10"])
    train = cfg.train
    assert (train.network, train.C, train.N, train.epochs, train.batch_size) == ("nb201", 16, 5, 200, 256)
    assert dict(train.optimizer) == {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "grad_clip": None,
                                     "nesterov": True}
    assert not train.auxiliary and train.drop_path_prob == 0 and train.cutout == 0
    assert list(cfg.space.primitives) == list(NB201_PRIMITIVES)
    assert str(resolve_genotype(cfg.genotype)) == BEST
