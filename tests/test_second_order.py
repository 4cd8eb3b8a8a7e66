"""The second-order architecture gradient against autograd through the virtual step."""
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.func import functional_call

from darts.runtime import Runtime
from darts.spaces import EdgeWeights, build_space
from darts.strategies import build_strategy

CPU_RUNTIME = Runtime(torch.device("cpu"), channels_last=False)

SPACE = OmegaConf.create(dict(name="darts", C=4, layers=3, steps=2, multiplier=2, stem_multiplier=2,
                              primitives=["none", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3"]))
OPTIM = OmegaConf.create(dict(weights=dict(lr=0.1, lr_min=0.0, momentum=0.9, weight_decay=3e-4, grad_clip=5.0),
                              alphas=dict(lr=3e-4, betas=[0.5, 0.999], weight_decay=1e-3)))


def make_strategy(hessian):
    torch.manual_seed(0)
    space = build_space(SPACE)
    strategy = build_strategy(OmegaConf.create(dict(name="darts", order=2, hessian=hessian)))
    model = strategy.build_supernet(space, num_classes=3, in_channels=2).double()
    # The published eps = 0.01 / ||v|| moves the weights by 0.01, which crosses ReLU kinks of a
    # tiny random network; a smooth activation makes the finite difference converge as O(eps^2).
    smooth_relus(model)
    strategy.setup(space, model, OPTIM, epochs=1, steps_per_epoch=1, runtime=CPU_RUNTIME)
    strategy.arch.double()  # in place: the optimiser keeps the same parameters
    with torch.no_grad():  # alphas far from uniform so the second-order term is not negligible
        for alpha in strategy.arch_parameters():
            alpha.normal_(0, 1)
    return strategy, model


def smooth_relus(module):
    for name, child in module.named_children():
        if isinstance(child, torch.nn.ReLU):
            setattr(module, name, torch.nn.Tanh())
        else:
            smooth_relus(child)


def batches():
    gen = torch.Generator().manual_seed(1)
    make = lambda: (torch.randn(6, 2, 8, 8, generator=gen, dtype=torch.float64),
                    torch.randint(0, 3, (6,), generator=gen))
    return make(), make(), make()


def softmax_arch(alphas):
    """DARTS's mixing weights, written out: softmax over each edge's ops."""
    return {cell: EdgeWeights(torch.softmax(a, dim=-1)) for cell, a in alphas.items()}


def autograd_unrolled_gradient(model, alphas, optimizer, train_batch, val_batch):
    """d/d alpha of L_val(w - xi (mu m + grad_w L_train(w, alpha) + lambda w), alpha), by autograd."""
    group = optimizer.param_groups[0]
    xi, mu, lam = group["lr"], group["momentum"], group["weight_decay"]
    weights = dict(model.named_parameters())
    loss_train = F.cross_entropy(model(train_batch[0], softmax_arch(alphas)), train_batch[1])
    grads = torch.autograd.grad(loss_train, list(weights.values()), create_graph=True)
    unrolled = {}
    for (name, w), g in zip(weights.items(), grads):
        momentum = optimizer.state[w]["momentum_buffer"]
        unrolled[name] = w.detach() - xi * (mu * momentum + g + lam * w.detach())
    logits = functional_call(model, unrolled, (val_batch[0], softmax_arch(alphas)))
    loss_val = F.cross_entropy(logits, val_batch[1])
    return torch.autograd.grad(loss_val, list(alphas.values()))


@pytest.mark.parametrize("hessian", ["finite_difference", "exact"])
def test_second_order_gradient_matches_autograd(hessian):
    strategy, model = make_strategy(hessian)
    alphas = strategy.arch.alphas()
    assert [id(a) for a in alphas.values()] == [id(a) for a in strategy.alphas]
    assert all(a.dtype == torch.float64 for a in strategy.alphas)
    warmup, train_batch, val_batch = batches()
    strategy.weight_step(warmup)  # a non-zero momentum buffer, as in every step after the first

    expected = autograd_unrolled_gradient(model, alphas, strategy.w_optimizer, train_batch, val_batch)
    weights_before = [w.detach().clone() for w in strategy.weights]
    got, _, _ = strategy.unrolled_alpha_gradient(train_batch, val_batch)

    first_order = torch.autograd.grad(F.cross_entropy(model(val_batch[0], softmax_arch(alphas)), val_batch[1]),
                                      strategy.alphas)
    for g, e, fo in zip(got, expected, first_order):
        second_order_term = e - fo
        # The term must matter, so that a dropped or mis-scaled term fails below.
        assert second_order_term.norm() > 0.1 * e.norm()
        # Finite differences at the published eps carry an O(eps^2) error: 0.2 % of the term here.
        tolerance = 1e-10 if hessian == "exact" else 2e-3
        assert (g - e).norm() <= tolerance * second_order_term.norm()
    for before, after in zip(weights_before, strategy.weights):
        assert torch.equal(before, after), "the virtual step must leave the weights exactly as they were"
