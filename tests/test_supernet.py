import pytest
import torch
from omegaconf import OmegaConf

from darts.errors import DartsError
from darts.genotypes import PRIMITIVES, Genotype
from darts.spaces import build_supernet
from darts.runtime import Runtime
from darts.strategies import build_strategy
from darts.supernet import SuperNet

CPU_RUNTIME = Runtime(torch.device("cpu"), channels_last=False)


def published_supernet_weight_count(C=16, layers=8, steps=4, multiplier=4, stem_multiplier=3, classes=10,
                                    in_channels=3):
    """The weight count of the published search network, worked out op by op (BN affine=False except the stem).

    sep_conv_k: two (depthwise k*k*C + pointwise C*C); dil_conv_k: one of each; a stride-2 skip is a
    factorized reduce (two C x C/2 1x1 convs); pools and `none` have no weights.
    """
    def edge(C, stride):
        sep = lambda k: 2 * (k * k * C + C * C)
        dil = lambda k: k * k * C + C * C
        return sep(3) + sep(5) + dil(3) + dil(5) + (C * C if stride == 2 else 0)

    stem_channels = stem_multiplier * C
    total = in_channels * 9 * stem_channels + 2 * stem_channels
    C_pp, C_p, C_cell = stem_channels, stem_channels, C
    for layer in range(layers):
        reduction = layer in (layers // 3, 2 * layers // 3)
        C_cell = C_cell * 2 if reduction else C_cell
        total += C_pp * C_cell + C_p * C_cell  # both preprocessings: 1x1 conv or factorized reduce
        for node in range(steps):
            for source in range(node + 2):
                total += edge(C_cell, 2 if reduction and source < 2 else 1)
        C_pp, C_p = C_p, multiplier * C_cell
    return total + C_p * classes + classes


def test_weight_count_equals_the_published_search_network():
    model = SuperNet(16, 10, 8)
    count = sum(p.numel() for p in model.weight_parameters())
    assert count == published_supernet_weight_count() == 1_930_618


def test_output_shapes_and_alpha_shapes():
    model = SuperNet(4, 7, 5, in_channels=1)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 7)
    assert model.alphas_normal.shape == model.alphas_reduce.shape == (14, 8)
    small = SuperNet(4, 3, 3, steps=2, multiplier=2, primitives=["skip_connect", "sep_conv_3x3"])
    assert small(torch.randn(2, 3, 16, 16)).shape == (2, 3)
    assert small.alphas_normal.shape == (5, 2)
    assert isinstance(small.genotype(), Genotype)


def test_alphas_live_in_the_state_dict_and_are_split_from_weights():
    model = SuperNet(4, 10, 3)
    state = model.state_dict()
    assert torch.equal(state["alphas_normal"], model.alphas_normal) and "alphas_reduce" in state
    arch = {id(p) for p in model.arch_parameters()}
    weights = {id(p) for p in model.weight_parameters()}
    assert arch == {id(model.alphas_normal), id(model.alphas_reduce)}
    assert not arch & weights and arch | weights == {id(p) for p in model.parameters()}
    # Initialised as 1e-3 * N(0, 1), as the code does.
    assert model.alphas_normal.abs().max() < 0.01 and model.alphas_normal.std() > 1e-4


def test_optimisers_hold_disjoint_parameter_sets():
    space = OmegaConf.create(dict(name="darts", primitives=list(PRIMITIVES), C=4, layers=3, steps=4,
                                  multiplier=4, stem_multiplier=3))
    optim = OmegaConf.create(dict(weights=dict(lr=0.025, lr_min=0.001, momentum=0.9, weight_decay=3e-4,
                                               grad_clip=5.0),
                                  alphas=dict(lr=3e-4, betas=[0.5, 0.999], weight_decay=1e-3)))
    strategy = build_strategy(OmegaConf.create(dict(name="darts", order=1)))
    model = strategy.build_supernet(space, 10, 3)
    strategy.setup(model, optim, epochs=1, steps_per_epoch=1, runtime=CPU_RUNTIME)
    in_weight_optim = {id(p) for g in strategy.w_optimizer.param_groups for p in g["params"]}
    in_alpha_optim = {id(p) for g in strategy.a_optimizer.param_groups for p in g["params"]}
    assert in_alpha_optim == {id(p) for p in model.arch_parameters()}
    assert in_weight_optim == {id(p) for p in model.weight_parameters()}


def test_weight_step_leaves_alphas_and_alpha_step_leaves_weights():
    space = OmegaConf.create(dict(name="darts", primitives=list(PRIMITIVES), C=4, layers=3, steps=4,
                                  multiplier=4, stem_multiplier=3))
    optim = OmegaConf.create(dict(weights=dict(lr=0.1, lr_min=0.0, momentum=0.9, weight_decay=3e-4, grad_clip=5.0),
                                  alphas=dict(lr=0.1, betas=[0.5, 0.999], weight_decay=1e-3)))
    strategy = build_strategy(OmegaConf.create(dict(name="darts", order=1)))
    model = strategy.build_supernet(space, 4, 3)
    strategy.setup(model, optim, epochs=1, steps_per_epoch=1, runtime=CPU_RUNTIME)
    batch = (torch.randn(4, 3, 16, 16), torch.randint(0, 4, (4,)))
    alphas = [a.detach().clone() for a in model.arch_parameters()]
    strategy.weight_step(batch)
    assert all(torch.equal(a, b) for a, b in zip(alphas, model.arch_parameters()))
    assert all(a.grad is None for a in model.arch_parameters()), "the weight step must not compute alpha grads"
    weights = [w.detach().clone() for w in model.weight_parameters()]
    strategy.alpha_step(batch, batch)
    assert all(torch.equal(a, b) for a, b in zip(weights, model.weight_parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(alphas, model.arch_parameters()))


def test_unknown_op_and_space_give_readable_errors():
    bad = OmegaConf.create(dict(name="darts", primitives=["sep_conv_3x3", "conv_7x7"], C=4, layers=3, steps=4,
                                multiplier=4, stem_multiplier=3))
    with pytest.raises(DartsError, match="conv_7x7.*valid choices.*sep_conv_3x3"):
        build_supernet(bad, 10, 3)
    with pytest.raises(DartsError, match="search space"):
        build_supernet(OmegaConf.merge(bad, {"name": "nope"}), 10, 3)
    with pytest.raises(DartsError, match="strategy"):
        build_strategy(OmegaConf.create({"name": "evolution"}))
