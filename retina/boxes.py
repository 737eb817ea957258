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
    """Per-image ground truth -> padded (N, G, 4) boxes, (N, G) labels, (N, G) crowd and (N, G) valid."""
    n = len(boxes)
    g = max([len(b) for b in boxes] + [1])
    out_boxes = torch.zeros(n, g, 4, device=device)
    out_labels = torch.zeros(n, g, dtype=torch.long, device=device)
    out_crowd = torch.zeros(n, g, dtype=torch.bool, device=device)
    valid = torch.zeros(n, g, dtype=torch.bool, device=device)
    for i, (b, l, c) in enumerate(zip(boxes, labels, iscrowd)):
        k = len(b)
        if k:
            out_boxes[i, :k] = b.to(device)
            out_labels[i, :k] = l.to(device)
            out_crowd[i, :k] = c.to(device)
            valid[i, :k] = True
    return out_boxes, out_labels, out_crowd, valid


def match_anchors(anchors: torch.Tensor, gt_boxes: torch.Tensor, gt_valid: torch.Tensor,
                  gt_crowd: torch.Tensor | None = None, fg_iou: float = 0.5, bg_iou: float = 0.4,
                  allow_low_quality_matches: bool = False) -> torch.Tensor:
    """Assign every anchor of every image.

    Args:
        anchors: (R, 4), shared by the batch.
        gt_boxes: (N, G, 4) padded ground truth; ``gt_valid`` (N, G) marks the real ones.
        gt_crowd: (N, G) crowd boxes: never foreground; an anchor that would match one is ignored.
    Returns:
        (N, R) long: matched gt index (foreground), BACKGROUND (IoU < bg_iou with every box) or IGNORE.
    """
    n, g = gt_valid.shape
    r = anchors.shape[0]
    if g == 0 or r == 0:
        return torch.full((n, r), BACKGROUND, dtype=torch.long, device=anchors.device)
    iou = pairwise_iou(gt_boxes, anchors.unsqueeze(0).expand(n, r, 4))  # (N, G, R)
    iou = iou.masked_fill(~gt_valid[:, :, None], -1.0)
    crowd = gt_crowd if gt_crowd is not None else torch.zeros_like(gt_valid)
    regular = gt_valid & ~crowd
    iou_regular = iou.masked_fill(~regular[:, :, None], -1.0)
    best_iou, best_gt = iou_regular.max(dim=1)  # (N, R)
    labels = torch.full((n, r), IGNORE, dtype=torch.long, device=anchors.device)
    labels[best_iou < bg_iou] = BACKGROUND
    fg = best_iou >= fg_iou
    labels[fg] = best_gt[fg]
    if allow_low_quality_matches:
        # Each real box also claims the anchor(s) with its highest IoU (ties included), if that IoU > 0.
        best_per_gt = iou_regular.max(dim=2, keepdim=True).values  # (N, G, 1)
        is_best = (iou_regular == best_per_gt) & regular[:, :, None] & (best_per_gt > 0)
        img, gt_idx, anchor_idx = is_best.nonzero(as_tuple=True)
        labels[img, anchor_idx] = gt_idx
    if crowd.any():
        iou_crowd = iou.masked_fill(~(gt_valid & crowd)[:, :, None], -1.0).max(dim=1).values
        labels[(labels == BACKGROUND) & (iou_crowd >= bg_iou)] = IGNORE
    return labels
