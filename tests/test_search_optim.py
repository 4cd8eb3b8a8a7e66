"""Search optimiser options (Nesterov, a cosine stepped per epoch or per step, warm-up, alpha-gradient
clipping) and the ImageNet stem of the DARTS supernet: the settings PC-DARTS and AutoDL-Projects run with."""
import math

import pytest
import torch
from omegaconf import OmegaConf

from darts.errors import DartsError
from darts.runtime import Runtime
from darts.spaces import build_space
from darts.spaces.mixed import EdgeWeights
from darts.strategies import build_strategy
from darts.strategies.optim import WeightSchedule

NB201 = OmegaConf.create(dict(name="nb201", primitives=["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3",
                                                        "avg_pool_3x3"], C=4, N=1))
EPOCHS, STEPS, LR, LR_MIN = 3, 4, 0.1, 0.01


def optim(**weights):
    return OmegaConf.create(dict(weights=dict(lr=LR, lr_min=LR_MIN, momentum=0.9, weight_decay=5e-4, grad_clip=5.0,
                                              **weights),
                                 alphas=dict(lr=3e-4, betas=[0.5, 0.999], weight_decay=1e-3)))


def cosine(epoch: int, step: int) -> float:
    """The cosine schedule at the fractional epoch epoch + step / STEPS."""
    progress = (epoch + step / STEPS) / EPOCHS
    return LR_MIN + (LR - LR_MIN) * (1 + math.cos(math.pi * progress)) / 2


def rates_of_a_search(**weights) -> list[list[float]]:
    """The weight lr each of EPOCHS x STEPS DARTS steps ran with, on a tiny NAS-Bench-201 supernet."""
    torch.manual_seed(0)
    space = build_space(NB201)
    strategy = build_strategy(OmegaConf.create(dict(name="darts")))
    model = strategy.build_supernet(space, 3, 3)
    strategy.setup(space, model, optim(**weights), EPOCHS, STEPS, Runtime(torch.device("cpu"), channels_last=False))
    gen = torch.Generator().manual_seed(1)
    batch = (torch.randn(2, 3, 8, 8, generator=gen), torch.randint(0, 3, (2,), generator=gen))
    rates = []
    for epoch in range(EPOCHS):
        strategy.start_epoch(epoch)
        epoch_rates = []
        for _ in range(STEPS):
            epoch_rates.append(strategy.w_optimizer.param_groups[0]["lr"])
            strategy.step(batch, iter([batch]), epoch)
        strategy.end_epoch(epoch)
        rates.append(epoch_rates)
    return rates


def test_per_step_cosine_follows_the_fractional_epoch():
    rates = rates_of_a_search(schedule_every="step")
    expected = [cosine(epoch, step) for epoch in range(EPOCHS) for step in range(STEPS)]
    assert sum(rates, []) == pytest.approx(expected, rel=1e-9)


def test_per_epoch_cosine_holds_the_rate_within_an_epoch_as_the_authors_code():
    rates = rates_of_a_search()
    expected = [cosine(epoch, 0) for epoch in range(EPOCHS) for _ in range(STEPS)]
    assert sum(rates, []) == pytest.approx(expected, rel=1e-9)


def test_nesterov_reaches_the_weight_optimiser():
    torch.manual_seed(0)
    space = build_space(NB201)
    strategy = build_strategy(OmegaConf.create(dict(name="darts")))
    strategy.setup(space, strategy.build_supernet(space, 3, 3), optim(nesterov=True), EPOCHS, STEPS,
                   Runtime(torch.device("cpu"), channels_last=False))
    assert strategy.w_optimizer.param_groups[0]["nesterov"] is True


def test_an_unknown_schedule_unit_is_one_clear_error():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    with pytest.raises(DartsError, match="schedule_every 'batch'.*epoch, step"):
        WeightSchedule(optimizer, optim(schedule_every="batch").weights, EPOCHS, STEPS)


def test_warmup_raises_the_rate_by_epoch_then_runs_the_cosine_as_pcdarts_imagenet():
    rates = rates_of_a_search(warmup_epochs=2)
    # PC-DARTS train_search_imagenet.py: lr * (epoch + 1) / 5 for epochs 0-4, then the cosine's value.
    expected = [LR * 1 / 2] * STEPS + [LR * 2 / 2] * STEPS + [cosine(2, 0)] * STEPS
    assert sum(rates, []) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("warmup, every", [(3, "epoch"), (-1, "epoch"), (1, "step")])
def test_a_bad_warmup_is_one_clear_error(warmup, every):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    with pytest.raises(DartsError, match="warmup_epochs"):
        WeightSchedule(optimizer, optim(warmup_epochs=warmup, schedule_every=every).weights, EPOCHS, STEPS)


def test_alpha_gradient_clipping_bounds_what_adam_steps_with():
    torch.manual_seed(0)
    space = build_space(NB201)
    strategy = build_strategy(OmegaConf.create(dict(name="darts")))
    cfg = optim()
    cfg.alphas.grad_clip = 1e-4
    strategy.setup(space, strategy.build_supernet(space, 3, 3), cfg, EPOCHS, STEPS,
                   Runtime(torch.device("cpu"), channels_last=False))
    seen = []
    strategy.a_optimizer.register_step_pre_hook(
        lambda optimizer, args, kwargs: seen.append(float(torch.linalg.vector_norm(torch.stack(
            [p.grad.norm() for group in optimizer.param_groups for p in group["params"]])))))
    gen = torch.Generator().manual_seed(1)
    batch = (torch.randn(2, 3, 8, 8, generator=gen), torch.randint(0, 3, (2,), generator=gen))
    strategy.start_epoch(0)
    strategy.step(batch, iter([batch]), 0)
    assert seen and seen[0] <= 1e-4 * (1 + 1e-4)


def test_the_imagenet_stem_is_pcdartss_three_stride_two_convs():
    from darts.ops import FactorizedReduce

    space = build_space(OmegaConf.create(dict(name="darts", primitives=["none", "skip_connect", "sep_conv_3x3"],
                                              C=16, layers=3, steps=4, multiplier=4, stem_multiplier=3,
                                              stem="imagenet")))
    model = space.build_supernet(10, 3)
    # model_search_imagenet.py: 3x3 convs 3 -> 24 and 24 -> 48 (stride 2, BN, ReLU between), then ReLU,
    # 48 -> 48 (stride 2), each followed by an affine BN.
    expected = 3 * 24 * 9 + 2 * 24 + 24 * 48 * 9 + 2 * 48 + 48 * 48 * 9 + 2 * 48
    stems = [model.stem, model.stem1]
    assert sum(p.numel() for stem in stems for p in stem.parameters()) == expected
    assert isinstance(model.cells[0].preprocess0, FactorizedReduce)   # s0 is at twice s1's resolution
    x = torch.randn(2, 3, 64, 64)
    assert model.stem1(model.stem(x)).shape == (2, 48, 8, 8)
    arch = {cell: EdgeWeights(torch.full((14, 3), 1 / 3)) for cell in ("normal", "reduce")}
    assert model(x, arch).shape == (2, 10)
    with pytest.raises(DartsError, match="space.stem 'mobile'.*cifar, imagenet"):
        build_space(OmegaConf.merge(space.cfg, {"stem": "mobile"})).build_supernet(10, 3)
