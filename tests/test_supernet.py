"""The DARTS supernet: published size, a function of its input and of the architecture weights it is
handed, and the DARTS strategy that owns those weights."""
import pytest
import torch
from omegaconf import OmegaConf

from darts.errors import DartsError
from darts.runtime import Runtime
from darts.spaces import EdgeWeights, build_space
from darts.spaces.darts_cnn.genotype import PRIMITIVES, Genotype
from darts.spaces.darts_cnn.supernet import SuperNet
from darts.strategies import build_strategy

CPU_RUNTIME = Runtime(torch.device("cpu"), channels_last=False)


def space_cfg(**changes):
    return OmegaConf.create(dict(dict(name="darts", primitives=list(PRIMITIVES), C=4, layers=3, steps=4, multiplier=4,
                                      stem_multiplier=3), **changes))


def optim_cfg(lr=0.025, alpha_lr=3e-4):
    return OmegaConf.create(dict(weights=dict(lr=lr, lr_min=0.0, momentum=0.9, weight_decay=3e-4, grad_clip=5.0),
                                 alphas=dict(lr=alpha_lr, betas=[0.5, 0.999], weight_decay=1e-3)))


def softmax_arch(space, seed=0, logits=None):
    """{cell type: EdgeWeights(softmax of random logits)} for every cell type of ``space``; the logits
    are put in ``logits`` when given."""
    gen = torch.Generator().manual_seed(seed)
    arch = {}
    for cell, shape in space.arch_shapes().items():
        cell_logits = torch.randn(shape, generator=gen).requires_grad_(logits is not None)
        if logits is not None:
            logits[cell] = cell_logits
        arch[cell] = EdgeWeights(torch.softmax(cell_logits, -1))
    return arch


def darts_strategy(space, num_classes=10, lr=0.025, alpha_lr=3e-4):
    strategy = build_strategy(OmegaConf.create(dict(name="darts", order=1)))
    model = strategy.build_supernet(space, num_classes, 3)
    strategy.setup(space, model, optim_cfg(lr, alpha_lr), epochs=1, steps_per_epoch=1, runtime=CPU_RUNTIME)
    return strategy, model


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
    # Every parameter of the supernet is a weight: the architecture parameters live in the strategy.
    direct = SuperNet(16, 10, 8, primitives=PRIMITIVES)
    from_space = build_space(space_cfg(C=16, layers=8)).build_supernet(10, 3)
    for model in (direct, from_space):
        assert sum(p.numel() for p in model.parameters()) == published_supernet_weight_count() == 1_930_618


def test_output_shapes_and_architecture_shapes():
    space = build_space(space_cfg(layers=5))
    assert space.arch_shapes() == {"normal": (14, 8), "reduce": (14, 8)}
    model = space.build_supernet(7, 1)
    assert model(torch.randn(3, 1, 28, 28), softmax_arch(space)).shape == (3, 7)

    small = build_space(space_cfg(steps=2, multiplier=2, primitives=["skip_connect", "sep_conv_3x3"]))
    assert small.arch_shapes() == {"normal": (5, 2), "reduce": (5, 2)} and small.num_edges == 5
    arch = softmax_arch(small)
    assert small.build_supernet(3, 3)(torch.randn(2, 3, 16, 16), arch).shape == (2, 3)
    genotype = small.derive({cell: weights.weights for cell, weights in arch.items()})
    assert isinstance(genotype, Genotype) and genotype.steps == 2 and genotype.normal_concat == (2, 3)


def test_the_supernet_is_a_function_of_the_weights_it_is_handed(record_cell_weights):
    space = build_space(space_cfg())
    torch.manual_seed(0)
    model = space.build_supernet(10, 3).eval()
    assert not any("alpha" in key or "beta" in key for key in model.state_dict())
    x = torch.randn(2, 3, 16, 16)
    logits = {}
    arch = softmax_arch(space, seed=1, logits=logits)
    seen = record_cell_weights(model)
    out = model(x, arch)
    # Each cell is handed the weights of its type: reductions at 1/3 and 2/3 of the depth.
    assert [cell for cell, _ in seen] == ["normal", "reduce", "reduce"]
    assert all(weights is arch[cell] for cell, weights in seen)
    torch.testing.assert_close(model(x, arch), out, rtol=0, atol=0)
    assert not torch.allclose(model(x, softmax_arch(space, seed=2)), out)
    # The loss reaches the weights it was given, through every cell type.
    out.square().sum().backward()
    assert set(logits) == {"normal", "reduce"}
    assert all(leaf.grad is not None and leaf.grad.abs().sum() > 0 for leaf in logits.values())


def test_a_sampled_forward_equals_the_mixed_forward_with_one_hot_weights():
    # What the sampling strategies rely on: running only the `active` op of each edge (None: the edge is
    # switched off) computes what the full weighted sum computes with those one-hot rows (zero rows off).
    space = build_space(space_cfg())
    torch.manual_seed(0)
    model = space.build_supernet(10, 3)
    x = torch.randn(4, 3, 16, 16)
    architecture = space.random_architecture(torch.Generator().manual_seed(5))
    one_hot = {}
    for cell, active in architecture.items():
        rows = torch.zeros(space.arch_shapes()[cell])
        for edge, op in enumerate(active):
            if op is not None:
                rows[edge, op] = 1.0
        one_hot[cell] = rows
    sampled = model(x, {cell: EdgeWeights(one_hot[cell], architecture[cell]) for cell in architecture})
    mixed = model(x, {cell: EdgeWeights(one_hot[cell]) for cell in architecture})
    torch.testing.assert_close(sampled, mixed, rtol=1e-5, atol=1e-6)


def test_the_strategy_owns_the_alphas_and_the_optimisers_hold_disjoint_parameter_sets():
    space = build_space(space_cfg())
    strategy, model = darts_strategy(space)
    names = [name for name, _ in strategy.arch.named_parameters()]
    assert names == ["alphas_normal", "alphas_reduce"]
    assert {cell: tuple(a.shape) for cell, a in strategy.arch.alphas().items()} == space.arch_shapes()
    assert strategy.arch.betas() == {}
    assert [id(p) for p in strategy.arch_parameters()] == [id(p) for p in strategy.arch.parameters()]
    assert strategy.checkpointables()["arch"] is strategy.arch
    assert set(strategy.arch.state_dict()) == {"alphas_normal", "alphas_reduce"}
    in_weight_optim = {id(p) for g in strategy.w_optimizer.param_groups for p in g["params"]}
    in_alpha_optim = {id(p) for g in strategy.a_optimizer.param_groups for p in g["params"]}
    assert in_alpha_optim == {id(p) for p in strategy.arch_parameters()}
    assert in_weight_optim == {id(p) for p in model.parameters()}
    assert not in_alpha_optim & in_weight_optim
    # Initialised as 1e-3 * N(0, 1), as the code does.
    alphas = strategy.arch.alphas_normal
    assert alphas.abs().max() < 0.01 and alphas.std() > 1e-4


def test_weight_step_leaves_alphas_and_alpha_step_leaves_weights():
    space = build_space(space_cfg())
    strategy, model = darts_strategy(space, num_classes=4, lr=0.1, alpha_lr=0.1)
    batch = (torch.randn(4, 3, 16, 16), torch.randint(0, 4, (4,)))
    alphas = [a.detach().clone() for a in strategy.arch_parameters()]
    strategy.weight_step(batch)
    assert all(torch.equal(a, b) for a, b in zip(alphas, strategy.arch_parameters()))
    assert all(a.grad is None for a in strategy.arch_parameters()), "the weight step must not compute alpha grads"
    weights = [w.detach().clone() for w in model.parameters()]
    strategy.alpha_step(batch, batch)
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(alphas, strategy.arch_parameters()))


def test_unknown_op_and_space_give_readable_errors():
    bad = space_cfg(primitives=["sep_conv_3x3", "conv_7x7"])
    with pytest.raises(DartsError, match="conv_7x7.*valid choices.*sep_conv_3x3"):
        build_space(bad)
    with pytest.raises(DartsError, match="search space 'nope'; valid choices: darts, darts_rnn, nb201"):
        build_space(OmegaConf.merge(bad, {"name": "nope"}))
    with pytest.raises(DartsError, match="strategy 'evolution'; valid choices:.*darts"):
        build_strategy(OmegaConf.create({"name": "evolution"}))
