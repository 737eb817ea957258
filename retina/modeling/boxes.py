"""Box coding and anchor-to-ground-truth assignment, batched over images.

Boxes are (x1, y1, x2, y2). Assignment labels per anchor: ``>= 0`` the index of the matched
ground-truth box (foreground), ``BACKGROUND`` (-1) and ``IGNORE`` (-2).
"""
from __future__ import annotations

import math
from typing import List, Tuple

import torch

BACKGROUND = -1
IGNORE = -2

# dw, dh are clamped so that no box grows more than a 16 px box into a 1000 px one (as Detectron).
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def encode(anchors: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(..., 4) anchors and matched targets -> (..., 4) deltas (dx, dy, dw, dh), weights (1, 1, 1, 1)."""
    aw = anchors[..., 2] - anchors[..., 0]
    ah = anchors[..., 3] - anchors[..., 1]
    ax = anchors[..., 0] + 0.5 * aw
    ay = anchors[..., 1] + 0.5 * ah
    tw = targets[..., 2] - targets[..., 0]
    th = targets[..., 3] - targets[..., 1]
    tx = targets[..., 0] + 0.5 * tw
    ty = targets[..., 1] + 0.5 * th
    return torch.stack([(tx - ax) / aw, (ty - ay) / ah, torch.log(tw / aw), torch.log(th / ah)], dim=-1)


def decode(anchors: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode`: (..., 4) anchors and deltas -> (..., 4) boxes."""
    deltas = deltas.float()
    aw = anchors[..., 2] - anchors[..., 0]
    ah = anchors[..., 3] - anchors[..., 1]
    ax = anchors[..., 0] + 0.5 * aw
    ay = anchors[..., 1] + 0.5 * ah
    dw = deltas[..., 2].clamp(max=BBOX_XFORM_CLIP)
    dh = deltas[..., 3].clamp(max=BBOX_XFORM_CLIP)
    cx = deltas[..., 0] * aw + ax
    cy = deltas[..., 1] * ah + ay
    w = torch.exp(dw) * aw
    h = torch.exp(dh) * ah
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def pairwise_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of (..., M, 4) against (..., R, 4) -> (..., M, R); batched version of torchvision's box_iou."""
    area1 = (boxes1[..., 2] - boxes1[..., 0]).clamp(min=0) * (boxes1[..., 3] - boxes1[..., 1]).clamp(min=0)
    area2 = (boxes2[..., 2] - boxes2[..., 0]).clamp(min=0) * (boxes2[..., 3] - boxes2[..., 1]).clamp(min=0)
    lt = torch.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])  # (..., M, R, 2)
    rb = torch.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[..., :, None] + area2[..., None, :] - inter
    return inter / union.clamp(min=1e-9)


def pad_targets(boxes: List[torch.Tensor], labels: List[torch.Tensor], iscrowd: List[torch.Tensor],
                device: torch.device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image ground truth -> padded (N, G, 4) boxes, (N, G) labels, (N, G) crowd and (N, G) valid.

    Assembled on the host with one scatter per tensor, then moved to ``device`` in one copy each
    (not one per image)."""
    n = len(boxes)
    counts = [len(b) for b in boxes]  # host numbers: nothing is read from a device here
    lengths = torch.tensor(counts, dtype=torch.long)
    g = max(max(counts, default=0), 1)
    valid = torch.arange(g)[None, :] < lengths[:, None]  # (N, G), image-major like the concatenation
    out_boxes = torch.zeros(n, g, 4)
    out_labels = torch.zeros(n, g, dtype=torch.long)
    out_crowd = torch.zeros(n, g, dtype=torch.bool)
    if sum(counts):
        out_boxes[valid] = torch.cat([b.detach().cpu().float().reshape(-1, 4) for b in boxes])
        out_labels[valid] = torch.cat([l.cpu().long().reshape(-1) for l in labels])
        out_crowd[valid] = torch.cat([c.cpu().bool().reshape(-1) for c in iscrowd])
    return tuple(t.to(device, non_blocking=True) for t in (out_boxes, out_labels, out_crowd, valid))


# Anchor assignment computes IoU in chunks of anchors with at most this many (image, box, anchor)
# values each: a crowded 600x1000 batch (16 images x ~100 boxes x 113,193 anchors = 181M values, 724 MB
# per float tensor, several of them at once) then needs a few tens of MB instead of gigabytes.
MATCH_CHUNK_ELEMENTS = 1 << 22


def match_anchors(anchors: torch.Tensor, gt_boxes: torch.Tensor, gt_valid: torch.Tensor,
                  gt_crowd: torch.Tensor | None = None, fg_iou: float = 0.5, bg_iou: float = 0.4,
                  allow_low_quality_matches: bool = False,
                  chunk_elements: int = MATCH_CHUNK_ELEMENTS) -> torch.Tensor:
    """Assign every anchor of every image.

    Args:
        anchors: (R, 4), shared by the batch.
        gt_boxes: (N, G, 4) padded ground truth; ``gt_valid`` (N, G) marks the real ones.
        gt_crowd: (N, G) crowd boxes: never foreground; an anchor that would match one is ignored. None
            when the batch has none (the same labels, less work).
        chunk_elements: the (N, G, anchors) IoU values computed at once; the anchors are processed in
            chunks of ``chunk_elements // (N * G)``. The result does not depend on it (each IoU value
            and each per-anchor decision is the same; tests/test_speed_paths.py checks it).
    Returns:
        (N, R) long: matched gt index (foreground), BACKGROUND (IoU < bg_iou with every box) or IGNORE.
    """
    n, g = gt_valid.shape
    r = anchors.shape[0]
    device = anchors.device
    if g == 0 or r == 0:
        return torch.full((n, r), BACKGROUND, dtype=torch.long, device=device)
    has_crowd = gt_crowd is not None  # (decided by the caller, on the host: no wait for the device here)
    crowd = gt_crowd if has_crowd else torch.zeros_like(gt_valid)
    regular = gt_valid & ~crowd
    crowd_valid = gt_valid & crowd
    step = max(1, chunk_elements // (n * g))
    chunks = [(s, min(s + step, r)) for s in range(0, r, step)]

    def regular_iou(start: int, stop: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """IoU of the chunk's anchors with every box, and the same with -1 for all but the regular
        boxes: (N, G, stop - start) each."""
        iou = pairwise_iou(gt_boxes, anchors[start:stop].unsqueeze(0).expand(n, stop - start, 4))
        return iou, iou.masked_fill(~regular[:, :, None], -1.0)

    labels = torch.empty((n, r), dtype=torch.long, device=device)
    crowd_hit = torch.zeros((n, r), dtype=torch.bool, device=device) if has_crowd else None
    best_per_gt = torch.full((n, g, 1), -1.0, device=device) if allow_low_quality_matches else None
    kept = []  # the chunks' regular IoU, kept for the low-quality pass when there is a single chunk
    for start, stop in chunks:
        iou, iou_regular = regular_iou(start, stop)
        best_iou, best_gt = iou_regular.max(dim=1)  # (N, chunk)
        chunk = labels[:, start:stop]
        chunk.fill_(IGNORE)
        chunk[best_iou < bg_iou] = BACKGROUND
        fg = best_iou >= fg_iou
        chunk[fg] = best_gt[fg]
        if has_crowd:
            crowd_hit[:, start:stop] = iou.masked_fill(~crowd_valid[:, :, None], -1.0).max(dim=1).values >= bg_iou
        if allow_low_quality_matches:
            best_per_gt = torch.maximum(best_per_gt, iou_regular.max(dim=2, keepdim=True).values)
            if len(chunks) == 1:
                kept.append(iou_regular)
        del iou, iou_regular
    if allow_low_quality_matches:
        # Each real box also claims the anchor(s) with its highest IoU (ties included), if that IoU > 0.
        claims = regular[:, :, None] & (best_per_gt > 0)  # (N, G, 1)
        # (an anchor claimed by several boxes goes to the last of them; masks, not nonzero: no device wait)
        box_index = torch.arange(g, device=device).view(1, g, 1)
        for start, stop in chunks:
            iou_regular = kept[0] if kept else regular_iou(start, stop)[1]
            hit = (iou_regular == best_per_gt) & claims  # (N, G, chunk)
            claimer = torch.where(hit, box_index, torch.full_like(box_index, -1)).max(dim=1).values  # (N, chunk)
            chunk = labels[:, start:stop]
            chunk.copy_(torch.where(claimer >= 0, claimer, chunk))
    if has_crowd:
        labels[(labels == BACKGROUND) & crowd_hit] = IGNORE
    return labels
