"""The auxiliary heads of the DARTS evaluation networks (one per network type).

Each reads the cell at 2/3 depth in training and returns (N, num_classes) logits, weighted into the
loss by ``train.auxiliary_weight``; eval mode never runs them.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class AuxiliaryHead(nn.Module):
    """ReLU, 5x5 average pool, 1x1 conv to 128, BN, ReLU, 2x2 conv to 768, [BN], ReLU, linear.

    The published heads only work when their 5x5 pool leaves a 2x2 map (the
    2x2 conv then leaves 1x1 and the linear layer sees 768 features). For those
    input sizes the published pool is used unchanged; for any other size (e.g.
    7x7 from 28x28 Fashion-MNIST in the CIFAR network, where the published pool
    gives 1x1 and the 2x2 conv fails) an adaptive average pool to 2x2 replaces
    it. The fallback has no parameters, so the parameter count is unchanged.

    Input (N, C, H, W) -> output (N, num_classes).
    """

    def __init__(self, C: int, num_classes: int, pool_stride: int, batchnorm_after_conv2x2: bool):
        super().__init__()
        self.pool_stride = pool_stride
        self.relu = nn.ReLU(inplace=False)
        self.published_pool = nn.AvgPool2d(5, stride=pool_stride, padding=0, count_include_pad=False)
        self.fallback_pool = nn.AdaptiveAvgPool2d(2)
        layers: list[nn.Module] = [
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False),
        ]
        if batchnorm_after_conv2x2:
            layers.append(nn.BatchNorm2d(768))
        layers.append(nn.ReLU(inplace=False))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(768, num_classes)

    def _published_pool_fits(self, height: int, width: int) -> bool:
        def pooled(size: int) -> int:
            return (size - 5) // self.pool_stride + 1 if size >= 5 else 0

        return pooled(height) == 2 and pooled(width) == 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, num_classes)."""
        x = self.relu(x)
        if self._published_pool_fits(x.shape[-2], x.shape[-1]):
            x = self.published_pool(x)
        else:
            x = self.fallback_pool(x)
        x = self.features(x)  # (N, 768, 1, 1)
        return self.classifier(torch.flatten(x, 1))


class AuxiliaryHeadCIFAR(AuxiliaryHead):
    """The published CIFAR auxiliary head, for the 8x8 map after the cell at 2/3 depth.

    At 8x8 (and 9x9, 10x10) it is identical to the published head
    (AvgPool2d(5, stride=3) -> 2x2); other sizes pool adaptively to 2x2.
    (N, C, H, W) -> (N, num_classes).
    """

    def __init__(self, C: int, num_classes: int):
        super().__init__(C, num_classes, pool_stride=3, batchnorm_after_conv2x2=True)


class AuxiliaryHeadImageNet(AuxiliaryHead):
    """The published ImageNet auxiliary head: AvgPool2d(5, stride=2) and no BN after the 2x2 conv.

    The published code comments out the BatchNorm2d(768) after the 2x2 conv
    ("omitted in my earlier implementation due to a typo", kept out for
    consistency with the paper's experiments); we keep it out too, so the
    published parameter count holds. The published docstring says the input is
    14x14, but the head sits after the second reduction cell, which gives 7x7
    at a 224 input; 5x5 pool stride 2 turns 7x7 (and 8x8) into 2x2. Other sizes
    pool adaptively to 2x2. (N, C, H, W) -> (N, num_classes).
    """

    def __init__(self, C: int, num_classes: int):
        super().__init__(C, num_classes, pool_stride=2, batchnorm_after_conv2x2=False)
