"""Box regression coding (R-CNN's parameterization, as Detectron): the deltas (dx, dy, dw, dh) of a
box relative to its anchor, and back. Boxes are (x1, y1, x2, y2).
"""
from __future__ import annotations

import math

import torch

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
