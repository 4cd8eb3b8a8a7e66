"""The search's weight optimiser options: Nesterov and a cosine stepped per epoch or per step."""
import math

import pytest
import torch
from omegaconf import OmegaConf

from darts.errors import DartsError
from darts.runtime import Runtime
from darts.spaces import build_space
from darts.strategies import build_strategy
from darts.strategies.optim import WeightSchedule

NB201 = OmegaConf.create(dict(name="nb201", primitives=["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3",
                                                        "avg_pool_3x3"], C=4, N=1))
EPOCHS, STEPS, LR, LR_MIN = 3, 4, 0.1, 0.01


def optim(**weights):
    return OmegaConf.create(dict(weights=dict(lr=LR, lr_min=LR_MIN, momentum=0.9, weight_decay=5e-4, grad_clip=5.0,
                                              **weights),
                                 alphas=dict(lr=3e-4, betas=[0.5, 0.999], weight_decay=1e-3)))


def autodl_cosine(epoch: int, step: int) -> float:
    """AutoDL-Projects' CosineAnnealingLR at the fractional epoch epoch + step / STEPS."""
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


def test_per_step_cosine_follows_the_fractional_epoch_as_autodl_steps_it():
    rates = rates_of_a_search(schedule_every="step")
    expected = [autodl_cosine(epoch, step) for epoch in range(EPOCHS) for step in range(STEPS)]
    assert sum(rates, []) == pytest.approx(expected, rel=1e-9)


def test_per_epoch_cosine_holds_the_rate_within_an_epoch_as_the_darts_code():
    rates = rates_of_a_search()
    expected = [autodl_cosine(epoch, 0) for epoch in range(EPOCHS) for _ in range(STEPS)]
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
