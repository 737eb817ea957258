"""Anchors on P3..P7: ``scales_per_octave`` x aspect ratios per location, sizes 32..512 scaled by base.

Conventions: boxes are (x1, y1, x2, y2) in input-image pixels; level l (3..7) has stride 2^l and
anchor size ``base_size * 2^(l-3)`` (the paper: 32 on P3 .. 512 on P7); scales are 2^(k/n), k = 0..n-1;
an aspect ratio is height / width at constant area. Anchors are centred on cell centres
((i + 0.5) * stride). The flattened order is level, then y, then x, then anchor (scale-major, then
ratio), matching the heads' (N, A*K, H, W) -> (N, H*W*A, K) reshape.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch

LEVELS = (3, 4, 5, 6, 7)


def cell_anchors(size: float, scales: Sequence[float], aspect_ratios: Sequence[float]) -> torch.Tensor:
    """Anchors of one level centred at (0, 0): (A, 4) with A = len(scales) * len(aspect_ratios)."""
    out = []
    for scale in scales:
        area = (size * scale) ** 2
        for ratio in aspect_ratios:
            w = math.sqrt(area / ratio)
            h = w * ratio
            out.append([-w / 2, -h / 2, w / 2, h / 2])
    return torch.tensor(out, dtype=torch.float32)


def octave_scales(scales_per_octave: int) -> List[float]:
    """2^(k/n) for k = 0..n-1."""
    return [2.0 ** (k / scales_per_octave) for k in range(scales_per_octave)]


def feature_shapes(image_height: int, image_width: int) -> List[Tuple[int, int]]:
    """(H, W) of P3..P7 for an input of that size, as a torchvision ResNet with the P6/P7 3x3 stride-2
    convs computes them: every stride-2 conv (kernel 3 or 7, padding 1 or 3) and the max-pool map n to
    floor((n - 1) / 2) + 1 = ceil(n / 2)."""
    def down(n: int) -> int:
        return (n + 1) // 2

    h, w = down(down(image_height)), down(down(image_width))  # conv1 (stride 2), max-pool (stride 2): C2
    shapes = []
    for _ in LEVELS:  # C3, C4, C5, P6, P7: one stride-2 step each
        h, w = down(h), down(w)
        shapes.append((h, w))
    return shapes


class AnchorGenerator:
    """Generates the anchors for a list of feature map shapes; caches per shape set."""

    def __init__(self, base_size: float = 32.0, scales_per_octave: int = 3,
                 aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)):
        self.base_size = float(base_size)
        self.scales = octave_scales(scales_per_octave)
        self.aspect_ratios = list(aspect_ratios)
        self.strides = [2 ** l for l in LEVELS]
        self.sizes = [self.base_size * 2 ** (l - LEVELS[0]) for l in LEVELS]
        self.cell = [cell_anchors(s, self.scales, self.aspect_ratios) for s in self.sizes]  # 5 x (A, 4)
        self._cache: dict = {}

    @property
    def num_anchors_per_location(self) -> int:
        return len(self.scales) * len(self.aspect_ratios)

    def __call__(self, shapes: Sequence[Tuple[int, int]], device: torch.device | str = "cpu") -> torch.Tensor:
        """All anchors for feature maps of ``shapes`` (one (H, W) per level): (R, 4), R = sum H*W*A."""
        key = (tuple(tuple(s) for s in shapes), str(device))
        if key not in self._cache:
            per_level = [self.level_anchors(i, h, w) for i, (h, w) in enumerate(shapes)]
            self._cache[key] = torch.cat(per_level).to(device)
            if len(self._cache) > 64:  # variable input sizes: keep the cache bounded
                self._cache.pop(next(iter(self._cache)))
        return self._cache[key]

    def level_anchors(self, level_index: int, height: int, width: int) -> torch.Tensor:
        """(H*W*A, 4) for one level, ordered y, x, anchor."""
        stride = self.strides[level_index]
        ys = (torch.arange(height, dtype=torch.float32) + 0.5) * stride
        xs = (torch.arange(width, dtype=torch.float32) + 0.5) * stride
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)  # (H*W, 1, 4)
        return (centres + self.cell[level_index].reshape(1, -1, 4)).reshape(-1, 4)

    def num_anchors(self, image_height: int, image_width: int) -> int:
        return sum(h * w for h, w in feature_shapes(image_height, image_width)) * self.num_anchors_per_location


def from_config(cfg) -> AnchorGenerator:
    """``cfg``: the ``anchors`` section of a RetinaConfig."""
    return AnchorGenerator(cfg.base_size, cfg.scales_per_octave, list(cfg.aspect_ratios))
