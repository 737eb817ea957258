"""The fast paths compute what the straightforward code computes.

- ``model.fast_cpu_convs``: Winograd F(2x2, 3x3) convolutions (retina/cpu/winograd.py), the subnets built
  on them, and the matrix-product weight gradients of small-map convs (retina/gemm_conv.py): outputs
  and every gradient equal F.conv2d / nn.Conv2d / the per-level nn.Module path.
- Chunked anchor matching: labels exactly equal to the one-shot (N, G, R) IoU matcher.
- Batched post-processing: detections exactly equal to the per-image loop it replaced.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from retina.cpu import fast_conv, kernels as cpu_kernels, winograd
from retina.modeling.anchors import AnchorGenerator, feature_shapes
from retina.cpu import fast_cpu_convs_on, use_fast_cpu_convs
from retina.cpu.fast_conv import FastConv2d, use_fast_convs
from retina.cpu.winograd import WinogradConv2d
from retina.modeling.box_regression import decode
from retina.modeling.boxes import pad_targets, pairwise_iou
from retina.modeling.matcher import BACKGROUND, IGNORE, match_anchors
from retina.modeling.retinanet import RetinaNet

from .conftest import fill_freed_memory_with_nan

LEVELS = [(12, 12), (6, 6), (3, 3), (2, 2), (1, 1)]


# ----------------------------------------------------------------------------------------------
# Winograd convolutions


def _conv_case(dtype, shapes, ks, channels=16, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    ws = [(torch.randn(k, channels, 3, 3, generator=g, dtype=dtype) * 0.1).requires_grad_() for k in ks]
    bs = [torch.randn(k, generator=g, dtype=dtype).requires_grad_() for k in ks]
    xs = [torch.randn(batch, channels, h, w, generator=g, dtype=dtype).requires_grad_() for h, w in shapes]
    return ws, bs, xs


@pytest.mark.parametrize("ks,bias", [([8], True), ([8, 5], True), ([6], False)])  # 2 weights: shared inputs
def test_winograd_conv3x3_equals_conv2d_with_all_gradients(ks, bias):
    shapes = LEVELS + [(5, 7), (1, 4), (9, 2)]  # odd sizes: padded tiles, cropped outputs
    ws, bs, xs = _conv_case(torch.float64, shapes, ks)
    if not bias:
        bs = [None] * len(ks)
    ref = [F.conv2d(x, w, b, padding=1).permute(0, 2, 3, 1) for x in xs for w, b in zip(ws, bs)]
    out = [y for level in winograd.conv3x3([x.permute(0, 2, 3, 1) for x in xs], ws, bs) for y in level]
    for r, o in zip(ref, out):
        torch.testing.assert_close(o, r, rtol=1e-12, atol=1e-12)
    g = torch.Generator().manual_seed(1)
    grads_out = [torch.randn(r.shape, generator=g, dtype=r.dtype) for r in ref]
    params = xs + ws + [b for b in bs if b is not None]
    for a, b in zip(torch.autograd.grad(ref, params, grads_out), torch.autograd.grad(out, params, grads_out)):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def test_winograd_conv3x3_passes_gradcheck():
    ws, bs, xs = _conv_case(torch.float64, [(4, 4), (3, 5), (1, 1)], [3], channels=4, batch=1)

    def f(w, b, *xs_):
        return tuple(level[0] for level in winograd.conv3x3([x.permute(0, 2, 3, 1) for x in xs_], [w], [b]))

    assert torch.autograd.gradcheck(f, (ws[0], bs[0], *xs))


@pytest.mark.parametrize("c_kernels,bound", [(False, 4), (True, None)])
def test_winograd_float32_error_is_near_that_of_the_direct_convolution(monkeypatch, c_kernels, bound):
    """F(2x2, 3x3) (PyTorch transforms): within 4x the direct convolution's float32 error; F(4x4, 3x3)
    (C transforms, larger coefficients): its largest error at most 2e-5 of the outputs' scale, its RMS
    error at most 1e-6 of it. (Against the direct convolution F(4x4) was within 10x on an AVX2 CPU, 32x
    on an AVX-512 one, whose direct convolution is more accurate: 1.1e-6 against 3.6e-5 at an output
    scale of 4.6. Its largest error differs by CPU: 7.8e-6 of the scale on that AVX-512 CPU, 1.14e-5 on
    an AVX-512 + AMX one of 2026-12-04, where the 1e-5 bound this test had failed; the RMS bound held.)"""
    if c_kernels and cpu_kernels.load() is None:
        pytest.skip("no C compiler: F(4x4, 3x3) is not used")
    if not c_kernels:
        monkeypatch.setattr(cpu_kernels, "usable", lambda *tensors: False)
    # the subnets' setting: 256 channels, the pyramid of a 96 px input, He-initialized weights
    g = torch.Generator().manual_seed(0)
    w = torch.randn(256, 256, 3, 3, generator=g) * math.sqrt(2 / (256 * 9))
    xs = [torch.randn(8, 256, h, ww, generator=g).relu() for h, ww in LEVELS]
    exact = [F.conv2d(x.double(), w.double(), padding=1).permute(0, 2, 3, 1) for x in xs]
    direct = [F.conv2d(x, w, padding=1).permute(0, 2, 3, 1) for x in xs]
    ours = [y[0] for y in winograd.conv3x3([x.permute(0, 2, 3, 1) for x in xs], [w], [torch.zeros(256)])]
    err_direct = max((d.double() - e).abs().max().item() for d, e in zip(direct, exact))
    err_ours = max((o.double() - e).abs().max().item() for o, e in zip(ours, exact))
    scale = max(e.abs().max().item() for e in exact)
    if bound is not None:
        assert err_ours <= bound * err_direct + 1e-6, (err_ours, err_direct)
    assert err_ours <= 2e-5 * scale, (err_ours, scale)
    rms = max((o.double() - e).pow(2).mean().sqrt().item() for o, e in zip(ours, exact))
    assert rms <= 1e-6 * scale, (rms, scale)


def test_winograd_backward_recomputes_the_transform_of_large_inputs(monkeypatch):
    ws, bs, xs = _conv_case(torch.float64, LEVELS, [6, 4])
    xh = [x.permute(0, 2, 3, 1) for x in xs]

    def grads():
        out = [y for level in winograd.conv3x3(xh, ws, bs) for y in level]
        return torch.autograd.grad(sum((y * y).sum() for y in out), xs + ws + bs)

    kept = grads()
    monkeypatch.setattr(winograd, "KEEP_TRANSFORMED_MAX_BYTES", 0)
    for a, b in zip(kept, grads()):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_c_kernels_compute_what_the_pytorch_transforms_compute(monkeypatch):
    """float32 goes through F(4x4, 3x3) with the C transforms (retina/cpu_kernels.py) when they build;
    F(2x2, 3x3) in PyTorch ops is the fallback. Both give the same outputs and gradients, to float32
    rounding."""
    if cpu_kernels.load() is None:
        pytest.skip("no C compiler: the PyTorch transforms are used (and tested above)")
    ws, bs, xs = _conv_case(torch.float32, LEVELS + [(5, 7), (1, 4)], [8, 5], channels=24, batch=3)

    def run():
        out = [y for level in winograd.conv3x3([x.permute(0, 2, 3, 1) for x in xs], ws, bs) for y in level]
        g = torch.Generator().manual_seed(1)
        grads_out = [torch.randn(y.shape, generator=g) for y in out]
        return out, torch.autograd.grad(out, xs + ws + bs, grads_out)

    with_c = run()
    monkeypatch.setattr(cpu_kernels, "usable", lambda *tensors: False)
    without = run()
    for a, b in zip(with_c[0] + list(with_c[1]), without[0] + list(without[1])):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


@pytest.mark.parametrize("path", ["float32-c", "float32-pytorch", "float64"])
@pytest.mark.parametrize("head_convs,head_norm", [(2, "group"), (1, "none"), (0, "none")])
def test_model_with_fast_cpu_convs_equals_the_straightforward_modules(monkeypatch, head_convs, head_norm, path):
    """Same weights, same input: cls_logits, box_deltas and every parameter's gradient of a loss agree
    with the straightforward path (per level, nn.Conv2d, NCHW) to rounding: float32 with the C
    transforms (F(4x4, 3x3)) or the PyTorch ones (F(2x2, 3x3)), and float64. The 96x128 input puts
    C5 and P5..P7 on maps of <= 12 positions: their convs take the small-map weight gradient."""
    if path == "float32-c" and cpu_kernels.load() is None:
        pytest.skip("no C compiler")
    if path == "float32-pytorch":
        monkeypatch.setattr(cpu_kernels, "usable", lambda *tensors: False)
    dtype = torch.float64 if path == "float64" else torch.float32
    torch.manual_seed(0)
    model = RetinaNet(4, depth=18, fpn_channels=64, head_convs=head_convs, head_norm=head_norm).to(dtype)
    images = torch.randn(2, 3, 96, 128, dtype=dtype)

    def run(on: bool):
        use_fast_cpu_convs(model, on)
        model.zero_grad(set_to_none=True)
        out = model(images)
        g = torch.Generator().manual_seed(1)
        loss = (out["cls_logits"] * torch.randn(out["cls_logits"].shape, generator=g, dtype=dtype)).sum() \
            + (out["box_deltas"] * torch.randn(out["box_deltas"].shape, generator=g, dtype=dtype)).sum()
        loss.backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters()}

    ref_out, ref_grads = run(False)
    out, grads = run(True)
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    for key in ("cls_logits", "box_deltas"):
        assert out[key].shape == ref_out[key].shape
        torch.testing.assert_close(out[key], ref_out[key], rtol=tol, atol=tol * ref_out[key].abs().max().item())
    assert grads.keys() == ref_grads.keys()
    for name, ref in ref_grads.items():
        scale = max(ref.abs().max().item(), 1e-3)
        torch.testing.assert_close(grads[name], ref, rtol=10 * tol, atol=tol * scale, msg=name)
        assert (grads[name] - ref).norm() <= tol * ref.norm(), name


def test_fast_cpu_convs_act_on_cpu_tensors_only(monkeypatch):
    """Elsewhere (CUDA: cuDNN chooses its own algorithms) the model runs its nn.Modules as before; a
    model on the meta device stands in for one on a GPU here."""
    model = RetinaNet(2, depth=18, fpn_channels=32, head_convs=1)
    use_fast_cpu_convs(model, True)
    assert fast_cpu_convs_on(model) and isinstance(model.fpn.output[0], WinogradConv2d)
    assert isinstance(model.backbone.layer4[0].conv1, FastConv2d)

    def fail(*args, **kwargs):
        raise AssertionError("Winograd path taken off the CPU")

    monkeypatch.setattr(winograd, "conv3x3", fail)
    monkeypatch.setattr(fast_conv._Conv2dGemmWeightGrad, "apply", fail)
    out = model.to("meta")(torch.zeros(1, 3, 64, 64, device="meta"))
    assert out["cls_logits"].shape == (1, 9 * sum(h * w for h, w in feature_shapes(64, 64)), 2)
    use_fast_cpu_convs(model, False)
    assert not isinstance(model.fpn.output[0], WinogradConv2d)
    assert not any(isinstance(m, FastConv2d) for m in model.modules())


def test_fast_cpu_convs_step_aside_under_cpu_autocast():
    """Under bf16 autocast on the CPU (``train.amp_cpu``) the model runs its standard modules, so
    autocast picks each op's precision: outputs and gradients are those of the model without the fast
    paths, to the bit. (Taken under autocast, the subnets' Winograd products came out in bf16 and the
    C kernels read them as floats: a segfault.) Freed NaN-filled buffers before each arm: at 64 px P7
    is one position wide, where oneDNN's bf16 weight gradient read such garbage until the pyramid's
    top padded explicitly (retina/modeling/autocast_conv.py); this test then failed after others."""
    torch.manual_seed(0)
    model = RetinaNet(3, depth=18, fpn_channels=32, head_convs=2, head_norm="group")
    images = torch.randn(2, 3, 64, 64)

    def run(on: bool):
        fill_freed_memory_with_nan()
        use_fast_cpu_convs(model, on)
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(images)
        (out["cls_logits"].float().square().sum() + out["box_deltas"].float().square().sum()).backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters()}

    ref_out, ref_grads = run(False)
    out, grads = run(True)
    assert out["cls_logits"].dtype == torch.bfloat16
    for key in ("cls_logits", "box_deltas"):
        assert torch.equal(out[key], ref_out[key]), key
    assert all(torch.isfinite(g).all() for g in ref_grads.values())
    assert all(torch.equal(grads[n], ref_grads[n]) for n in ref_grads)


def test_winograd_conv3x3_computes_in_its_inputs_dtype_under_autocast():
    """Called under CPU autocast, the Winograd convolution still computes in float32 (C transforms
    included): the same outputs as outside autocast."""
    ws, bs, xs = _conv_case(torch.float32, LEVELS, [8, 5])
    xs = [x.detach().permute(0, 2, 3, 1).contiguous() for x in xs]
    ref = winograd.conv3x3(xs, ws, bs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = winograd.conv3x3(xs, ws, bs)
    for ref_level, level in zip(ref, out):
        for r, o in zip(ref_level, level):
            assert o.dtype == torch.float32 and torch.equal(o, r)


@pytest.mark.parametrize("shape,stride,bias", [((2, 12, 3, 3), 1, True), ((2, 6, 6, 6), 2, False),
                                               ((3, 5, 2, 2), 2, True), ((1, 4, 4, 5), 1, True)])
def test_small_map_conv_gradients_equal_nn_conv2d(shape, stride, bias):
    g = torch.Generator().manual_seed(0)
    ref = torch.nn.Conv2d(shape[1], 7, 3, stride=stride, padding=1, bias=bias).double()
    fast = torch.nn.Conv2d(shape[1], 7, 3, stride=stride, padding=1, bias=bias).double()
    fast.load_state_dict(ref.state_dict())
    use_fast_convs(fast, True)
    assert type(fast) is FastConv2d and fast.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    outs, grads = [], []
    for m in (ref, fast):
        y = m(x)
        gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
        outs.append(y)
        grads.append(torch.autograd.grad(y, [x] + list(m.parameters()), gy))
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)  # the same forward pass
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(fast, (x,))
    use_fast_convs(fast, False)
    assert type(fast) is torch.nn.Conv2d


# ----------------------------------------------------------------------------------------------
# anchor matching


def _match_reference(anchors, gt_boxes, gt_valid, gt_crowd=None, fg_iou=0.5, bg_iou=0.4,
                     allow_low_quality_matches=False):
    """The matcher as it was before chunking: one (N, G, R) IoU tensor."""
    n, g = gt_valid.shape
    r = anchors.shape[0]
    if g == 0 or r == 0:
        return torch.full((n, r), BACKGROUND, dtype=torch.long)
    iou = pairwise_iou(gt_boxes, anchors.unsqueeze(0).expand(n, r, 4))
    iou = iou.masked_fill(~gt_valid[:, :, None], -1.0)
    crowd = gt_crowd if gt_crowd is not None else torch.zeros_like(gt_valid)
    regular = gt_valid & ~crowd
    iou_regular = iou.masked_fill(~regular[:, :, None], -1.0)
    best_iou, best_gt = iou_regular.max(dim=1)
    labels = torch.full((n, r), IGNORE, dtype=torch.long)
    labels[best_iou < bg_iou] = BACKGROUND
    fg = best_iou >= fg_iou
    labels[fg] = best_gt[fg]
    if allow_low_quality_matches:
        best_per_gt = iou_regular.max(dim=2, keepdim=True).values
        is_best = (iou_regular == best_per_gt) & regular[:, :, None] & (best_per_gt > 0)
        img, gt_idx, anchor_idx = is_best.nonzero(as_tuple=True)
        labels[img, anchor_idx] = gt_idx
    if crowd.any():
        iou_crowd = iou.masked_fill(~(gt_valid & crowd)[:, :, None], -1.0).max(dim=1).values
        labels[(labels == BACKGROUND) & (iou_crowd >= bg_iou)] = IGNORE
    return labels


def _crowded_batch(seed, n=3, max_boxes=40, size=(96, 128)):
    g = torch.Generator().manual_seed(seed)
    h, w = size
    boxes, labels, crowd = [], [], []
    for i in range(n):
        k = [max_boxes, 0, 7][i % 3]  # a crowded image, an empty one, a sparse one
        xy = torch.rand(k, 2, generator=g) * torch.tensor([w, h])
        wh = 4 + torch.rand(k, 2, generator=g) * 70
        b = torch.cat([xy, xy + wh], 1)
        if k > 3:
            b[3] = b[2]  # a duplicate box: ties between boxes
        boxes.append(b)
        labels.append(torch.randint(0, 3, (k,), generator=g))
        crowd.append(torch.rand(k, generator=g) < 0.15)
    return pad_targets(boxes, labels, crowd, torch.device("cpu"))


@pytest.mark.parametrize("low_quality", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_chunked_matching_equals_unchunked_exactly(seed, low_quality):
    anchors = AnchorGenerator(16)(feature_shapes(96, 128))  # 2,313 anchors
    gt_boxes, _, gt_crowd, gt_valid = _crowded_batch(seed)
    ref = _match_reference(anchors, gt_boxes, gt_valid, gt_crowd, allow_low_quality_matches=low_quality)
    assert (ref >= 0).any() and (ref == IGNORE).any() and (ref == BACKGROUND).any()
    n, g = gt_valid.shape
    for chunk_elements in (1, n * g * 7, n * g * 1000, 1 << 40):  # 1 anchor per chunk ... one chunk
        labels = match_anchors(anchors, gt_boxes, gt_valid, gt_crowd, allow_low_quality_matches=low_quality,
                               chunk_elements=chunk_elements)
        assert torch.equal(labels, ref), chunk_elements


def test_matching_a_crowded_600x1000_batch_stays_within_its_chunk_budget(monkeypatch):
    """113,193 anchors x 100 boxes x 16 images: no IoU block larger than MATCH_CHUNK_ELEMENTS."""
    from retina.modeling import boxes as boxes_mod
    from retina.modeling import matcher as matcher_mod

    anchors = AnchorGenerator()(feature_shapes(600, 1000))
    assert anchors.shape[0] == 113193
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(16, 100, 2, generator=g) * torch.tensor([1000.0, 600.0])
    gt_boxes = torch.cat([xy, xy + 16 + torch.rand(16, 100, 2, generator=g) * 300], 2)
    gt_valid = torch.ones(16, 100, dtype=torch.bool)
    largest = []
    real = boxes_mod.pairwise_iou

    def recording(b1, b2):
        out = real(b1, b2)
        largest.append(out.numel())
        return out

    monkeypatch.setattr(boxes_mod, "pairwise_iou", recording)
    labels = match_anchors(anchors[:20000], gt_boxes, gt_valid)  # a slice keeps the test quick
    assert max(largest) <= matcher_mod.MATCH_CHUNK_ELEMENTS
    assert labels.shape == (16, 20000) and (labels >= 0).any()
    # the whole anchor set: the same chunk size, so the same bound
    assert max(1, matcher_mod.MATCH_CHUNK_ELEMENTS // (16 * 100)) * 16 * 100 <= matcher_mod.MATCH_CHUNK_ELEMENTS


def test_pad_targets_equals_the_per_image_loop():
    g = torch.Generator().manual_seed(0)
    counts = [3, 0, 7, 1, 0]
    boxes = [torch.rand(k, 4, generator=g) * 50 for k in counts]
    labels = [torch.randint(0, 5, (k,), generator=g) for k in counts]
    crowd = [torch.rand(k, generator=g) < 0.3 for k in counts]
    got = pad_targets(boxes, labels, crowd, torch.device("cpu"))
    n, gmax = len(counts), max(counts)
    ref = (torch.zeros(n, gmax, 4), torch.zeros(n, gmax, dtype=torch.long), torch.zeros(n, gmax, dtype=torch.bool),
           torch.zeros(n, gmax, dtype=torch.bool))
    for i, k in enumerate(counts):
        ref[0][i, :k], ref[1][i, :k], ref[2][i, :k], ref[3][i, :k] = boxes[i], labels[i], crowd[i], True
    for a, b in zip(got, ref):
        assert a.dtype == b.dtype and torch.equal(a, b)


# ----------------------------------------------------------------------------------------------
# post-processing


def _postprocess_reference(model, outputs, image_sizes, score_thresh, topk_per_level, nms_thresh, max_detections):
    """The per-image loop that the batched post-processing replaced."""
    cls_logits, box_deltas, anchors = outputs["cls_logits"], outputs["box_deltas"], outputs["anchors"]
    a, k = model.anchor_generator.num_anchors_per_location, model.num_classes
    level_sizes = [h * w * a for h, w in outputs["shapes"]]
    scores_all = torch.sigmoid(cls_logits.float())
    results = []
    for i in range(cls_logits.shape[0]):
        boxes_i, scores_i, labels_i = [], [], []
        start = 0
        for size in level_sizes:
            scores = scores_all[i, start:start + size].flatten()
            idx = (scores > score_thresh).nonzero(as_tuple=True)[0]
            s = scores[idx]
            if len(s) > topk_per_level:
                s, order = s.topk(topk_per_level)
                idx = idx[order]
            anchor_idx = idx // k + start
            boxes_i.append(decode(anchors[anchor_idx], box_deltas[i, anchor_idx]))
            scores_i.append(s)
            labels_i.append(idx % k)
            start += size
        boxes, scores, labels = torch.cat(boxes_i), torch.cat(scores_i), torch.cat(labels_i)
        h, w = image_sizes[i]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        keep = batched_nms(boxes, scores, labels, nms_thresh)[:max_detections]
        results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
    return results


@pytest.mark.parametrize("topk,max_det,lowest,highest", [(400, 100, -4.0, 4.0), (1000, 300, -4.0, 4.0),
                                                        (50, 20, -6.0, -1.0)])
def test_batched_postprocess_equals_the_per_image_loop(topk, max_det, lowest, highest):
    """Exactly the same detections in the same order. The scores are all distinct here: between
    equal scores (sigmoid saturates at 1 in float32) either order is a valid result of both."""
    torch.manual_seed(0)
    model = RetinaNet(3, depth=18, fpn_channels=32, head_convs=1).eval()
    with torch.no_grad():
        out = model(torch.randn(4, 3, 128, 160))
        n, r, k = out["cls_logits"].shape
        for i in range(n):  # distinct logits in [lowest, highest], in random places
            out["cls_logits"][i] = torch.linspace(lowest, highest, r * k)[torch.randperm(r * k)].view(r, k)
        out["cls_logits"][2] = -20.0  # an image without a single score above the threshold
        out["box_deltas"].normal_(0, 0.5)
    sizes = [(128, 160), (100, 160), (128, 120), (64, 64)]
    got = model.postprocess(out, sizes, 0.05, topk, 0.5, max_det)
    ref = _postprocess_reference(model, out, sizes, 0.05, topk, 0.5, max_det)
    assert len(got) == len(ref) == 4
    assert len(ref[2]["scores"]) == 0 and sum(len(r["scores"]) for r in ref) > 0
    for g_, r in zip(got, ref):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(g_[key], r[key]), key
