"""SDARTS-RS, SDARTS-ADV and DARTS-: the perturbations and their bounds, the schedules, the auxiliary
skip path against a plain supernet, and a smoke search of every preset in both spaces."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import OmegaConf

from darts.engine import run_search
from darts.ops import FactorizedReduce
from darts.runtime import Runtime
from darts.spaces import MixedOp, build_space
from darts.spaces.darts_cnn.genotype import PRIMITIVES
from darts.spaces.darts_cnn.supernet import SearchCell
from darts.spaces.mixed import EdgeWeights
from darts.strategies import build_strategy
from darts.strategies.darts_minus import AuxiliarySkipMixedOp, beta_schedule
from darts.strategies.sdarts import project_rows
from helpers import compose_config
from test_strategies import batches

DARTS_SPACE = OmegaConf.create(dict(name="darts", primitives=list(PRIMITIVES), C=4, layers=3, steps=4, multiplier=4,
                                    stem_multiplier=3))
NB201_SPACE = OmegaConf.create(dict(name="nb201", primitives=["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3",
                                                              "avg_pool_3x3"], C=4, N=1))
OPTIM = OmegaConf.create(dict(weights=dict(lr=0.1, lr_min=0.0, momentum=0.9, weight_decay=3e-4, grad_clip=5.0),
                              alphas=dict(lr=0.01, betas=[0.5, 0.999], weight_decay=1e-3)))
CPU = torch.device("cpu")


def make(name, space_cfg=DARTS_SPACE, epochs=2, model=None, seed=0, **options):
    """A strategy set up on a fresh tiny supernet (or on ``model``), at epoch 0 of ``epochs``."""
    torch.manual_seed(seed)
    space = build_space(space_cfg)
    strategy = build_strategy(OmegaConf.create(dict(name=name, **options)))
    model = model if model is not None else strategy.build_supernet(space, 4, 3)
    strategy.setup(space, model, OPTIM, epochs=epochs, steps_per_epoch=2, runtime=Runtime(CPU, channels_last=False))
    strategy.start_epoch(0)
    return strategy, model


def assert_distributions(rows):
    assert (rows >= 0).all() and (rows <= 1).all()
    torch.testing.assert_close(rows.sum(-1), torch.ones(rows.shape[0]))


# -- SDARTS ------------------------------------------------------------------------------------------
def test_projection_clamps_renormalises_and_revives_an_empty_row_at_its_argmax():
    rows = torch.tensor([[0.5, -0.2, 0.9], [-0.1, -0.3, -0.05], [1.4, 0.2, 0.1]])
    expected = torch.tensor([[0.5 / 1.4, 0.0, 0.9 / 1.4], [0.0, 0.0, 1.0], [1.0 / 1.3, 0.2 / 1.3, 0.1 / 1.3]])
    torch.testing.assert_close(project_rows(rows), expected)


@pytest.mark.parametrize("name", ["sdarts_rs", "sdarts_adv"])
def test_epsilon_rises_linearly_with_the_epoch_and_is_recorded(name):
    strategy, _ = make(name, epochs=10)
    for epoch, expected in ((0, 0.03), (5, 0.03 + 0.27 * 5 / 10), (9, 0.03 + 0.27 * 9 / 10)):
        strategy.start_epoch(epoch)
        assert strategy.epsilon == pytest.approx(expected)
        assert strategy.learning_rates()["sdarts/epsilon"] == pytest.approx(expected)


def test_random_smoothing_adds_bounded_uniform_noise_then_projects():
    strategy, _ = make("sdarts_rs", epochs=4)
    strategy.start_epoch(3)
    eps = 0.03 + 0.27 * 3 / 4
    clean = strategy.clean_weights()
    state = strategy.generator.get_state()
    rows = strategy.random_weights(clean)
    strategy.generator.set_state(state)   # the same draw again, to see it before the projection
    for cell, edge_weights in clean.items():
        softmax = torch.softmax(strategy.arch.alphas()[cell].detach(), -1)
        torch.testing.assert_close(edge_weights.weights, softmax)
        noise = strategy.uniform_noise(edge_weights.weights)
        assert noise.abs().max() <= eps and noise.abs().max() > 0.9 * eps and noise.min() < 0 < noise.max()
        torch.testing.assert_close(rows[cell], project_rows(softmax + noise))
        assert_distributions(rows[cell])
        assert not torch.allclose(rows[cell], softmax)


class DistanceNet(nn.Module):
    """A stand-in supernet whose loss is a known function of the mixing weights: logits (N, 2) =
    [0, 50 * sum_cells ||w - centre||^2] + bias. With target 0 the loss grows with the distance from the
    centre; with target 1 the centre is its maximum. Records the train/eval mode of every forward."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(2))
        self.centre, self.modes = None, []

    def forward(self, x, arch):
        self.modes.append(self.training)
        distance = sum(((arch[cell].weights - self.centre[cell]) ** 2).sum() for cell in arch)
        logits = torch.stack([torch.zeros_like(distance), 50.0 * distance]) + self.bias
        return logits.expand(x.shape[0], 2)


def distance_setup(epochs=2):
    strategy, model = make("sdarts_adv", model=DistanceNet(), epochs=epochs)
    model.centre = {cell: w.weights for cell, w in strategy.clean_weights().items()}
    return strategy, model


def eval_loss(model, arch, batch):
    model.eval()
    with torch.no_grad():
        loss = F.cross_entropy(model(batch[0], arch), batch[1])
    model.train()
    return loss


def test_the_attack_raises_the_training_loss_in_eval_mode_and_spares_the_weights():
    strategy, model = distance_setup()
    batch = (torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))   # target 0: farther = worse
    clean = strategy.clean_weights()
    rows, metrics = strategy.adversarial_weights(batch, clean)
    # One clean pass, the pgd_steps ascents and the attacked pass, all in eval mode; train mode after.
    assert model.modes == [False] * 9 and model.training
    attacked = {cell: EdgeWeights(rows[cell]) for cell in rows}
    assert eval_loss(model, attacked, batch) > eval_loss(model, clean, batch) + 1e-3
    torch.testing.assert_close(metrics["adv_loss_sum"] / 4, eval_loss(model, attacked, batch))
    for cell in rows:
        assert_distributions(rows[cell])
        assert not torch.allclose(rows[cell], clean[cell].weights)
    assert model.bias.grad is None


def test_the_attack_falls_back_to_the_clean_weights_when_it_lowers_the_loss():
    strategy, model = distance_setup()
    batch = (torch.zeros(4, 3, 8, 8), torch.ones(4, dtype=torch.long))    # target 1: the centre is the maximum
    clean = strategy.clean_weights()
    rows, metrics = strategy.adversarial_weights(batch, clean)
    for cell in rows:
        torch.testing.assert_close(rows[cell], clean[cell].weights, rtol=0, atol=0)
    torch.testing.assert_close(metrics["adv_loss_sum"] / 4, eval_loss(model, clean, batch))


def test_a_search_step_attacks_in_eval_mode_between_the_alpha_and_the_weight_step():
    strategy, model = distance_setup()
    batch = (torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))
    strategy.step(batch, iter([batch]), epoch=0)
    assert model.modes == [True] + [False] * 9 + [True]


def test_one_ascent_step_is_a_sign_step_clipped_to_the_ball_then_projected():
    strategy, model = make("sdarts_adv")
    batch = batches(1)[0]
    eps, step = 0.1, 0.08
    clean = strategy.clean_weights()
    anchor = {cell: w.weights for cell, w in clean.items()}
    gen = torch.Generator().manual_seed(5)
    point = {cell: project_rows(a + torch.empty(a.shape).uniform_(-eps, eps, generator=gen))
             for cell, a in anchor.items()}
    model.eval()
    stepped = strategy.ascent_step(batch, clean, anchor, point, eps, step)
    leaves = {cell: p.clone().requires_grad_(True) for cell, p in point.items()}
    loss = F.cross_entropy(model(batch[0], {cell: EdgeWeights(leaf) for cell, leaf in leaves.items()}), batch[1])
    grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
    model.train()
    for cell in anchor:
        moved = point[cell] + step * grads[cell].sign()
        assert (moved - anchor[cell]).abs().max() > eps          # the step leaves the ball: the clip matters
        inside = anchor[cell] + (moved - anchor[cell]).clamp(-eps, eps)
        assert (inside - anchor[cell]).abs().max() <= eps + 1e-7
        torch.testing.assert_close(stepped[cell], project_rows(inside))
        assert not torch.allclose(stepped[cell], project_rows(moved))
        assert_distributions(stepped[cell])


def test_the_attack_leaves_batchnorm_statistics_and_weight_gradients_alone():
    strategy, model = make("sdarts_adv")
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    rows, _ = strategy.adversarial_weights(batches(1)[0], strategy.clean_weights())
    assert all(torch.equal(buffers[name], b) for name, b in model.named_buffers())
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(a.grad is None for a in strategy.alphas)


@pytest.mark.parametrize("name", ["sdarts_rs", "sdarts_adv"])
def test_the_perturbed_weight_step_moves_the_weights_and_not_the_alphas(name):
    plain, plain_model = make("darts")
    smooth, smooth_model = make(name)
    for a, b in zip(plain.alphas, smooth.alphas):
        assert torch.equal(a, b)
    data = batches(2)
    plain.step(data[0], iter(data[1:]), epoch=0)
    weights_before = [p.detach().clone() for p in smooth_model.parameters()]
    smooth.step(data[0], iter(data[1:]), epoch=0)
    alphas_after_alpha_step = [a.detach().clone() for a in smooth.alphas]
    # Same alpha step as DARTS; the weight step did not touch them.
    for a, b in zip(plain.alphas, smooth.alphas):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(weights_before, smooth_model.parameters()))
    # The weights differ from DARTS's: the weight step mixed with perturbed, not clean, weights.
    assert any(not torch.equal(a, b) for a, b in zip(plain_model.parameters(), smooth_model.parameters()))
    # A weight step alone leaves the alphas' values as they were.
    arch, _ = smooth.perturbed_weights(data[0])
    smooth.weight_step(data[0], arch=arch)
    assert all(torch.equal(a, b) for a, b in zip(alphas_after_alpha_step, smooth.alphas))


# -- DARTS- ------------------------------------------------------------------------------------------
def test_beta_follows_the_decay_scheduler():
    assert [beta_schedule(e, "linear", 1.0, 10, 0, 10) for e in (0, 1, 5, 9)] == pytest.approx([1.0, 0.9, 0.5, 0.1])
    assert beta_schedule(5, "cosine", 1.0, 10, 0, 10) == pytest.approx(0.5)
    assert beta_schedule(5, "slow_cosine", 1.0, 10, 0, 10) == pytest.approx(math.cos(math.pi / 4))
    assert beta_schedule(7, "none", 0.7, 10, 0, 10) == 0.7
    assert beta_schedule(1, "linear", 2.0, 10, 2, 10) == 2.0                   # before T_start: beta0
    assert beta_schedule(9, "linear", 1.0, 10, 0, 6) == pytest.approx(0.4)     # after T_stop: its T_stop value
    strategy, _ = make("darts_minus", epochs=10)
    for epoch in range(10):
        strategy.start_epoch(epoch)
        assert strategy.learning_rates()["darts_minus/beta"] == pytest.approx(1 - epoch / 10)


@pytest.mark.parametrize("stride", [1, 2])
def test_the_auxiliary_mixed_op_adds_beta_times_the_auxiliary_path(stride):
    torch.manual_seed(0)
    plain = MixedOp(4, stride, PRIMITIVES)
    minus = AuxiliarySkipMixedOp(4, stride, PRIMITIVES)
    missing, unexpected = minus.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == [] and all(key.startswith("auxiliary.") for key in missing)
    x = torch.randn(2, 4, 7, 7)
    weights = torch.softmax(torch.randn(8), -1)
    if stride == 1:
        assert isinstance(minus.auxiliary, nn.Identity)
        aux = x
    else:
        assert isinstance(minus.auxiliary, FactorizedReduce) and not minus.auxiliary.bn.affine
        reference = FactorizedReduce(4, 4, affine=False)
        reference.load_state_dict(minus.auxiliary.state_dict())
        aux = reference(x)
    beta = 0.37
    out = minus(x, torch.cat([weights, torch.tensor([beta])]))
    torch.testing.assert_close(out, plain(x, weights) + beta * aux)


@pytest.mark.parametrize("reduction", [False, True])
def test_a_cell_with_the_auxiliary_skip_equals_the_plain_cell_plus_beta_aux(reduction):
    # One node: its output is the sum of its two input edges, so the aux path adds beta * (aux(s0') + aux(s1')).
    torch.manual_seed(0)
    plain = SearchCell(1, 1, 12, 12, 4, reduction, False, PRIMITIVES, MixedOp)
    minus = SearchCell(1, 1, 12, 12, 4, reduction, False, PRIMITIVES, AuxiliarySkipMixedOp)
    minus.load_state_dict(plain.state_dict(), strict=False)
    s0, s1 = torch.randn(2, 12, 8, 8), torch.randn(2, 12, 8, 8)
    weights = torch.softmax(torch.randn(2, 8), -1)
    beta = 0.6
    with torch.no_grad():
        expected = plain(s0, s1, EdgeWeights(weights))
        states = [minus.preprocess0(s0), minus.preprocess1(s1)]
        expected = expected + beta * sum(edge.auxiliary(h) for edge, h in zip(minus.edges, states))
        with_beta = torch.cat([weights, torch.full((2, 1), beta)], -1)
        torch.testing.assert_close(minus(s0, s1, EdgeWeights(with_beta)), expected)
    assert isinstance(minus.edges[0].auxiliary, FactorizedReduce if reduction else nn.Identity)


@pytest.mark.parametrize("space_cfg", [DARTS_SPACE, NB201_SPACE], ids=["darts", "nb201"])
def test_darts_minus_supernet_at_beta_zero_is_the_plain_supernet(space_cfg):
    strategy, model = make("darts_minus", space_cfg, epochs=10, decay_max_epoch=4)
    plain = strategy.space.build_supernet(4, 3)
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == [] and all(".auxiliary." in key for key in missing)
    if space_cfg.name == "nb201":
        # Only stride-1 edges there: the aux path is the identity, without parameters or buffers; and
        # the space's no-BN-after-pools rule holds on these edges too.
        pools = [edge.ops[4] for cell in model.cells if hasattr(cell, "edges") for edge in cell.edges]
        assert missing == [] and pools and not any(isinstance(m, nn.BatchNorm2d) for p in pools for m in p.modules())
    x = batches(1)[0][0]
    model.eval()
    plain.eval()
    with torch.no_grad():
        strategy.start_epoch(4)         # T_max = 4: beta = 0
        arch = strategy.eval_arch_weights()
        for cell, edge_weights in arch.items():
            assert edge_weights.weights.shape[1] == len(space_cfg.primitives) + 1
            assert (edge_weights.weights[:, -1] == 0).all()
        plain_arch = {cell: EdgeWeights(w.weights[:, :-1]) for cell, w in arch.items()}
        torch.testing.assert_close(model(x, arch), plain(x, plain_arch))
        strategy.start_epoch(1)         # beta = 0.75: the aux path counts
        arch = strategy.eval_arch_weights()
        assert all((w.weights[:, -1] == 0.75).all() for w in arch.values())
        assert not torch.allclose(model(x, arch), plain(x, plain_arch))


def test_darts_minus_derives_from_the_alphas_alone():
    strategy, _ = make("darts_minus", epochs=10)
    with torch.no_grad():
        for alpha in strategy.alphas:
            alpha.copy_(torch.randn(alpha.shape))
    expected = {cell: torch.softmax(a.detach().double(), -1) for cell, a in strategy.arch.alphas().items()}
    for cell, weights in strategy.mixing_weights().items():
        torch.testing.assert_close(weights, expected[cell])
    genotype = strategy.genotype()
    assert genotype == strategy.space.derive(expected)
    strategy.start_epoch(9)
    assert strategy.genotype() == genotype


# -- every preset, both spaces ---------------------------------------------------------------------------
PRESET_SPACES = [("sdarts_rs", "darts"), ("sdarts_rs", "nb201"), ("sdarts_adv", "darts"), ("sdarts_adv", "nb201"),
                 ("darts_minus", "darts"), ("darts_minus", "nb201"), ("sdarts_rs_nb201", None),
                 ("sdarts_adv_nb201", None)]


@pytest.mark.parametrize("preset, space", PRESET_SPACES)
def test_every_robust_preset_searches_both_spaces(preset, space, tmp_path):
    sizes = ["space.C=4", "space.N=1"] if (space or "nb201") == "nb201" else ["space.C=4", "space.layers=3"]
    cfg = compose_config("search", [f"experiment={preset}", *([f"space={space}"] if space else []),
                                    "dataset=synthetic", "device=cpu", "deterministic=true", "search.epochs=2",
                                    "search.batch_size=8", "dataset.num_train=32", "dataset.image_size=8",
                                    "search.max_steps_per_epoch=1", "search.eval_max_batches=1", "search.log_every=0",
                                    "fast.channels_last=false", *sizes])
    results = run_search(cfg, tmp_path)
    assert results["space"] == (space or "nb201") and results["strategy"] == cfg.strategy.name
    history = results["history"]
    assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)
    if preset.startswith("sdarts"):
        assert [h["sdarts/epsilon"] for h in history] == pytest.approx([0.03, 0.03 + 0.27 / 2])
    else:
        assert [h["darts_minus/beta"] for h in history] == pytest.approx([1.0, 0.5])
    if "adv" in preset:
        assert all(math.isfinite(h["adv_loss"]) for h in history)
