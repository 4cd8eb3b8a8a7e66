"""GDAS-FRC's final network: the genotype whose ``reduce`` is None (the authors' GDAS_F1 form) round
trips through its string and JSON, builds the fixed reduction cell at both reduction positions (its
parameters counted by hand), drops paths per branch, exports, draws, and trains, also straight from a
gdas_frc search's genotype.json."""
import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from darts import export, viz
from darts.engine import run_final, run_search
from darts.errors import DartsError
from darts.spaces import build_space
from darts.spaces.darts_cnn.genotype import DARTS_V2, GDAS_F1, Genotype
from darts.spaces.darts_cnn.network import Cell, FinalFixedReductionCell, NetworkCIFAR, NetworkImageNet
from helpers import CONF_DIR, compose_config, read_json

GDAS_F1_NORMAL = [("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 0), ("sep_conv_3x3", 2),
                  ("skip_connect", 0), ("sep_conv_3x3", 2), ("skip_connect", 0), ("sep_conv_3x3", 2)]
# Their genotypes.py form (weights dropped), range() concats and all.
THEIR_TEXT = ("Genotype(normal=[('skip_connect', 0), ('skip_connect', 1), ('skip_connect', 0), ('sep_conv_3x3', 2), "
              "('skip_connect', 0), ('sep_conv_3x3', 2), ('skip_connect', 0), ('sep_conv_3x3', 2)], "
              "normal_concat=range(2, 6), reduce=None, reduce_concat=range(2, 6))")


# -- the genotype ---------------------------------------------------------------------------------
def test_frc_genotype_round_trips_through_string_and_json_and_ordinary_ones_read_as_before():
    space = build_space(OmegaConf.load(CONF_DIR / "space" / "darts.yaml"))
    assert space.resolve_genotype("GDAS_F1") == GDAS_F1 == space.parse_genotype(THEIR_TEXT)
    assert GDAS_F1.normal == tuple(GDAS_F1_NORMAL) and GDAS_F1.reduce is None and GDAS_F1.fixed_reduction
    assert str(GDAS_F1).endswith("normal_concat=[2, 3, 4, 5], reduce=None, reduce_concat=[2, 3, 4, 5])")
    assert space.parse_genotype(str(GDAS_F1)) == GDAS_F1
    assert json.loads(GDAS_F1.to_json())["reduce"] is None
    assert space.parse_genotype(GDAS_F1.to_json()) == GDAS_F1 == Genotype.from_dict(GDAS_F1.to_dict())
    assert space.parse_genotype(json.dumps({"genotype": GDAS_F1.to_dict(), "string": str(GDAS_F1)})) == GDAS_F1
    # A null or empty reduce_concat is the same fixed cell (it is not used), written back as [].
    bare = Genotype.from_dict({**GDAS_F1.to_dict(), "reduce_concat": None})
    assert bare.reduce_concat == () and bare.normal == GDAS_F1.normal and space.parse_genotype(str(bare)) == bare
    assert GDAS_F1.ops() == {"skip_connect", "sep_conv_3x3"}
    # Ordinary genotypes: the same string and JSON as before there was a fixed cell.
    assert str(DARTS_V2).startswith("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)")
    assert "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2)" in str(DARTS_V2)
    assert DARTS_V2.to_dict()["reduce"][0] == ["max_pool_3x3", 0] and not DARTS_V2.fixed_reduction
    assert space.parse_genotype(str(DARTS_V2)) == DARTS_V2 == space.parse_genotype(DARTS_V2.to_json())


@pytest.mark.parametrize("change, message", [
    ({"reduce_concat": [2, 7]}, "reduce_concat: invalid node index 7; valid 0..5"),
    ({"reduce": None, "normal": []}, "two (op, input) pairs per node"),
    ({"reduce_concat": None, "reduce": [["skip_connect", 0], ["skip_connect", 1]]}, "malformed genotype JSON"),
])
def test_bad_frc_genotypes_raise_one_readable_error(change, message):
    with pytest.raises(DartsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Genotype.from_dict({**GDAS_F1.to_dict(), **change})


# -- the network ----------------------------------------------------------------------------------
def conv(c_in, c_out, k=1, groups=1):
    return c_in // groups * c_out * k


def final_fixed_cell_params(c_pp, c_prev, C):
    """Transition (D-X-Y/GDAS lib/nas/construct_utils.py) in the final network, counted from its layers:
    two 1x1 preprocess convs (a factorised reduce has the same count) with affine BNs; per input a branch
    of a (1x3) and a (3x1) conv in 8 groups, an affine BN, a 1x1 conv, an affine BN (no conv biases); per
    input a max pool and an affine BN."""
    preprocess = conv(c_pp, C) + 2 * C + conv(c_prev, C) + 2 * C
    branch = 2 * conv(C, C, 3, groups=8) + 2 * C + conv(C, C) + 2 * C
    return preprocess + 2 * branch + 2 * (2 * C)


def params(module):
    return sum(p.numel() for p in module.parameters())


def test_frc_network_has_the_fixed_cell_at_both_reductions_with_its_hand_counted_parameters():
    torch.manual_seed(0)
    net = NetworkCIFAR(8, 10, 5, auxiliary=True, genotype=GDAS_F1)
    assert [type(cell) for cell in net.cells] == [Cell, FinalFixedReductionCell, Cell, FinalFixedReductionCell, Cell]
    # Stem 3C = 24; cell 0 -> 4 * 8 = 32; the first fixed cell at 16 channels (inputs 24, 32) -> 64; cell 2 -> 64;
    # the second at 32 channels (inputs 64, 64, after a reduction: a factorised reduce) -> 128.
    fixed = [params(cell) for cell in net.cells if isinstance(cell, FinalFixedReductionCell)]
    # 24*16 + 32*16 + 4*16 + 2*(2*96 + 16*16 + 4*16) + 4*16 = 2048; 2*64*32 + 4*32 + 2*(2*384 + 32*32 + 4*32) + 4*32.
    assert fixed == [final_fixed_cell_params(24, 32, 16), final_fixed_cell_params(64, 64, 32)] == [2048, 8192]
    # Everything else is the network an ordinary genotype with the same normal cell builds.
    ordinary = NetworkCIFAR(8, 10, 5, auxiliary=True, genotype=Genotype(GDAS_F1_NORMAL, [2, 3, 4, 5],
                                                                         GDAS_F1_NORMAL, [2, 3, 4, 5]))
    searched_reductions = sum(params(ordinary.cells[i]) for i in (1, 3))
    assert params(net) - sum(fixed) == params(ordinary) - searched_reductions
    net.train()
    logits, logits_aux = net(torch.randn(2, 3, 16, 16))
    assert logits.shape == logits_aux.shape == (2, 10)
    assert net.cells[1](torch.randn(2, 24, 16, 16), torch.randn(2, 32, 16, 16)).shape == (2, 64, 8, 8)


def test_gdas_f1_at_their_size_has_the_papers_parameter_count_and_imagenet_builds():
    # GDAS paper (Dong & Yang, CVPR 2019), Table 1: GDAS (FRC) on CIFAR-10, 2.5 M parameters (C 36, 20 cells).
    net = NetworkCIFAR(36, 10, 20, auxiliary=True, genotype=GDAS_F1)
    assert export.count_parameters(net) == 2_543_014 and round(2_543_014 / 1e6, 1) == 2.5
    imagenet = NetworkImageNet(16, 5, 5, auxiliary=False, genotype=GDAS_F1)
    assert [type(cell) for cell in imagenet.cells].count(FinalFixedReductionCell) == 2
    assert imagenet.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_fixed_cell_drops_each_branch_with_its_own_mask_in_training_only():
    torch.manual_seed(0)
    cell = FinalFixedReductionCell(8, 8, 8, reduction_prev=False)
    s0, s1 = torch.randn(64, 8, 4, 4), torch.randn(64, 8, 4, 4)
    cell.train()
    kept = cell.branches(s0, s1)   # train-mode BN statistics of this batch, as in the forward
    out = cell(s0, s1, drop_prob=0.5, generator=torch.Generator().manual_seed(1)).detach()
    dropped = torch.stack([(part.flatten(1) == 0).all(1) for part in out.split(8, dim=1)])   # (branches, N)
    assert 0 < dropped.float().mean() < 1 and not all(torch.equal(dropped[0], row) for row in dropped[1:])
    for index, part in enumerate(out.split(8, dim=1)):
        alive = ~dropped[index]
        torch.testing.assert_close(part[alive], kept[index].detach()[alive] / 0.5)
    cell.eval()
    torch.testing.assert_close(cell(s0, s1, drop_prob=0.5), torch.cat(cell.branches(s0, s1), 1))


def test_frc_network_exports_loads_and_draws_its_normal_cell_only(tmp_path):
    torch.manual_seed(0)
    net = NetworkCIFAR(8, 10, 5, auxiliary=False, genotype=GDAS_F1).eval()
    export.save(net, tmp_path / "model.pt")
    loaded = export.load(tmp_path / "model.pt")
    assert loaded.genotype == GDAS_F1 and type(loaded.cells[1]) is FinalFixedReductionCell
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
    drawn = viz.draw_genotype(GDAS_F1, tmp_path / "cells")
    assert set(drawn) <= {"normal"} and sorted(p.name for p in (tmp_path / "cells").glob("*.dot")) == ["normal.dot"]


# -- training -------------------------------------------------------------------------------------
def final_config(*overrides):
    return compose_config("final", ["experiment=smoke", "deterministic=true", "train.max_steps_per_epoch=2",
                                    "train.epochs=1", *overrides])


def test_smoke_final_training_of_gdas_f1(tmp_path):
    results = run_final(final_config("genotype=GDAS_F1", "train.C=8"), tmp_path)
    assert results["genotype"] == GDAS_F1.to_dict() and results["genotype_string"] == str(GDAS_F1)
    assert math.isfinite(results["train_loss"]) and 0 <= results["test_top1"] <= 100
    model = export.load(tmp_path / "model.pt")
    assert [type(cell) for cell in model.cells].count(FinalFixedReductionCell) == 2
    assert read_json(tmp_path / "genotype.json")["genotype"]["reduce"] is None
    assert not (tmp_path / "cells" / "reduce.dot").exists() and (tmp_path / "cells" / "normal.dot").is_file()


def test_gdas_frc_search_then_final_training_of_its_genotype_json(tmp_path):
    search = run_search(compose_config("search", ["experiment=smoke", "strategy=gdas_frc", "search.epochs=1",
                                                  "dataset.num_train=32", "deterministic=true", "space.C=4"]),
                        tmp_path / "search")
    saved = read_json(tmp_path / "search" / "genotype.json")
    assert saved["genotype"]["reduce"] is None and saved["string"] == search["genotype_string"]
    final = run_final(final_config(f"genotype={tmp_path / 'search' / 'genotype.json'}"), tmp_path / "final")
    assert final["genotype"] == saved["genotype"] and math.isfinite(final["train_loss"])
    model = export.load(tmp_path / "final" / "model.pt")
    assert [type(cell) for cell in model.cells] == [Cell, FinalFixedReductionCell, FinalFixedReductionCell]
