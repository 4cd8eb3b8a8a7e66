"""DrNAS as its authors' code runs it (xiangning-chen/DrNAS): the derivation from softmax(alpha), the
warm-up, partial channels, no `none` in the DARTS-space presets, and the presets' published settings."""
import pytest
import torch
from omegaconf import OmegaConf

from darts.errors import DartsError
from darts.runtime import Runtime
from darts.spaces import build_space
from darts.strategies import build_strategy
from darts.strategies.pcdarts import PartialChannelMixedOp
from helpers import compose_config

TWO_OPS = ["skip_connect", "sep_conv_3x3"]
OPTIM = OmegaConf.create(dict(weights=dict(lr=0.1, lr_min=0.0, momentum=0.9, weight_decay=3e-4, grad_clip=5.0),
                              alphas=dict(lr=0.01, betas=[0.5, 0.999], weight_decay=1e-3)))


def make(primitives, **options):
    torch.manual_seed(0)
    space = build_space(OmegaConf.create(dict(name="darts", primitives=primitives, C=4, layers=3, steps=4,
                                              multiplier=4, stem_multiplier=3)))
    strategy = build_strategy(OmegaConf.create(dict(name="drnas", **options)))
    model = strategy.build_supernet(space, 4, 3)
    strategy.setup(space, model, OPTIM, epochs=2, steps_per_epoch=2, runtime=Runtime(torch.device("cpu"),
                                                                                      channels_last=False))
    return strategy, model


def test_genotype_ranks_edges_on_softmax_alpha_as_their_genotype_does():
    """Node 1 (edges 2, 3, 4). Alphas [skip, sep3]: edge 2 [3, 0], edge 3 [0, -2.5], edge 4 [2.7, 0].
    softmax max: 0.953, 0.924, 0.937 -> edges 2 and 4 (their genotype(): softmax, sort by the row max).
    The Dirichlet mean (elu + 1 normalised) would rank 0.8, 0.924, 0.787 -> edges 3 and 2."""
    strategy, _ = make(TWO_OPS)
    alphas = torch.zeros(14, 2)
    alphas[2] = torch.tensor([3.0, 0.0])
    alphas[3] = torch.tensor([0.0, -2.5])
    alphas[4] = torch.tensor([2.7, 0.0])
    with torch.no_grad():
        strategy.arch.alphas_normal.copy_(alphas)
        strategy.arch.alphas_reduce.copy_(alphas)
    genotype = strategy.genotype()
    assert genotype.normal[2:4] == genotype.reduce[2:4] == (("skip_connect", 0), ("skip_connect", 2))
    torch.testing.assert_close(strategy.mixing_weights()["normal"], torch.softmax(alphas.double(), -1))


def test_warmup_leaves_the_concentrations_untouched_then_alphas_move():
    strategy, _ = make(TWO_OPS, warmup_epochs=1)
    before = {k: v.detach().clone() for k, v in strategy.arch.alphas().items()}
    torch.manual_seed(1)
    batch = (torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4,)))
    metrics = strategy.step(batch, iter([batch]), epoch=0)
    assert "alpha_loss_sum" not in metrics
    for cell, alpha in strategy.arch.alphas().items():
        assert torch.equal(alpha.detach(), before[cell])
    metrics = strategy.step(batch, iter([batch]), epoch=1)
    assert "alpha_loss_sum" in metrics
    assert any(not torch.equal(a.detach(), before[c]) for c, a in strategy.arch.alphas().items())


def test_partial_channels_build_pc_darts_edges_without_edge_betas():
    strategy, model = make(TWO_OPS, partial_channels=2)
    edge = model.cells[0].edges[0]
    assert isinstance(edge, PartialChannelMixedOp) and edge.C_partial == 2
    assert not strategy.arch.has_betas
    with pytest.raises(DartsError, match="partial_channels must be a positive integer"):
        build_strategy(OmegaConf.create(dict(name="drnas", partial_channels=0)))
    with pytest.raises(DartsError, match="warmup_epochs must be an integer >= 0"):
        build_strategy(OmegaConf.create(dict(name="drnas", warmup_epochs=-1)))


def test_darts_space_preset_holds_their_train_search_settings_without_none():
    cfg = compose_config("search", ["experiment=drnas"])
    assert "none" not in cfg.space.primitives and len(cfg.space.primitives) == 7
    assert (cfg.space.C, cfg.space.layers, cfg.search.epochs, cfg.search.batch_size) == (36, 20, 50, 64)
    assert (cfg.optim.weights.lr, cfg.optim.weights.lr_min, cfg.optim.alphas.lr) == (0.1, 0.0, 6e-4)
    assert cfg.optim.alphas.weight_decay == 1e-3 and list(cfg.optim.alphas.betas) == [0.5, 0.999]
    strategy = build_strategy(cfg.strategy)
    assert [(s.epochs, s.keep_ops, s.options["partial_channels"]) for s in strategy.stages] == [(25, 7, 6), (25, 4, 4)]
    assert strategy.warmup_epochs == 10 and cfg.fast.enabled is False and cfg.deterministic is True


def test_nb201_and_final_presets_hold_their_settings():
    cfg = compose_config("search", ["experiment=drnas_nb201"])
    assert cfg.space.name == "nb201" and "none" in cfg.space.primitives     # their NAS_BENCH_201 keeps it
    assert (cfg.search.epochs, cfg.optim.weights.lr, cfg.optim.weights.lr_min, cfg.optim.alphas.lr) == (
        100, 0.025, 0.001, 3e-4)
    strategy = build_strategy(cfg.strategy)
    assert strategy.stages == () and strategy.partial_channels == 1 and strategy.warmup_epochs == 0
    final = compose_config("final", ["experiment=drnas_final"])
    assert (final.train.batch_size, final.train.drop_path_prob, final.train.epochs) == (64, 0.3, 600)
    genotype = build_space(final.space).resolve_genotype(final.genotype)
    assert genotype.normal[0] == ("sep_conv_3x3", 0) and genotype.reduce[-2] == ("skip_connect", 4)
