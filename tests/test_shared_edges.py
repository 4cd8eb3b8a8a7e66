"""A discrete cell with shared edges (the fast path) computes what the published cell computes, for
every registered op, and computes each shared activation and parameter-free op once."""
import copy

import pytest
import torch
import torch.nn as nn

from darts.fastpath import FastPathOptions, apply_fast_path
from darts.ops import OPS, activation_signature
from darts.runtime import Runtime
from darts.spaces.darts_cnn.genotype import DARTS_V2, Genotype
from darts.spaces.darts_cnn.network import Cell, NetworkCIFAR
from darts.spaces.nb201.genotype import NB201Genotype
from darts.spaces.nb201.network import NB201Cell

SHARED = FastPathOptions(shared_cell_edges=True)
# Every state is read by two or more edges: inputs 0 and 1 three times each, node 0 twice.
READS = (0, 0, 1, 1, 0, 2, 1, 2)
CHOSEN_OPS = [name for name in OPS.names() if name != "none"]   # a genotype cannot choose `none`


def genotype_of(first: str, second: str) -> Genotype:
    """``first`` and ``second`` alternating over the edges of READS, in both cells."""
    pairs = [(first if edge % 2 == 0 else second, state) for edge, state in enumerate(READS)]
    return Genotype(normal=pairs, normal_concat=[2, 3, 4, 5], reduce=pairs, reduce_concat=[2, 3, 4, 5])


def cell_pair(genotype: Genotype, reduction: bool):
    """The published cell and a copy with shared edges (same weights), float64, training mode."""
    torch.manual_seed(0)
    plain = Cell(genotype, 6, 6, 4, reduction=reduction, reduction_prev=False).double().train()
    shared = copy.deepcopy(plain)
    apply_fast_path(shared, SHARED)
    return plain, shared


def assert_same_function(plain, shared, inputs, call):
    """``call(cell, leaves)`` gives the same output, input gradients and parameter gradients for both
    cells; ops with random outputs (noise) draw from one seed in both."""
    results = []
    for cell in (plain, shared):
        leaves = [x.clone().requires_grad_() for x in inputs]
        torch.manual_seed(2)
        out = call(cell, leaves)
        # A cell of `noise` ops alone outputs a draw that depends on nothing: no gradients to compare.
        grads = torch.autograd.grad(out.square().sum(), [*leaves, *cell.parameters()], allow_unused=True) \
            if out.requires_grad else ()
        results.append((out, grads))
    torch.testing.assert_close(results[1][0], results[0][0])
    assert len(results[0][1]) == len(results[1][1])
    for got, expected in zip(results[1][1], results[0][1]):
        assert (got is None) == (expected is None)
        if got is not None:
            torch.testing.assert_close(got, expected)


def assert_shared_equals_plain(plain, shared, size: int, drop_prob: float):
    """Output, input gradients and parameter gradients agree, drop path drawn from one seed in both."""
    gen = torch.Generator().manual_seed(1)
    inputs = [torch.randn(3, 6, size, size, dtype=torch.float64, generator=gen) for _ in range(2)]
    assert_same_function(plain, shared, inputs, lambda cell, states: cell(
        *states, drop_prob=drop_prob, generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("reduction", [False, True])
@pytest.mark.parametrize("op_name", CHOSEN_OPS)
def test_shared_cell_equals_the_published_one_for_every_registered_op(op_name, reduction):
    # Each op with itself, and with the next registered op (an activation or a pool it may share with).
    partner = CHOSEN_OPS[(CHOSEN_OPS.index(op_name) + 1) % len(CHOSEN_OPS)]
    for second in (op_name, partner):
        plain, shared = cell_pair(genotype_of(op_name, second), reduction)
        assert shared.share_edges == shared.sharing.shares_anything and not plain.share_edges
        for drop_prob in (0.0, 0.3):
            assert_shared_equals_plain(plain, shared, size=6, drop_prob=drop_prob)


@pytest.mark.parametrize("op_name", CHOSEN_OPS)
def test_shared_nb201_cell_equals_the_published_one_for_every_registered_op(op_name):
    # Node 0 feeds three edges, node 1 two: the op with itself, then with the next registered op.
    partner = CHOSEN_OPS[(CHOSEN_OPS.index(op_name) + 1) % len(CHOSEN_OPS)]
    for second in (op_name, partner):
        genotype = NB201Genotype.from_string(
            f"|{op_name}~0|+|{second}~0|{op_name}~1|+|{op_name}~0|{second}~1|{op_name}~2|")
        torch.manual_seed(0)
        plain = NB201Cell(genotype, 4).double().train()
        shared = copy.deepcopy(plain)
        apply_fast_path(shared, SHARED)
        assert shared.share_edges == shared.sharing.shares_anything and not plain.share_edges
        x = torch.randn(3, 4, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        assert_same_function(plain, shared, [x], lambda cell, nodes: cell(*nodes))


def test_edges_share_only_what_they_compute_alike():
    normal = Cell(genotype_of("max_pool_3x3", "sep_conv_3x3"), 6, 6, 4, reduction=False, reduction_prev=False)
    relu = activation_signature(normal.ops[1])
    pool_on = lambda state: ("output", state, "max_pool_3x3")
    # Pools: edges 0, 4 on input 0 and 2, 6 on input 1. ReLU-first convs: edges 5, 7 on node 0; edges 1
    # (input 0) and 3 (input 1) read a state no other conv reads.
    assert normal.sharing.keys == (pool_on(0), None, pool_on(1), None, pool_on(0), ("activation", 2, relu),
                                   pool_on(1), ("activation", 2, relu))
    # A GELU-first conv shares with GELU-first ones only: edges 5 and 7 (node 0), not edges 1 and 3,
    # whose states the ReLU-first convs of edges 0, 4 and 2, 6 share among themselves.
    mixed = Cell(genotype_of("sep_conv_3x3", "sep_conv_3x3_gelu"), 6, 6, 4, reduction=False, reduction_prev=False)
    gelu = activation_signature(mixed.ops[1])
    assert gelu != relu
    assert mixed.sharing.keys == (("activation", 0, relu), None, ("activation", 1, relu), None,
                                  ("activation", 0, relu), ("activation", 2, gelu), ("activation", 1, relu),
                                  ("activation", 2, gelu))


def count_calls(cell: Cell, module_type: type) -> int:
    calls = []
    handles = [module.register_forward_hook(lambda *args: calls.append(1))
               for module in cell.modules() if type(module) is module_type]
    s = torch.randn(2, 6, 6, 6)
    cell(s, s)
    for handle in handles:
        handle.remove()
    return len(calls)


def test_shared_cell_runs_each_pool_and_relu_of_a_state_once():
    # The demo's searched normal cell of 2026-12-08: four max-pools on input 1, four ReLU-first convs on input 0.
    pairs = [("sep_conv_5x5", 0), ("max_pool_3x3", 1), ("max_pool_3x3", 1), ("dil_conv_3x3", 0),
             ("dil_conv_5x5", 0), ("max_pool_3x3", 1), ("max_pool_3x3", 1), ("sep_conv_5x5", 0)]
    plain, shared = cell_pair(Genotype(pairs, [2, 3, 4, 5], pairs, [2, 3, 4, 5]), reduction=False)
    plain, shared = plain.float(), shared.float()
    assert (count_calls(plain, nn.MaxPool2d), count_calls(shared, nn.MaxPool2d)) == (4, 1)
    # The preprocessing's two ReLUs, then per conv: sep_conv 2, dil_conv 1 -> 6 unshared, 1 shared + 2 inner.
    assert (count_calls(plain, nn.ReLU), count_calls(shared, nn.ReLU)) == (2 + 6, 2 + 3)


def test_runtime_shares_edges_on_the_eager_fast_path_only():
    network = NetworkCIFAR(4, 4, 3, False, DARTS_V2)
    Runtime(torch.device("cpu")).prepare(network)
    assert all(cell.share_edges for cell in network.cells)   # DARTS_V2 reads each input with 2+ sep convs
    baseline = Runtime(torch.device("cpu"), channels_last=False, selective_grads=False, fused_mixed_ops=False)
    baseline.prepare(network)
    assert not any(cell.share_edges for cell in network.cells)


def test_fast_final_network_trains_as_the_published_one():
    # The demo's searched genotype: the fast path (shared edges, NHWC, depthwise gradients) against the
    # plain network, drop path and the auxiliary head on, float64.
    pairs = [("sep_conv_5x5", 0), ("max_pool_3x3", 1), ("max_pool_3x3", 1), ("dil_conv_3x3", 0),
             ("dil_conv_5x5", 0), ("max_pool_3x3", 1), ("max_pool_3x3", 1), ("sep_conv_5x5", 0)]
    reduce = [("dil_conv_3x3", 1), ("sep_conv_5x5", 0), ("max_pool_3x3", 0), ("skip_connect", 2),
              ("dil_conv_5x5", 0), ("dil_conv_5x5", 3), ("sep_conv_3x3", 3), ("skip_connect", 1)]
    torch.manual_seed(0)
    plain = NetworkCIFAR(4, 4, 3, True, Genotype(pairs, [2, 3, 4, 5], reduce, [2, 3, 4, 5]), drop_path_prob=0.2)
    plain = plain.double()
    fast = copy.deepcopy(plain)
    Runtime(torch.device("cpu"), depthwise_conv_grads=True).prepare(fast)
    assert all(cell.share_edges for cell in fast.cells)
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    grads = []
    for net, inputs in ((plain, x), (fast, x.contiguous(memory_format=torch.channels_last))):
        torch.manual_seed(5)   # the drop path masks
        logits, logits_aux = net(inputs)
        grads.append((logits, torch.autograd.grad(logits.square().sum() + logits_aux.sum(), list(net.parameters()))))
    torch.testing.assert_close(grads[1][0], grads[0][0])
    for got, expected in zip(grads[1][1], grads[0][1]):
        torch.testing.assert_close(got, expected)
