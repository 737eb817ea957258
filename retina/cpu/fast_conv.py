"""nn.Conv2d whose weight gradient on small maps is one matrix product, for CPU training.

oneDNN's backward-weights kernel parallelizes and blocks over the output positions; where a map has
only a handful of them (the cpu profile's C5 stage: 512 channels on 3x3 maps, and P5..P7) it reaches
~15-40 GFLOP/s on an AVX2 core, against ~60-80 for the forward pass. Unfolding the input (im2col:
(N * positions) x (C * kh * kw), small exactly when the map is) and multiplying it by the output
gradient computes the same weight gradient in one GEMM, 2-4x faster there. The input gradient and the
forward pass stay oneDNN's. tests/test_speed_paths.py checks the gradients against nn.Conv2d.

Not done here, measured: Winograd F(4x4, 3x3) (retina/winograd.py) for the backbone's 3x3 convs on
the larger maps (C2, C3 at 96 px) would save another ~40 ms of a ~700 ms step, but its rounding
(~1e-5 of the outputs) flips enough ReLUs in front of the batch-norm layers to move some BatchNorm
parameters' gradients by ~2% (a change of memory format moves them by ~0.04%); in the subnets
(GroupNorm) the gradients stay within ~3e-5 of the direct convolution's.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

# Output positions (H_out * W_out) up to which the weight gradient is one matrix product.
SMALL_MAP_POSITIONS = 16


def applies(x: torch.Tensor) -> bool:
    """Whether the fast CPU convolutions (this module's and retina/winograd.py's) take ``x``: a CPU
    tensor, outside CPU autocast. They compute in their inputs' dtype; under autocast (bf16 mixed
    precision, ``train.amp_cpu``) the standard modules run, and autocast chooses each op's precision."""
    return x.device.type == "cpu" and not torch.is_autocast_enabled("cpu")


class _Conv2dGemmWeightGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                stride: Tuple[int, int], padding: Tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.has_bias = list(stride), list(padding), bias is not None
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_y, x, weight, None, ctx.stride, ctx.padding, [1, 1], False, [0, 0], 1,
                [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            n, k = grad_y.shape[:2]
            cols = F.unfold(x, weight.shape[2:], padding=ctx.padding, stride=ctx.stride)  # (N, C*kh*kw, L)
            positions = cols.shape[2]
            g = grad_y.reshape(n, k, positions).transpose(0, 1).reshape(k, n * positions)
            grad_w = (g @ cols.transpose(1, 2).reshape(n * positions, -1)).view_as(weight)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_y.sum(dim=(0, 2, 3))
        return grad_x, grad_w, grad_b, None, None


class FastConv2d(nn.Conv2d):
    """An nn.Conv2d (the same parameters, state_dict and forward pass) whose weight gradient, on CPU and
    for outputs of at most SMALL_MAP_POSITIONS positions, is computed as unfold + one matrix product."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if applies(x) and torch.is_grad_enabled() and self.weight.requires_grad:
            h, w = x.shape[-2:]
            (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
            if ((h + 2 * ph - kh) // sh + 1) * ((w + 2 * pw - kw) // sw + 1) <= SMALL_MAP_POSITIONS:
                return _Conv2dGemmWeightGrad.apply(x, self.weight, self.bias, self.stride, self.padding)
        return super().forward(x)


def use_fast_convs(module: nn.Module, on: bool) -> None:
    """Turn the 3x3 nn.Conv2d modules in ``module`` (groups 1, no dilation, zero padding) into
    FastConv2d (``on``) or back; parameters and state_dict keys are untouched."""
    for m in module.modules():
        if on and type(m) is nn.Conv2d and m.kernel_size == (3, 3) and m.groups == 1 \
                and m.dilation == (1, 1) and m.padding_mode == "zeros" and isinstance(m.padding, tuple):
            m.__class__ = FastConv2d
        elif not on and type(m) is FastConv2d:
            m.__class__ = nn.Conv2d
