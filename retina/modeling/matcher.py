"""Anchor-to-ground-truth assignment, batched over images (the paper: IoU >= .5 foreground, < .4
background, in between ignored). Labels per anchor: ``>= 0`` the index of the matched ground-truth
box (foreground), ``BACKGROUND`` (-1) and ``IGNORE`` (-2).
"""
from __future__ import annotations

from typing import Tuple

import torch

from . import boxes

BACKGROUND = -1
IGNORE = -2


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
        iou = boxes.pairwise_iou(gt_boxes, anchors[start:stop].unsqueeze(0).expand(n, stop - start, 4))
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
