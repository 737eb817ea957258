"""The class and box subnets: shared across pyramid levels, sharing nothing with each other.

New subnet convs start from Gaussian(0, 0.01) weights and zero bias; the last class conv's bias is
-log((1 - pi) / pi), so that every anchor starts at score ~pi (the paper's "prior" initialization;
section 5.1 shows plain CE diverging without it).
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
from torch import nn


def prior_bias(prior_prob: float) -> float:
    """b = -log((1 - pi) / pi): sigmoid(b) = pi."""
    return -math.log((1.0 - prior_prob) / prior_prob)


class Subnet(nn.Module):
    """``num_convs`` x (3x3 conv, [GroupNorm], ReLU), then a 3x3 predictor of ``num_anchors * out_per_anchor``."""

    def __init__(self, channels: int, num_convs: int, num_anchors: int, out_per_anchor: int,
                 norm: str = "none", final_bias: float = 0.0):
        super().__init__()
        layers: List[nn.Module] = []
        for _ in range(num_convs):
            layers.append(nn.Conv2d(channels, channels, 3, padding=1))
            if norm == "group":
                layers.append(nn.GroupNorm(32, channels))
            layers.append(nn.ReLU(inplace=True))
        self.tower = nn.Sequential(*layers)
        self.predictor = nn.Conv2d(channels, num_anchors * out_per_anchor, 3, padding=1)
        self.out_per_anchor = out_per_anchor
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.predictor.bias, final_bias)

    def layers(self) -> List[Tuple[nn.Conv2d, nn.GroupNorm | None]]:
        """The tower as (conv, norm or None) pairs, each followed by a ReLU."""
        out: List[Tuple[nn.Conv2d, nn.GroupNorm | None]] = []
        for m in self.tower:
            if isinstance(m, nn.Conv2d):
                out.append((m, None))
            elif isinstance(m, nn.GroupNorm):
                out[-1] = (out[-1][0], m)
        return out

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per level (N, A*C, H, W) -> (N, H*W*A, C); concatenated over levels: (N, R, C)."""
        outs = []
        for f in features:
            y = self.predictor(self.tower(f))
            n, _, h, w = y.shape
            # (N, A*C, H, W) -> (N, H, W, A, C) -> (N, H*W*A, C)
            outs.append(y.view(n, -1, self.out_per_anchor, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, self.out_per_anchor))
        return torch.cat(outs, dim=1)
