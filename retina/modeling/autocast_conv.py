"""A convolution that stays correct under CPU bf16 autocast on maps one position wide.

Measured with torch 2.14.1 (oneDNN 3.12) on an AVX512-BF16 CPU: the weight gradient of a bf16 3x3
stride-2 convolution with padding 1 on an input one position wide (the pyramid's top, P6 and P7, for
images up to 64-128 px) is wrong in the kernel taps that see only padding: they hold whatever the
memory held (40 of 50 trials not zero, 21 of 50 non-finite; fp32, other widths and strides, and the
same convolution with the zero padding applied beforehand are right). Under ``train.amp_cpu`` that
turned a tiny training's weights to NaN at a random iteration. Here such convolutions pad
explicitly; everything else, and everything outside CPU autocast, is the module's own forward.
tests/test_model.py checks the gradients against float64.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def needs_explicit_padding(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and any(conv.padding)
            and min(x.shape[-2:]) == 1 and conv.padding_mode == "zeros")


def conv2d(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``, with the zero padding applied to ``x`` first where oneDNN's bf16 kernel errs."""
    if not needs_explicit_padding(conv, x):
        return conv(x)
    ph, pw = conv.padding
    return F.conv2d(F.pad(x, (pw, pw, ph, ph)), conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)
