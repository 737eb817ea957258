"""Boxes, batched over images: pairwise IoU and ground truth padded into (N, G) tensors. Boxes are
(x1, y1, x2, y2). Their regression coding is box_regression.py, anchor assignment matcher.py.
"""
from __future__ import annotations

from typing import List, Tuple

import torch

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
