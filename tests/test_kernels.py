"""The fast path's hand-written gradients equal autograd's, and are skipped when a pass does not ask."""
import contextlib
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import darts.kernels as kernels
from darts.activations import ACTIVATIONS
from darts.fastpath import FastPathOptions, apply_fast_path
from darts.kernels import depthwise_conv2d, weighted_sum
from darts.ops import OPS, ActivationFirst, FactorizedReduce, activation_signature
from darts.runtime import Runtime
from darts.spaces.darts_cnn.genotype import PRIMITIVES
from darts.spaces.mixed import MixedOp

CPU = torch.device("cpu")
# (kernel, dilation, stride): every depthwise conv of the DARTS ops, plus a stride-2 undilated one
# (the native fallback) and the 5x5 dilated stride-2 case (the subsampling identity).
CONVS = [(3, 1, 1), (5, 1, 1), (3, 2, 1), (5, 2, 1), (3, 2, 2), (5, 2, 2), (3, 1, 2)]


@pytest.mark.parametrize("kernel,dilation,stride", CONVS)
@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("channels_last", [False, True])
def test_depthwise_conv_equals_native_conv_with_gradients_and_double_backward(kernel, dilation, stride, size,
                                                                             channels_last):
    padding = dilation * (kernel - 1) // 2
    gen = torch.Generator().manual_seed(kernel * 100 + dilation * 10 + stride + size)
    x = torch.randn(1, 2, size, size, dtype=torch.float64, generator=gen)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    weight = torch.randn(2, 1, kernel, kernel, dtype=torch.float64, generator=gen, requires_grad=True)
    expected = F.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation, groups=2)
    got = depthwise_conv2d(x, weight, stride, padding, dilation)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected)
    conv = lambda a, w: depthwise_conv2d(a, w, stride, padding, dilation)
    assert torch.autograd.gradcheck(conv, (x, weight))
    if not channels_last:  # the layouts share every line of the double backward
        assert torch.autograd.gradgradcheck(conv, (x, weight))


def profiled_ops(fn) -> list[str]:
    """The names of the operators ``fn`` runs (the backward ones included), from the torch profiler."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return [event.name for event in prof.events()]


def test_depthwise_gradients_are_skipped_when_the_pass_does_not_ask_for_them():
    # A 3x3 kernel dilated by 2 on an 8x8 input: the weight gradient is one aten::convolution_backward
    # over the polyphase images, the input gradient one forward convolution with the flipped kernel.
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    weight = torch.randn(4, 1, 3, 3, requires_grad=True)
    scale = torch.ones(1, requires_grad=True)
    loss = depthwise_conv2d(x * scale, weight, 1, 2, 2).square().sum()
    for only_input in (lambda: torch.autograd.grad(loss, [scale], retain_graph=True),
                       lambda: loss.backward(inputs=[scale], retain_graph=True)):
        ran = profiled_ops(only_input)
        assert "aten::convolution_backward" not in ran and "aten::flip" in ran
    assert scale.grad is not None
    weight_grad = []
    ran = profiled_ops(lambda: weight_grad.extend(torch.autograd.grad(loss, [weight], retain_graph=True)))
    assert ran.count("aten::convolution_backward") == 1 and "aten::flip" not in ran
    expected = torch.autograd.grad(F.conv2d(x * scale, weight, padding=2, dilation=2, groups=4).square().sum(),
                                   [weight])[0]
    torch.testing.assert_close(weight_grad[0], expected)


@pytest.mark.parametrize("channels_last", [False, True])
def test_weighted_sum_equals_autograd_and_leaves_unused_weights_at_zero(channels_last):
    gen = torch.Generator().manual_seed(0)
    weights = torch.randn(8, dtype=torch.float64, generator=gen, requires_grad=True)
    outputs = [torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=gen) for _ in range(3)]
    if channels_last:
        outputs = [out.to(memory_format=torch.channels_last) for out in outputs]
    outputs = [out.requires_grad_() for out in outputs]
    indices = (1, 4, 7)
    mix = lambda w, *outs: weighted_sum(w, indices, list(outs))
    expected = sum(weights[i] * out for i, out in zip(indices, outputs))
    torch.testing.assert_close(mix(weights, *outputs), expected)
    assert torch.autograd.gradcheck(mix, (weights, *outputs))
    assert torch.autograd.gradgradcheck(mix, (weights, *outputs))
    (grad,) = torch.autograd.grad(mix(weights, *outputs).sum(), [weights])
    assert grad[[0, 2, 3, 5, 6]].abs().max() == 0


FUSED = FastPathOptions(fused_mixed_ops=True, depthwise_conv_grads=True)


def mixed_op_pair(stride, primitives=PRIMITIVES, dtype=torch.float64, C=4):
    """The published mixed op and a copy with the fast path on (same weights)."""
    torch.manual_seed(0)
    plain = MixedOp(C, stride, primitives).to(dtype)
    fused = copy.deepcopy(plain)
    apply_fast_path(fused, FUSED)
    assert fused.fused and not plain.fused
    return plain, fused


def assert_fused_equals_plain(plain, fused, x, tolerance=None):
    """Forward and backward (input, mixing weights and op parameters) of the two mixed ops agree."""
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(len(plain.primitives), dtype=x.dtype, generator=gen)
    results = []
    for op in (plain, fused):
        inputs, weights = x.clone().requires_grad_(), logits.clone().requires_grad_()
        torch.manual_seed(2)   # ops with random outputs (noise) draw the same in both
        out = op(inputs, torch.softmax(weights, 0))
        grads = torch.autograd.grad(out.square().sum(), [inputs, weights, *op.parameters()])
        results.append((out, grads))
    tolerance = tolerance or {}
    torch.testing.assert_close(results[1][0], results[0][0], **tolerance)
    assert len(results[1][1]) == len(results[0][1]) >= 2
    for got, expected in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(got, expected, **tolerance)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [8, 7])
def test_fused_mixed_op_equals_the_published_one_for_every_registered_op(stride, size):
    primitives = OPS.names()  # every op in the registry, each conv with every activation, whatever registers one
    assert set(PRIMITIVES) <= set(primitives) and {"nor_conv_1x1", "nor_conv_3x3"} <= set(primitives)
    assert {"sep_conv_3x3_gelu", "dil_conv_5x5_silu", "nor_conv_3x3_hardswish"} <= set(primitives)
    plain, fused = mixed_op_pair(stride, primitives)
    assert_fused_equals_plain(plain, fused, torch.randn(3, 4, size, size, dtype=torch.float64))


class GELUConvBN(ActivationFirst):
    """GELU, k x k conv, BN: an op that starts with another activation than ReLU."""

    def __init__(self, C, stride, kernel_size=3, approximate="none", affine=True):
        super().__init__(nn.GELU(approximate=approximate),
                         nn.Conv2d(C, C, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
                         nn.BatchNorm2d(C, affine=affine))


TEST_OPS = {
    "gelu_conv_3x3": lambda C, stride, affine: GELUConvBN(C, stride, 3, affine=affine),
    "gelu_conv_1x1": lambda C, stride, affine: GELUConvBN(C, stride, 1, affine=affine),
    # Same activation type, other settings: must not share the exact GELU's output.
    "gelu_tanh_conv_3x3": lambda C, stride, affine: GELUConvBN(C, stride, 3, approximate="tanh", affine=affine),
    # Starts with a GELU but does not expose it: runs its own forward.
    "gelu_plain_conv_3x3": lambda C, stride, affine: nn.Sequential(
        nn.GELU(), nn.Conv2d(C, C, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(C, affine=affine)),
}


@pytest.fixture
def gelu_ops():
    """The TEST_OPS registered in darts.ops.OPS for one test."""
    with contextlib.ExitStack() as stack:
        for name, factory in TEST_OPS.items():
            stack.enter_context(OPS.temporarily(name, factory))
        yield list(TEST_OPS)


def activation_calls(op):
    """Per mixed-op member with an exposed activation, a list that counts its activation's calls."""
    calls = {}
    for name, member in zip(op.primitives, op.ops):
        if activation_signature(member) is not None:
            calls[name] = []
            member.activation.register_forward_hook(lambda m, args, out, seen=calls[name]: seen.append(1))
    return calls


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("order", ["gelu_first", "gelu_last", "interleaved"])
def test_fused_mixed_op_keeps_each_ops_own_activation(gelu_ops, order, stride, size):
    # The regression: a fused forward once gave every op the first op's activation. Here GELU-first ops
    # are mixed with every built-in (ReLU-first) op, first, last or in between, in float32.
    builtins = [name for name in OPS.names() if name not in gelu_ops]
    primitives = {"gelu_first": gelu_ops + builtins, "gelu_last": builtins + gelu_ops,
                  "interleaved": [name for pair in zip(builtins, gelu_ops + [None] * len(builtins))
                                  for name in pair if name is not None]}[order]
    assert sorted(primitives) == sorted(OPS.names())
    plain, fused = mixed_op_pair(stride, primitives, dtype=torch.float32)
    signatures = {name: activation_signature(op) for name, op in zip(fused.primitives, fused.ops)}
    assert signatures["gelu_conv_3x3"] == signatures["gelu_conv_1x1"] == "GELU(approximate='none')"
    assert signatures["gelu_tanh_conv_3x3"] == "GELU(approximate='tanh')"
    assert signatures["gelu_plain_conv_3x3"] is None and signatures["sep_conv_3x3"] == "ReLU()"
    x = torch.randn(3, 4, size, size)
    calls = activation_calls(fused)
    assert_fused_equals_plain(plain, fused, x, tolerance=dict(rtol=1e-5, atol=1e-5))
    # Each activation was computed once per forward for all the ops that share it: the registered
    # activations (the built-in ops' variants; the exact GELU also the test ops') and the tanh GELU.
    by_signature = {}
    for name, seen in calls.items():
        by_signature.setdefault(signatures[name], []).append(len(seen))
    registered = {repr(factory()): 1 for _, factory in ACTIVATIONS.items()}
    assert {"ReLU()", "GELU(approximate='none')", "SiLU()", "Hardswish()"} <= set(registered)
    assert {signature: sum(counts) for signature, counts in by_signature.items()} == {
        **registered, "GELU(approximate='tanh')": 1}


def test_fused_mixed_op_runs_one_relu_for_its_four_convolutions():
    plain, fused = mixed_op_pair(1)
    counts = {}
    for name, op in (("plain", plain), ("fused", fused)):
        calls = []
        for module in op.modules():
            if isinstance(module, nn.ReLU):
                module.register_forward_hook(lambda m, args, out: calls.append(m))
        op(torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.full((len(PRIMITIVES),), 0.125, dtype=torch.float64))
        counts[name] = len(calls)
    # sep_conv (2 ReLUs each, the first shared), dil_conv (1 each): 6 unfused, 1 shared + 2 inner fused.
    assert counts == {"plain": 6, "fused": 3}


@pytest.mark.parametrize("size", [8, 7])
def test_factorized_reduce_reads_the_shifted_pixels(size):
    torch.manual_seed(0)
    reduce = FactorizedReduce(4, 8).eval()
    x = torch.randn(2, 4, size, size)
    activated = torch.relu(x)
    padded = F.pad(activated, (0, 1, 0, 1))[:, :, 1:, 1:]
    expected = reduce.bn(torch.cat([reduce.conv_1(activated), reduce.conv_2(padded)], dim=1))
    torch.testing.assert_close(reduce(x), expected)


@pytest.mark.parametrize("fast", [True, False])
def test_runtime_prepare_switches_the_kernels(fast):
    torch.manual_seed(0)
    op = MixedOp(4, 1, PRIMITIVES)
    runtime = (Runtime(CPU, depthwise_conv_grads=True) if fast
               else Runtime(CPU, channels_last=False, selective_grads=False, fused_mixed_ops=False))
    runtime.prepare(op)
    convs = [m for m in op.modules() if isinstance(m, kernels.DepthwiseConv2d)]
    assert len(convs) == 6 and all(conv.conv_grads == fast for conv in convs) and op.fused == fast


def test_only_dilated_convs_take_the_custom_gradient():
    # Guards the list above: stride-1 dilated convs take the custom gradient; stride-2 dilated ones
    # become undilated convs of the subsampled input; undilated ones stay native.
    for kernel, dilation, stride in CONVS:
        x = torch.randn(1, 2, 8, 8, requires_grad=True)
        out = depthwise_conv2d(x, torch.randn(2, 1, kernel, kernel), stride, dilation * (kernel - 1) // 2, dilation)
        custom = type(out.grad_fn).__name__ == "_SameDepthwiseConvBackward"
        assert custom == (stride == 1 and dilation > 1), (kernel, dilation, stride)


@pytest.mark.parametrize("channels_last", [False, True])
def test_space_to_batch_stacks_the_polyphase_images_and_inverts(channels_last):
    x = torch.randn(2, 3, 8, 6)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    phases = kernels.space_to_batch(x, 2)
    assert phases.shape == (8, 3, 4, 3)
    assert phases.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    for index, (row, col) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        torch.testing.assert_close(phases[2 * index:2 * index + 2], x[:, :, row::2, col::2], rtol=0, atol=0)
    torch.testing.assert_close(kernels.batch_to_space(phases, 2), x, rtol=0, atol=0)


def _raw_gradients(output_fn, inputs):
    """The gradients autograd hands the inputs, before any accumulation reshapes them."""
    views = [t.detach().clone(memory_format=torch.preserve_format).requires_grad_() for t in inputs]
    return torch.autograd.grad(output_fn(views), views)


def test_concat_channels_returns_dense_gradients_in_each_inputs_layout():
    parts = [torch.randn(2, c, 4, 4).to(memory_format=torch.channels_last) for c in (3, 5)]
    upstream = torch.randn(2, 8, 4, 4).to(memory_format=torch.channels_last)
    loss = lambda cat: lambda ts: (cat(ts) * upstream).sum()
    plain = _raw_gradients(loss(lambda ts: torch.cat(ts, dim=1)), parts)
    dense = _raw_gradients(loss(kernels.concat_channels), parts)
    torch.testing.assert_close(kernels.concat_channels(parts), torch.cat(parts, dim=1), rtol=0, atol=0)
    assert not any(g.is_contiguous(memory_format=torch.channels_last) for g in plain)  # strided slices
    for got, expected in zip(dense, plain):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        assert got.is_contiguous(memory_format=torch.channels_last)


def test_dense_grad_gives_global_pooling_a_channels_last_gradient():
    x = torch.randn(2, 4, 3, 3).to(memory_format=torch.channels_last)
    pooled = lambda wrap: lambda ts: F.adaptive_avg_pool2d(wrap(ts[0]), 1).square().sum()
    (plain,) = _raw_gradients(pooled(lambda t: t), [x])
    (dense,) = _raw_gradients(pooled(kernels.dense_grad), [x])
    assert not plain.is_contiguous(memory_format=torch.channels_last)
    assert dense.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(dense, plain, rtol=0, atol=0)


@pytest.mark.parametrize("size", [8, 7])
def test_subsampled_halves_equal_slicing_with_gradients_and_double_backward(size):
    x = torch.randn(2, 3, size, size, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
    even, odd = kernels.subsampled_halves(x)
    torch.testing.assert_close(even, x[:, :, ::2, ::2], rtol=0, atol=0)
    torch.testing.assert_close(odd, x[:, :, 1::2, 1::2], rtol=0, atol=0)
    assert even.is_contiguous(memory_format=torch.channels_last)
    assert torch.autograd.gradcheck(lambda t: kernels.subsampled_halves(t), (x,))
    assert torch.autograd.gradgradcheck(lambda t: kernels.subsampled_halves(t), (x,))
    (only_even,) = torch.autograd.grad(kernels.subsampled_halves(x)[0].sum(), [x])  # odd half unused
    torch.testing.assert_close(only_even, torch.autograd.grad(x[:, :, ::2, ::2].sum(), [x])[0])


def graph_nodes(tensor):
    """Every autograd node ``tensor`` was computed through."""
    seen, stack = set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return seen


def halves_nodes(tensor):
    return {node for node in graph_nodes(tensor) if type(node).__name__ == "_HalvesBackward"}


def test_stride_two_mixed_op_subsamples_its_activation_once():
    plain, fused = mixed_op_pair(2)
    takes_halves = [name for name, op in zip(fused.primitives, fused.ops) if getattr(op, "takes_halves", False)]
    assert takes_halves == ["skip_connect", "dil_conv_3x3", "dil_conv_5x5"]
    # Each op's output, seen by a forward hook on its last module (they run forward_halves, not forward).
    outputs = {}
    for name, op in zip(fused.primitives, fused.ops):
        if name in takes_halves:
            last = op.bn if isinstance(op, FactorizedReduce) else op[-1]
            last.register_forward_hook(lambda m, args, out, name=name: outputs.__setitem__(name, out))
    x = torch.randn(3, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    out = fused(x, torch.softmax(torch.randn(len(PRIMITIVES)), 0).double())
    # One subsampling of the shared activation, and all three ops read it.
    (shared,) = halves_nodes(out)
    assert set(outputs) == set(takes_halves)
    assert all(halves_nodes(outputs[name]) == {shared} for name in takes_halves)
