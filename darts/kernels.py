"""Hand-written gradients for the supernet's hottest paths (the fast path's kernels).

A search step on the CPU is bound by memory traffic and by oneDNN's slow
depthwise backward kernels; two functions here cut both.

**Depthwise convolution whose gradients are computed by forward convolutions.**
oneDNN's CPU backward kernels for dilated depthwise convolutions (the ``dil_conv``
ops) are 10-40x slower than its forward kernels: on the CIFAR-10 search supernet
they were a third of a step. The same gradients are forward convolutions in
disguise, for a stride-1 "same" convolution with weight ``w`` (C, 1, k, k):

- the input gradient is the output gradient convolved with the flipped kernel;
- the weight gradient is the padded input convolved with the output gradient
  used as a kernel, one group per (channel, image) pair, summed over images.

A stride-s convolution dilated by s with padding divisible by s only ever reads
every s-th row and column, so it is computed as an undilated stride-1
convolution of the subsampled input (exact, also for odd sizes).

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
    """Stride-1 depthwise convolution with symmetric "same" padding.

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
        channels = weight.shape[0]
        # Under autocast the output (and so its gradient) may be half precision.
        grad_input = grad_weight = None
        if _gradient_wanted(ctx, 0):
            grad_input = F.conv2d(grad_out, weight.flip(-1, -2).to(grad_out.dtype), padding=padding,
                                  dilation=dilation, groups=channels).to(x.dtype)
        if _gradient_wanted(ctx, 1):
            grad_weight = depthwise_weight_grad(x.to(grad_out.dtype), grad_out, weight.shape[-1], padding,
                                                dilation).to(weight.dtype)
        return grad_input, grad_weight, None, None


def depthwise_weight_grad(x: torch.Tensor, grad_out: torch.Tensor, kernel_size: int, padding: int,
                          dilation: int) -> torch.Tensor:
    """Weight gradient of a stride-1 depthwise convolution.

    ``x`` (N, C, H, W) input, ``grad_out`` (N, C, H, W) output gradient -> (C, 1, k, k).
    Tap (i, j) of channel c is sum over n, h, w of x_pad[n, c, h + d*i, w + d*j] * grad_out[n, c, h, w]:
    a convolution of the padded input with ``grad_out`` as the kernel, taken with stride d.
    """
    n, channels, height, width = x.shape
    padded = F.pad(x, (padding,) * 4)
    images_as_channels = padded.transpose(0, 1).reshape(1, channels * n, height + 2 * padding, width + 2 * padding)
    kernels = grad_out.transpose(0, 1).reshape(channels * n, 1, height, width)
    per_image = F.conv2d(images_as_channels, kernels, stride=dilation, groups=channels * n)
    return per_image.view(channels, n, kernel_size, kernel_size).sum(1, keepdim=True)


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


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` with ``groups == channels`` that can use :func:`depthwise_conv2d`.

    ``conv_grads`` is switched on by :meth:`darts.runtime.Runtime.prepare` where it is faster; off,
    it is a plain ``nn.Conv2d`` (the eager baseline). The parameters are a plain conv's.
    """

    def __init__(self, channels: int, kernel_size: int, stride: int, padding: int, dilation: int = 1):
        super().__init__(channels, channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=channels, bias=False)
        self.conv_grads = False

    def forward(self, x):
        if not self.conv_grads:
            return super().forward(x)
        return depthwise_conv2d(x, self.weight, self.stride[0], self.padding[0], self.dilation[0])


def use_conv_grads(model: nn.Module, enabled: bool) -> None:
    for module in model.modules():
        if isinstance(module, DepthwiseConv2d):
            module.conv_grads = enabled


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
