"""The fast path's hand-written gradients equal autograd's, and are skipped when a pass does not ask."""
import copy

import pytest
import torch
import torch.nn.functional as F

import darts.kernels as kernels
from darts.genotypes import PRIMITIVES
from darts.kernels import depthwise_conv2d, weighted_sum
from darts.ops import FactorizedReduce
from darts.runtime import Runtime
from darts.supernet import MixedOp

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


def test_depthwise_weight_gradient_is_skipped_when_the_pass_does_not_ask_for_it(monkeypatch):
    calls = []
    original = kernels.depthwise_weight_grad
    monkeypatch.setattr(kernels, "depthwise_weight_grad", lambda *args: calls.append(1) or original(*args))
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    weight = torch.randn(4, 1, 3, 3, requires_grad=True)
    scale = torch.ones(1, requires_grad=True)
    loss = depthwise_conv2d(x * scale, weight, 1, 2, 2).square().sum()
    torch.autograd.grad(loss, [scale], retain_graph=True)
    loss.backward(inputs=[scale], retain_graph=True)
    assert calls == []
    (weight_grad,) = torch.autograd.grad(loss, [weight], retain_graph=True)
    assert calls == [1]
    expected = torch.autograd.grad(F.conv2d(x * scale, weight, padding=2, dilation=2, groups=4).square().sum(),
                                   [weight])[0]
    torch.testing.assert_close(weight_grad, expected)


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


def mixed_op_pair(stride):
    torch.manual_seed(0)
    plain = MixedOp(4, stride, PRIMITIVES).double()
    fused = copy.deepcopy(plain)
    fused.fused = True
    for module in fused.modules():
        if isinstance(module, kernels.DepthwiseConv2d):
            module.conv_grads = True
    return plain, fused


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [8, 7])
def test_fused_mixed_op_equals_the_published_one(stride, size):
    plain, fused = mixed_op_pair(stride)
    x = torch.randn(3, 4, size, size, dtype=torch.float64)
    alphas = torch.randn(len(PRIMITIVES), dtype=torch.float64)
    results = []
    for op in (plain, fused):
        inputs, weights = x.clone().requires_grad_(), alphas.clone().requires_grad_()
        out = op(inputs, torch.softmax(weights, 0))
        grads = torch.autograd.grad(out.square().sum(), [inputs, weights, *op.parameters()])
        results.append((out, grads))
    torch.testing.assert_close(results[1][0], results[0][0])
    for got, expected in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(got, expected)


def test_fused_mixed_op_runs_one_relu_for_its_four_convolutions(monkeypatch):
    plain, fused = mixed_op_pair(1)
    counts = {}
    for name, op in (("plain", plain), ("fused", fused)):
        calls = []
        monkeypatch.setattr(torch, "relu", lambda t, calls=calls, relu=torch.relu: calls.append(1) or relu(t))
        op(torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.full((len(PRIMITIVES),), 0.125, dtype=torch.float64))
        monkeypatch.undo()
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


def test_stride_two_mixed_op_subsamples_its_activation_once(monkeypatch):
    plain, fused = mixed_op_pair(2)
    assert [fused.primitives[k] for k in fused.from_halves] == ["skip_connect", "dil_conv_3x3", "dil_conv_5x5"]
    calls = []
    original = kernels._Halves.apply
    monkeypatch.setattr(kernels._Halves, "apply", lambda x: calls.append(x.shape) or original(x))
    fused(torch.randn(3, 4, 8, 8, dtype=torch.float64), torch.softmax(torch.randn(len(PRIMITIVES)), 0).double())
    assert calls == [(3, 4, 8, 8)]
