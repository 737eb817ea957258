"""The feature pyramid: C3..C5 -> P3..P7, as the paper builds it.

P3..P5 come from C3..C5 through 1x1 lateral convs and a top-down pathway (nearest-neighbour
upsampling, added) with 3x3 output convs; P6 = 3x3 stride-2 conv on C5 (not on P5: this differs
from torchvision's v1 RetinaNet builder); P7 = 3x3 stride-2 conv on ReLU(P6).
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .autocast_conv import conv2d


class FPN(nn.Module):
    """C3..C5 -> P3..P7 (strides 8 .. 128), all with ``channels`` channels."""

    def __init__(self, in_channels: Sequence[int], channels: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in in_channels)
        self.p6 = nn.Conv2d(in_channels[-1], channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # as torchvision's and Detectron's FPN
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, c: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        c3, c4, c5 = c
        top = self.lateral[2](c5)
        p5 = self.output[2](top)
        top = self.lateral[1](c4) + F.interpolate(top, size=c4.shape[-2:], mode="nearest")
        p4 = self.output[1](top)
        top = self.lateral[0](c3) + F.interpolate(top, size=c3.shape[-2:], mode="nearest")
        p3 = self.output[0](top)
        # the pyramid's top is one position wide for small images: see autocast_conv
        p6 = conv2d(self.p6, c5)
        p7 = conv2d(self.p7, F.relu(p6))
        return [p3, p4, p5, p6, p7]
