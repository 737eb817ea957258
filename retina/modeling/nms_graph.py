"""Greedy NMS over a fixed set of boxes through their overlap graph: OHEM's deep scans on the CPU.

OHEM (retina/modeling/losses.py) runs greedy NMS over the anchors in loss order. Over a short
highest-loss prefix torchvision's NMS is fast, but its CPU kernel compares every kept box with every
later one, so a scan that must go deep (the 1:3 variant when positives have low losses: the prefix
grows to all 116,712 anchors of a 600x1000 image) took about a minute per image. The anchors are the
same at every step for an image size, so the pairs that can suppress each other (IoU > threshold) are
found once, cached, and greedy NMS becomes one pass in loss order that marks each kept box's
neighbours: milliseconds.

Exact: every pair is decided by torchvision's own test (IoU computed in float32 as its CPU kernel
computes it, compared with the threshold in double), and only pairs that cannot pass it are left
out: IoU > t needs the areas within a factor 1/t of each other and the centres closer than
(1 - t) x the larger width (height) in each axis (the overlap of two intervals is at most half their
summed lengths less the distance of their centres, and must exceed t x each box's length). Candidate
pairs are searched with a margin on that bound and then tested exactly. tests/test_losses.py checks
OHEM through this path against torchvision's NMS over all anchors.
"""
from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from typing import Callable, List, Tuple

import numpy as np
import torch

CACHE_SIZE = 4  # graphs kept (one per anchor set and threshold); a 600x1000 image's at 0.5: ~50 MB
_cache: "OrderedDict[Tuple[str, float], Tuple[np.ndarray, np.ndarray]]" = OrderedDict()
_MAX_PAIRS_PER_CHUNK = 8_000_000


def _iou_above(boxes: torch.Tensor, area: torch.Tensor, i: torch.Tensor, j: torch.Tensor, thresh: float) -> torch.Tensor:
    """torchvision's CPU NMS test for the pairs (i, j): inter / (area_i + area_j - inter) > thresh."""
    bi, bj = boxes[i], boxes[j]
    w = (torch.minimum(bi[:, 2], bj[:, 2]) - torch.maximum(bi[:, 0], bj[:, 0])).clamp_min(0)
    h = (torch.minimum(bi[:, 3], bj[:, 3]) - torch.maximum(bi[:, 1], bj[:, 1])).clamp_min(0)
    inter = w * h
    return (inter / (area[i] + area[j] - inter)).double() > thresh


def _candidate_pairs(boxes: torch.Tensor, a: torch.Tensor, b: torch.Tensor, thresh: float):
    """Pairs (i in a, j in b, i != j) whose centres are close enough for IoU > thresh, in chunks."""
    x1, y1, x2, y2 = boxes.unbind(1)
    w, h = (x2 - x1).double(), (y2 - y1).double()
    cx, cy = ((x1 + x2) / 2).double(), ((y1 + y2) / 2).double()
    both = torch.cat([a, b])
    # the bound with a margin (float rounding of the coordinates), then the exact test decides
    rx = float((1 - thresh) * w[both].max()) * 1.01 + 1e-3
    ry = float((1 - thresh) * h[both].max()) * 1.01 + 1e-3
    # b sorted by (row of height ry, centre x): for each box of a, rows r-1..r+1 hold every candidate,
    # and within a row the candidates are one range of centre x
    row_b = torch.floor(cy[b] / ry)
    span = float(cx.max() - cx.min()) + 4 * rx + 1.0
    key_b = row_b * span + (cx[b] - float(cx.min()) + 2 * rx)
    key_b, sort = key_b.sort()
    b_sorted = b[sort]
    row_a = torch.floor(cy[a] / ry)
    x_a = cx[a] - float(cx.min()) + 2 * rx
    lo, hi = [], []
    for dr in (-1, 0, 1):
        base = (row_a + dr) * span + x_a
        lo.append(torch.searchsorted(key_b, base - rx, right=True))
        hi.append(torch.searchsorted(key_b, base + rx, right=False))
    lo, hi = torch.stack(lo, 1), torch.stack(hi, 1)  # (len(a), 3)
    counts = (hi - lo).sum(1)
    start = 0
    while start < len(a):
        # as many boxes of a as keep the chunk's pairs under the budget
        cum = torch.cumsum(counts[start:], 0)
        stop = start + max(1, int(torch.searchsorted(cum, torch.tensor(_MAX_PAIRS_PER_CHUNK, dtype=cum.dtype))))
        stop = min(stop, len(a))
        seg_lo, seg_hi = lo[start:stop].reshape(-1), hi[start:stop].reshape(-1)
        seg_n = (seg_hi - seg_lo).clamp_min(0)
        owner = torch.repeat_interleave(torch.arange(start, stop).repeat_interleave(3), seg_n)
        first = torch.repeat_interleave(seg_lo, seg_n)
        offset = torch.arange(int(seg_n.sum())) - torch.repeat_interleave(torch.cumsum(seg_n, 0) - seg_n, seg_n)
        i, j = a[owner], b_sorted[first + offset]
        keep = i != j
        yield i[keep], j[keep]
        start = stop


def overlap_graph(boxes: torch.Tensor, thresh: float) -> Tuple[np.ndarray, np.ndarray]:
    """The pairs of ``boxes`` (R, 4) whose IoU exceeds ``thresh`` (0 < thresh < 1), as a CSR adjacency
    (indptr (R + 1,), indices): each box's neighbours, both directions. Cached by the boxes' bytes."""
    boxes = boxes.detach().to("cpu", torch.float32).contiguous()
    key = (hashlib.blake2b(boxes.numpy().tobytes(), digest_size=16).hexdigest(), float(thresh))
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    r = len(boxes)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    # areas within a factor 1/thresh of each other: buckets of that width, a box against its own and the next
    bucket = torch.floor(torch.log(area.double().clamp_min(1e-12)) / math.log(1.0 / thresh)).long()
    src: List[torch.Tensor] = []
    dst: List[torch.Tensor] = []
    for b in torch.unique(bucket).tolist():
        a_idx = (bucket == b).nonzero(as_tuple=True)[0]
        for other, both_ways in ((b, False), (b + 1, True)):
            b_idx = (bucket == other).nonzero(as_tuple=True)[0]
            if not len(b_idx):
                continue
            for i, j in _candidate_pairs(boxes, a_idx, b_idx, thresh):
                hit = _iou_above(boxes, area, i, j, thresh)
                i, j = i[hit], j[hit]
                src.append(i)
                dst.append(j)
                if both_ways:  # pairs across two buckets are found from the lower one only
                    src.append(j)
                    dst.append(i)
    src_t = torch.cat(src) if src else torch.zeros(0, dtype=torch.long)
    dst_t = torch.cat(dst) if dst else torch.zeros(0, dtype=torch.long)
    order = torch.argsort(src_t, stable=True)
    indices = dst_t[order].numpy().astype(np.int32)
    indptr = np.zeros(r + 1, dtype=np.int64)
    np.cumsum(np.bincount(src_t.numpy(), minlength=r), out=indptr[1:])
    _cache[key] = (indptr, indices)
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return indptr, indices


def greedy_nms(order: torch.Tensor, graph: Tuple[np.ndarray, np.ndarray],
               done: Callable[[int, int], bool]) -> List[int]:
    """Greedy NMS over the boxes ``order`` (indices, highest priority first) with the suppression pairs
    of ``graph``: the kept boxes in order. ``done(position_in_order, kept_box)`` is asked after each
    kept box and may stop the scan early (OHEM stops once its minibatch is full)."""
    indptr, indices = graph
    suppressed = np.zeros(len(indptr) - 1, dtype=np.bool_)
    kept: List[int] = []
    for position, box in enumerate(order.tolist()):
        if suppressed[box]:
            continue
        kept.append(box)
        suppressed[indices[indptr[box]:indptr[box + 1]]] = True
        if done(position, box):
            break
    return kept
