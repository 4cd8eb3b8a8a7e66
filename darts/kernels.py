"""Hand-written gradients for the supernet's hottest paths (the fast path's kernels).

A search step on the CPU is bound by memory traffic and by oneDNN's slow
depthwise backward kernels; the functions here cut both.

**Dilated depthwise convolution with gradients by fast kernels.** oneDNN's CPU
backward kernels for dilated depthwise convolutions (the ``dil_conv`` ops) are
several times slower than its forward kernels. For a stride-1 "same" convolution
with weight ``w`` (C, 1, k, k) the same gradients come from faster kernels:

- the input gradient is the output gradient convolved (forward) with the flipped kernel;
- the weight gradient of a 3 x 3 kernel dilated by d is the undilated weight gradient
  over the d*d polyphase images of input and output gradient (:func:`space_to_batch`),
  which oneDNN computes quickly; for 5 x 5 kernels it is the padded input convolved
  with the output gradient used as a kernel, one group per (channel, image) pair.

A stride-s convolution dilated by s with padding divisible by s only ever reads
every s-th row and column, so it is computed as an undilated stride-1
convolution of the subsampled input (exact, also for odd sizes).

**Gradients in the activations' memory layout.** Two ops hand their backward a
gradient in another layout than the activations they feed: global average pooling
(an NCHW gradient, so the whole last cell's backward ran in mixed layouts) and the
cell's channel concatenation (each node's gradient a strided channel slice of the
concatenation's). Every elementwise kernel that mixes layouts or reads a strided
slice runs several times slower; :func:`concat_channels` and :func:`dense_grad`
hand back dense gradients in the forward tensors' layout instead.

**The mixed op's weighted sum** ``sum_k w[k] * out_k`` accumulated in place, with
each alpha gradient a dot product: autograd's version writes a product per op in
forward and two per op in backward.

Every gradient is written with differentiable ops, so double backward (the exact
Hessian-vector product of second-order search) works through both.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from darts.fastpath import FastPathOptions

DEPTHWISE_GRADS = ("auto", "conv", "native")


def _gradient_wanted(ctx, index: int, node: int | None = None) -> bool:
    """Whether this backward pass uses the gradient of ``forward``'s argument ``index``, which is
    tensor argument ``node`` (the same number unless non-tensor arguments come before it).

    ``needs_input_grad`` only says whether the input requires grad; the engine knows whether the
    pass asked for it (``backward(inputs=alphas)``, ``autograd.grad(loss, alphas)``), which is
    what spares the alpha step every weight gradient. The engine cannot answer for a leaf under
    ``autograd.grad``, so callers pass parameters through a view.
    """
    if not ctx.needs_input_grad[index]:
        return False
    try:
        return torch._C._will_engine_execute_node(ctx.next_functions[index if node is None else node][0])
    except (AttributeError, RuntimeError):  # an older torch, or a leaf: compute it
        return True


class _SameDepthwiseConv(torch.autograd.Function):
    """Stride-1 dilated depthwise convolution with symmetric "same" padding.

    ``x`` (N, C, H, W), ``weight`` (C, 1, k, k) -> (N, C, H, W).
    """

    @staticmethod
    def forward(ctx, x, weight, padding: int, dilation: int):
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.dilation = padding, dilation
        return F.conv2d(x, weight, padding=padding, dilation=dilation, groups=weight.shape[0])

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        padding, dilation = ctx.padding, ctx.dilation
        # Under autocast the output (and so its gradient) may be half precision.
        grad_input = grad_weight = None
        if _gradient_wanted(ctx, 0):
            grad_input = F.conv2d(grad_out, weight.flip(-1, -2).to(grad_out.dtype), padding=padding,
                                  dilation=dilation, groups=weight.shape[0]).to(x.dtype)
        if _gradient_wanted(ctx, 1):
            grad_weight = depthwise_weight_grad(x.to(grad_out.dtype), grad_out, weight.to(grad_out.dtype), padding,
                                                dilation).to(weight.dtype)
        return grad_input, grad_weight, None, None


def depthwise_weight_grad(x: torch.Tensor, grad_out: torch.Tensor, weight: torch.Tensor, padding: int,
                          dilation: int) -> torch.Tensor:
    """Weight gradient of a stride-1 "same" dilated depthwise convolution.

    ``x`` (N, C, H, W) input, ``grad_out`` (N, C, H, W) output gradient, ``weight`` (C, 1, k, k) -> (C, 1, k, k).
    A 3 x 3 kernel dilated by d on sizes divisible by d is an undilated one summed over the d*d
    polyphase images (:func:`space_to_batch`), whose gradient oneDNN has a fast kernel for; the
    others (5 x 5, odd sizes) go through :func:`weight_grad_as_grouped_conv`, faster there than
    oneDNN's dilated kernel.
    """
    height, width = x.shape[-2:]
    if weight.shape[-1] == 3 and height % dilation == 0 and width % dilation == 0:
        x, grad_out = space_to_batch(x, dilation), space_to_batch(grad_out, dilation)
        return torch.ops.aten.convolution_backward(grad_out, x, weight, None, [1, 1], [padding // dilation] * 2,
                                                   [1, 1], False, [0, 0], weight.shape[0], [False, True, False])[1]
    return weight_grad_as_grouped_conv(x, grad_out, weight.shape[-1], padding, dilation)


def weight_grad_as_grouped_conv(x: torch.Tensor, grad_out: torch.Tensor, kernel_size: int, padding: int,
                                dilation: int) -> torch.Tensor:
    """Weight gradient of a stride-1 depthwise convolution.

    ``x`` (N, C, H, W) input, ``grad_out`` (N, C, H, W) output gradient -> (C, 1, k, k).
    Tap (i, j) of channel c is sum over n, h, w of x_pad[n, c, h + d*i, w + d*j] * grad_out[n, c, h, w]:
    a convolution of the zero-padded input with ``grad_out`` as the kernel, taken with stride d
    (the convolution pads: a padded copy would cost a zero fill and a copy of the input).
    """
    n, channels, height, width = x.shape
    images_as_channels = x.transpose(0, 1).reshape(1, channels * n, height, width)
    kernels = grad_out.transpose(0, 1).reshape(channels * n, 1, height, width)
    per_image = F.conv2d(images_as_channels, kernels, stride=dilation, padding=padding, groups=channels * n)
    return per_image.view(channels, n, kernel_size, kernel_size).sum(1, keepdim=True)


def space_to_batch(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(N, C, H, W) -> (factor**2 * N, C, H/factor, W/factor): the polyphase images
    ``x[:, :, p::factor, q::factor]``, phase-major, in ``x``'s layout (one copy)."""
    n, c, h, w = x.shape
    if _layout(x) == torch.channels_last:
        phases = x.permute(0, 2, 3, 1).reshape(n, h // factor, factor, w // factor, factor, c)
        phases = phases.permute(2, 4, 0, 1, 3, 5).reshape(factor * factor * n, h // factor, w // factor, c)
        return phases.permute(0, 3, 1, 2)
    phases = x.reshape(n, c, h // factor, factor, w // factor, factor).permute(3, 5, 0, 1, 2, 4)
    return phases.reshape(factor * factor * n, c, h // factor, w // factor)


def batch_to_space(y: torch.Tensor, factor: int) -> torch.Tensor:
    """The inverse of :func:`space_to_batch`: (factor**2 * N, C, h, w) -> (N, C, factor * h, factor * w)."""
    batch, c, h, w = y.shape
    n = batch // (factor * factor)
    if _layout(y) == torch.channels_last:
        image = y.permute(0, 2, 3, 1).reshape(factor, factor, n, h, w, c).permute(2, 3, 0, 4, 1, 5)
        return image.reshape(n, factor * h, factor * w, c).permute(0, 3, 1, 2)
    image = y.reshape(factor, factor, n, c, h, w).permute(2, 3, 4, 0, 5, 1)
    return image.reshape(n, c, factor * h, factor * w)


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int,
                     dilation: int) -> torch.Tensor:
    """Depthwise convolution, ``x`` (N, C, H, W), ``weight`` (C, 1, k, k), with fast gradients where it can."""
    kernel_size = weight.shape[-1]
    if stride > 1 and stride == dilation and padding % stride == 0:
        x, padding, dilation, stride = x[:, :, ::stride, ::stride], padding // stride, 1, 1
    # Undilated, oneDNN's own backward is as fast (measured on the search and final networks).
    if stride == 1 and dilation > 1 and 2 * padding == dilation * (kernel_size - 1):
        # The view lets the backward ask the engine whether the weight's gradient is wanted.
        return _SameDepthwiseConv.apply(x, weight.view_as(weight), padding, dilation)
    return F.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation, groups=weight.shape[0])


class _Halves(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.shape, ctx.layout = x.shape, _layout(x)
        return (x[:, :, ::2, ::2].contiguous(memory_format=ctx.layout),
                x[:, :, 1::2, 1::2].contiguous(memory_format=ctx.layout))

    @staticmethod
    def backward(ctx, grad_even, grad_odd):
        reference = grad_even if grad_even is not None else grad_odd
        grad = torch.empty(ctx.shape, dtype=reference.dtype, device=reference.device,
                           memory_format=ctx.layout).zero_()
        if grad_even is not None:
            grad[:, :, ::2, ::2] = grad_even
        if grad_odd is not None:
            grad[:, :, 1::2, 1::2] = grad_odd
        return grad


def subsampled_halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x[:, :, ::2, ::2]`` and ``x[:, :, 1::2, 1::2]``, dense in ``x``'s layout, for every stride-2
    op of a mixed op to share: the backward scatters both gradients into one zero tensor, where
    each op slicing for itself costs a full-size zero fill, a copy and an accumulation apiece.
    x: (N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2)), (N, C, floor(H/2), floor(W/2))."""
    if torch.compiler.is_compiling():  # the compiler plans its own copies
        return x[:, :, ::2, ::2], x[:, :, 1::2, 1::2]
    return _Halves.apply(x)


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` with ``groups == channels`` that can use :func:`depthwise_conv2d`.

    ``conv_grads`` comes from the fast-path options (``configure_fast_path``) where it is faster;
    off, it is a plain ``nn.Conv2d`` (the eager baseline). The parameters are a plain conv's.
    """

    def __init__(self, channels: int, kernel_size: int, stride: int, padding: int, dilation: int = 1):
        super().__init__(channels, channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=channels, bias=False)
        self.conv_grads = False

    def configure_fast_path(self, options: FastPathOptions) -> None:
        self.conv_grads = options.depthwise_conv_grads

    def forward(self, x):
        if not self.conv_grads:
            return super().forward(x)
        return depthwise_conv2d(x, self.weight, self.stride[0], self.padding[0], self.dilation[0])

    @property
    def reads_even_pixels(self) -> bool:
        """Whether it reads only ``x[:, :, ::2, ::2]`` (stride 2 = dilation 2, even padding)."""
        return self.stride[0] == self.dilation[0] == 2 and self.padding[0] % 2 == 0

    def forward_even(self, even: torch.Tensor) -> torch.Tensor:
        """The same output from ``x[:, :, ::2, ::2]`` (requires ``reads_even_pixels``)."""
        return F.conv2d(even, self.weight, padding=self.padding[0] // 2, groups=self.groups)


def _layout(t: torch.Tensor) -> torch.memory_format:
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


class _DenseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.layout = _layout(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=ctx.layout)


def dense_grad(x: torch.Tensor) -> torch.Tensor:
    """``x`` unchanged; its gradient comes back dense in ``x``'s memory layout (a no-op if it is)."""
    if torch.compiler.is_compiling():  # the compiler chooses the layouts of gradients itself
        return x
    return _DenseGrad.apply(x)


class _ConcatChannels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, *tensors):
        ctx.splits = [t.shape[1] for t in tensors]
        ctx.layouts = [_layout(t) for t in tensors]
        return torch.cat(tensors, dim=1)

    @staticmethod
    def backward(ctx, grad):
        return tuple(part.contiguous(memory_format=layout)
                     for part, layout in zip(grad.split(ctx.splits, dim=1), ctx.layouts))


def concat_channels(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(tensors, dim=1)`` whose backward gives each input a dense gradient in its own
    layout rather than a strided slice. tensors: (N, C_i, H, W) -> (N, sum C_i, H, W)."""
    if torch.compiler.is_compiling():
        return torch.cat(tensors, dim=1)
    return _ConcatChannels.apply(*tensors)


def _flat(t: torch.Tensor) -> torch.Tensor:
    """A dense tensor as a 1-D view in memory order (NCHW or NHWC alike)."""
    return t.as_strided((t.numel(),), (1,), t.storage_offset())


def _dense_like(t: torch.Tensor, other: torch.Tensor) -> bool:
    dense = t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)
    return dense and t.stride() == other.stride()


class _WeightedSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weights, indices, *outputs):
        total = outputs[0] * weights[indices[0]].to(outputs[0].dtype)
        for index, out in zip(indices[1:], outputs[1:]):
            total.addcmul_(out, weights[index].to(out.dtype))
        ctx.indices, ctx.num_weights = indices, weights.shape[0]
        # The op outputs are needed only for the weights' gradient.
        ctx.save_for_backward(weights, *(outputs if ctx.needs_input_grad[0] else ()))
        return total

    @staticmethod
    def backward(ctx, grad):
        weights, *outputs = ctx.saved_tensors
        grad_outputs = [grad * weights[index].to(grad.dtype) if _gradient_wanted(ctx, 2 + k, 1 + k) else None
                        for k, index in enumerate(ctx.indices)]
        grad_weights = None
        if _gradient_wanted(ctx, 0) and outputs:
            dots = [torch.dot(_flat(grad), _flat(out)) if _dense_like(grad, out) and _dense_like(out, grad)
                    else (grad * out).sum() for out in outputs]
            # Stacked with zeros for the ops that did not run: no index tensor to copy to the device.
            by_index, zero = dict(zip(ctx.indices, dots)), grad.new_zeros(())
            grad_weights = torch.stack([by_index.get(i, zero) for i in range(ctx.num_weights)]).to(weights.dtype)
        return grad_weights, None, *grad_outputs


def weighted_sum(weights: torch.Tensor, indices: tuple[int, ...], outputs: list[torch.Tensor]) -> torch.Tensor:
    """``sum_k weights[indices[k]] * outputs[k]``.

    weights: (ops,); outputs: tensors of one shape, one per index -> a tensor of that shape.
    """
    return _WeightedSum.apply(weights.view_as(weights), tuple(indices), *outputs)
