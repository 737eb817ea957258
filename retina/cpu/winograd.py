"""3x3 convolutions (stride 1, padding 1) by Winograd's minimal filtering, for the subnets on CPU.

The subnets run the same 3x3 convs over the five pyramid levels. At the cpu profile's sizes (P3..P7
of a 96 px input are 12x12 .. 1x1) oneDNN's direct convolution is the whole cost of a training step,
and on AVX2 CPUs oneDNN has no Winograd kernels (only on AVX-512). F(m x m, 3x3) computes each m x m
output tile from an (m + 2) x (m + 2) input tile with (m + 2)^2 multiplies per (input channel, output
channel) instead of 9 m^2: the input tiles and the weights are transformed (``V = B^T d B``,
``U = G g G^T``), multiplied element-wise in the transformed domain, which over channels is (m + 2)^2
independent matrix products (one ``bmm`` of ((m+2)^2, T, C) by ((m+2)^2, C, K)), and transformed back
(``Y = A^T M A``). The tiles of all levels go through the same ``bmm``, so the small levels cost no
extra calls.

Two tile sizes: F(4x4, 3x3) (36 products for 16 outputs: 2.25x fewer multiplies than F(2x2, 3x3)'s
16 for 4 and 4x fewer than direct) where the C transforms of retina/cpu/kernels.py are built, and
F(2x2, 3x3) in PyTorch ops otherwise (its transforms have coefficients 0, +-1, +-1/2 only, which
suits ops that each make a pass over memory). Both equal the direct convolution up to float32
rounding, F(4x4) with errors a few times those of direct convolution (tests/test_speed_paths.py
checks outputs and all gradients against F.conv2d).

Tensors are channels-last, (N, H, W, C) contiguous, so that the channel dimension is the inner one
of the matrix products and a predictor's (N, H, W, A*K) output is already in the (N, H*W*A, K)
order of the anchors. The backward pass is written by hand (the transposed transforms), and
keeps the transformed input for it only while that is small (``KEEP_TRANSFORMED_MAX_BYTES``) and
recomputes it otherwise, so that large inputs cost no more memory than a direct convolution.

Reference: A. Lavin and S. Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

from . import kernels
from .fast_conv import FastConv2d, applies

# G ((m + 2) x 3): the weight transform; U = G g G^T for each (output, input) channel pair's kernel g.
_G = {
    2: ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0)),
    4: ((1 / 4, 0.0, 0.0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
        (1 / 24, -1 / 12, 1 / 6), (0.0, 0.0, 1.0)),
}


def _kron_g(m: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """((m+2)^2, 9): row i*(m+2)+j, column a*3+b holds G[i, a] * G[j, b]."""
    g = torch.tensor(_G[m], dtype=torch.float64)
    return torch.kron(g, g).to(dtype=dtype, device=device)


def weight_transform(weight: torch.Tensor, m: int = 2) -> torch.Tensor:
    """(K, C, 3, 3) -> U ((m+2)^2, K, C) (one small matrix product, no copy of the weight)."""
    k, c = weight.shape[:2]
    return (_kron_g(m, weight.dtype, weight.device) @ weight.reshape(k * c, 9).t()).view(-1, k, c)


def weight_transform_t(grad_u: torch.Tensor, m: int = 2) -> torch.Tensor:
    """Transpose of :func:`weight_transform`: ((m+2)^2, K, C) -> (K, C, 3, 3)."""
    a2, k, c = grad_u.shape
    g9 = _kron_g(m, grad_u.dtype, grad_u.device).t() @ grad_u.reshape(a2, k * c)  # (9, K*C)
    return g9.t().contiguous().view(k, c, 3, 3)


def _tiles(h: int, w: int, m: int = 2) -> Tuple[int, int]:
    return -(-h // m), -(-w // m)


def _pair_forward(src: torch.Tensor, dim: int, out: torch.Tensor, out_dim: int) -> None:
    """One 1-D stage of ``B^T d``: along ``dim`` of ``src`` (length 2t + 2) into the 4 slots of
    ``out`` along ``out_dim`` (each of length t along ``dim``)."""
    even = src.narrow(dim, 0, src.shape[dim] - 1)[(slice(None),) * dim + (slice(0, None, 2),)]
    odd = src.narrow(dim, 1, src.shape[dim] - 1)[(slice(None),) * dim + (slice(0, None, 2),)]
    t = even.shape[dim] - 1
    e0, e1 = even.narrow(dim, 0, t), even.narrow(dim, 1, t)  # d0, d2 of each tile
    o0, o1 = odd.narrow(dim, 0, t), odd.narrow(dim, 1, t)  # d1, d3
    torch.sub(e0, e1, out=out.select(out_dim, 0))  # d0 - d2
    torch.add(o0, e1, out=out.select(out_dim, 1))  # d1 + d2
    torch.sub(e1, o0, out=out.select(out_dim, 2))  # d2 - d1
    torch.sub(o0, o1, out=out.select(out_dim, 3))  # d1 - d3


def _pair_backward(grad: torch.Tensor, grad_dim: int, out: torch.Tensor, dim: int) -> None:
    """Transpose of :func:`_pair_forward`: ``grad`` (4 slots along ``grad_dim``, t along ``dim``) into
    ``out`` (length 2t + 2 along ``dim``), overwriting it."""
    g0, g1, g2, g3 = (grad.select(grad_dim, i) for i in range(4))
    n = out.shape[dim]
    even = out[(slice(None),) * dim + (slice(0, None, 2),)]  # t + 1 each
    odd = out[(slice(None),) * dim + (slice(1, None, 2),)]
    t = n // 2 - 1
    e_lo, e_hi = even.narrow(dim, 0, t), even.narrow(dim, 1, t)
    o_lo, o_hi = odd.narrow(dim, 0, t), odd.narrow(dim, 1, t)
    # even[s] = g0[s] - g0[s-1] + g1[s-1] + g2[s-1];  odd[s] = g1[s] - g2[s] + g3[s] - g3[s-1]
    even.narrow(dim, t, 1).zero_()
    e_lo.copy_(g0)
    e_hi.sub_(g0).add_(g1).add_(g2)  # e_hi overlaps e_lo in t - 1 entries: after the copy
    odd.narrow(dim, t, 1).zero_()
    torch.sub(g1, g2, out=o_lo)
    o_lo.add_(g3)
    o_hi.sub_(g3)


def input_transform(x: torch.Tensor, out: torch.Tensor) -> None:
    """x (N, H, W, C) -> ``out`` (4, 4, N, th, tw, C) = B^T d B of every 4x4 tile (stride 2) of x
    zero-padded by 1 (and by one more row / column where H / W is odd)."""
    n, h, w, c = x.shape
    th, tw = _tiles(h, w)
    xp = x.new_zeros(n, 2 * th + 2, 2 * tw + 2, c)
    xp[:, 1:h + 1, 1:w + 1] = x
    rows = x.new_empty(4, n, th, 2 * tw + 2, c)
    _pair_forward(xp, 1, rows, 0)  # over rows (i)
    _pair_forward(rows, 3, out, 1)  # over columns (j)


def input_transform_t(grad_v: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Transpose of :func:`input_transform`: (4, 4, N, th, tw, C) -> (N, H, W, C)."""
    _, _, n, th, tw, c = grad_v.shape
    rows = grad_v.new_empty(4, n, th, 2 * tw + 2, grad_v.shape[-1])
    _pair_backward(grad_v, 1, rows, 3)
    xp = grad_v.new_empty(n, 2 * th + 2, 2 * tw + 2, c)
    _pair_backward(rows, 0, xp, 1)
    return xp[:, 1:h + 1, 1:w + 1].contiguous()


def output_transform(m: torch.Tensor, h: int, w: int, bias: torch.Tensor | None) -> torch.Tensor:
    """m (4, 4, N, th, tw, K) -> (N, H, W, K) = A^T m A (+ bias), A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]."""
    _, _, n, th, tw, k = m.shape
    s = m.new_empty(2, 4, n, th, tw, k)
    torch.add(m[0], m[1], out=s[0]).add_(m[2])
    torch.sub(m[1], m[2], out=s[1]).sub_(m[3])
    y = m.new_empty(n, th, 2, tw, 2, k)
    for a in range(2):
        torch.add(s[a, 0], s[a, 1], out=y[:, :, a, :, 0]).add_(s[a, 2])
        torch.sub(s[a, 1], s[a, 2], out=y[:, :, a, :, 1]).sub_(s[a, 3])
    y = y.view(n, 2 * th, 2 * tw, k)
    if 2 * th != h or 2 * tw != w:
        y = y[:, :h, :w]
    return y + bias if bias is not None else y.contiguous()


def output_transform_t(grad_y: torch.Tensor, out: torch.Tensor) -> None:
    """Transpose of :func:`output_transform` (without the bias): (N, H, W, K) -> ``out`` (4, 4, N, th, tw, K)."""
    n, h, w, k = grad_y.shape
    th, tw = out.shape[3], out.shape[4]
    if 2 * th != h or 2 * tw != w:
        grad_y = torch.nn.functional.pad(grad_y, (0, 0, 0, 2 * tw - w, 0, 2 * th - h))
    g = grad_y.reshape(n, th, 2, tw, 2, k)
    gs = grad_y.new_empty(2, 4, n, th, tw, k)
    for a in range(2):
        g0, g1 = g[:, :, a, :, 0], g[:, :, a, :, 1]
        gs[a, 0].copy_(g0)
        torch.add(g0, g1, out=gs[a, 1])
        torch.sub(g0, g1, out=gs[a, 2])
        torch.neg(g1, out=gs[a, 3])
    out[0].copy_(gs[0])
    torch.add(gs[0], gs[1], out=out[1])
    torch.sub(gs[0], gs[1], out=out[2])
    torch.neg(gs[1], out=out[3])


# The backward pass needs the transformed input V (4x the input's size): kept from the forward pass up
# to this size, recomputed beyond it (large images) so that a layer stores no more than its input.
KEEP_TRANSFORMED_MAX_BYTES = 64 * 2 ** 20


def _levels(xs: Sequence[torch.Tensor], m: int) -> List[Tuple[int, int, int, int, int]]:
    """Per input: (N, H, W, first tile row, tiles)."""
    out, start = [], 0
    for x in xs:
        n, h, w = x.shape[:3]
        th, tw = _tiles(h, w, m)
        out.append((n, h, w, start, n * th * tw))
        start += n * th * tw
    return out


def _transform_inputs(xs: Sequence[torch.Tensor], levels, m: int, lib) -> torch.Tensor:
    """V ((m+2)^2, T, C) of all inputs' tiles: F(4x4) by the C kernels, F(2x2) by PyTorch ops."""
    c = xs[0].shape[3]
    total = levels[-1][3] + levels[-1][4]
    v = xs[0].new_empty((m + 2) ** 2, total, c)
    for x, (n, h, w, t0, t) in zip(xs, levels):
        if lib is not None:
            lib.wg_input(x.data_ptr(), v.data_ptr(), n, h, w, c, total, t0)
        else:
            th, tw = _tiles(h, w)
            input_transform(x, v.view(4, 4, total, c)[:, :, t0:t0 + t].view(4, 4, n, th, tw, c))
    return v


class _WinogradConv3x3(torch.autograd.Function):
    """Several 3x3 convs (``num_weights``, each over the same inputs) applied to several inputs."""

    @staticmethod
    def forward(ctx, num_weights: int, *args):
        weights, biases, xs = args[:num_weights], args[num_weights:2 * num_weights], args[2 * num_weights:]
        lib = kernels.load() if kernels.usable(*xs, *weights, *biases) else None
        m = 4 if lib is not None else 2
        a = m + 2
        levels = _levels(xs, m)
        v = _transform_inputs(xs, levels, m, lib)
        total = v.shape[1]
        u = torch.cat([weight_transform(wt, m) for wt in weights], dim=1)  # (a^2, sum K, C)
        ksum = u.shape[1]
        prod = torch.bmm(v, u.transpose(1, 2))  # (a^2, T, sum K)
        outs = []
        ks = [wt.shape[0] for wt in weights]
        for n, h, w, t0, t in levels:
            k0 = 0
            for k, b in zip(ks, biases):
                if lib is not None:
                    y = prod.new_empty(n, h, w, k)
                    lib.wg_output(prod.data_ptr(), y.data_ptr(), None if b is None else b.data_ptr(), n, h, w, k,
                                  ksum, total, t0, k0)
                else:
                    th, tw = _tiles(h, w)
                    mk = prod.view(a, a, total, ksum)[:, :, t0:t0 + t, k0:k0 + k].reshape(a, a, n, th, tw, k)
                    y = output_transform(mk, h, w, b)
                outs.append(y)
                k0 += k
        ctx.keep_v = v.numel() * v.element_size() <= KEEP_TRANSFORMED_MAX_BYTES
        ctx.save_for_backward(u, v if ctx.keep_v else None, *xs)
        ctx.ks, ctx.levels, ctx.m, ctx.use_lib = ks, levels, m, lib is not None
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        u, v, *xs = ctx.saved_tensors
        ks, levels, m = ctx.ks, ctx.levels, ctx.m
        a = m + 2
        lib = kernels.load() if ctx.use_lib else None  # F(4x4) is C only: the same as in forward
        grads = [g if g is None or g.is_contiguous() else g.contiguous() for g in grads]
        nw = len(ks)
        ksum, c = u.shape[1], u.shape[2]
        total = levels[-1][3] + levels[-1][4]
        gm = u.new_empty(a * a, total, ksum)
        gbias = [None] * nw
        for li, (n, h, w, t0, t) in enumerate(levels):
            k0 = 0
            for wi, k in enumerate(ks):
                gy = grads[li * nw + wi]
                if gy is None:
                    gm[:, t0:t0 + t, k0:k0 + k].zero_()
                else:
                    if ctx.needs_input_grad[1 + nw + wi]:
                        gb = gy.sum(dim=(0, 1, 2))
                        gbias[wi] = gb if gbias[wi] is None else gbias[wi] + gb
                    if lib is not None:
                        lib.wg_output_t(gy.data_ptr(), gm.data_ptr(), n, h, w, k, ksum, total, t0, k0)
                    else:
                        th, tw = _tiles(h, w)
                        target = gm.view(a, a, total, ksum)[:, :, t0:t0 + t, k0:k0 + k]
                        output_transform_t(gy, target.view(a, a, n, th, tw, k))
                k0 += k
        grad_x = [None] * len(xs)
        if any(ctx.needs_input_grad[1 + 2 * nw:]):
            gv = torch.bmm(gm, u)  # (a^2, T, C)
            for li, (n, h, w, t0, t) in enumerate(levels):
                if lib is not None:
                    grad_x[li] = gv.new_zeros(n, h, w, c)
                    lib.wg_input_t(gv.data_ptr(), grad_x[li].data_ptr(), n, h, w, c, total, t0)
                else:
                    th, tw = _tiles(h, w)
                    grad_x[li] = input_transform_t(gv.view(a, a, total, c)[:, :, t0:t0 + t].view(a, a, n, th, tw, c),
                                                   h, w)
        grad_w = [None] * nw
        if any(ctx.needs_input_grad[1:1 + nw]):
            if v is None:
                v = _transform_inputs(xs, levels, m, lib)
            gu = torch.bmm(gm.transpose(1, 2), v)  # (a^2, sum K, C)
            k0 = 0
            for wi, k in enumerate(ks):
                grad_w[wi] = weight_transform_t(gu[:, k0:k0 + k], m)
                k0 += k
        return (None, *grad_w, *gbias, *grad_x)


def conv3x3(xs: Sequence[torch.Tensor], weights: Sequence[torch.Tensor],
            biases: Sequence[torch.Tensor]) -> List[List[torch.Tensor]]:
    """3x3 convs, stride 1, padding 1, of channels-last inputs by Winograd F(4x4, 3x3) (C transforms)
    or F(2x2, 3x3) (PyTorch transforms: float64, or no C compiler).

    Args:
        xs: inputs (N_l, H_l, W_l, C), contiguous; e.g. the pyramid levels.
        weights: one or more (K_w, C, 3, 3) weights applied to every input (one matrix product for all).
        biases: (K_w,) or None each.
    Returns:
        outputs[l][w]: (N_l, H_l, W_l, K_w) contiguous, = conv2d(x_l, weights[w], biases[w], padding=1)
        in channels-last order.
    """
    xs = [x.contiguous() for x in xs]
    # in the inputs' dtype: under CPU autocast the products would be bf16, and the C kernels read floats
    with torch.autocast("cpu", enabled=False):
        outs = _WinogradConv3x3.apply(len(weights), *weights, *biases, *xs)
    nw = len(weights)
    return [list(outs[i * nw:(i + 1) * nw]) for i in range(len(xs))]


class WinogradConv2d(FastConv2d):
    """A 3x3 conv (stride 1, padding 1; the same parameters and state_dict as nn.Conv2d) computed by
    :func:`conv3x3` on CPU outside autocast, as FastConv2d elsewhere. Its output is a channels-last
    (N, H, W, C) tensor viewed as (N, C, H, W): what the Winograd subnets read without a copy."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if applies(x):
            y = conv3x3([x.permute(0, 2, 3, 1)], [self.weight], [self.bias])[0][0]
            return y.permute(0, 3, 1, 2)
        return super().forward(x)

