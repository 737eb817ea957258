"""RetinaNet: ResNet backbone, FPN P3..P7, class and box subnets, inference post-processing.

As the paper builds it (which differs from torchvision's v1 RetinaNet builder in two places):
P3..P5 come from C3..C5 through 1x1 lateral convs and a top-down pathway with 3x3 output convs;
P6 = 3x3 stride-2 conv on C5; P7 = 3x3 stride-2 conv on ReLU(P6). The two subnets share nothing with
each other and are shared across levels. New subnet convs start from Gaussian(0, 0.01) weights and
zero bias; the last class conv's bias is -log((1 - pi) / pi) so every anchor starts at score ~pi.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops import batched_nms

from .anchors import AnchorGenerator
from .boxes import decode

RESNET_C_CHANNELS = {18: (128, 256, 512), 34: (128, 256, 512), 50: (512, 1024, 2048), 101: (512, 1024, 2048)}


class ResNetBackbone(nn.Module):
    """torchvision ResNet (weights=None: trained from scratch here, nothing is downloaded) -> C3, C4, C5."""

    def __init__(self, depth: int):
        super().__init__()
        net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = RESNET_C_CHANNELS[depth]

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c3, c4, c5


class FPN(nn.Module):
    """C3..C5 -> P3..P7, all with ``channels`` channels."""

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
        p6 = self.p6(c5)
        p7 = self.p7(F.relu(p6))
        return [p3, p4, p5, p6, p7]


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

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per level (N, A*C, H, W) -> (N, H*W*A, C); concatenated over levels: (N, R, C)."""
        outs = []
        for f in features:
            y = self.predictor(self.tower(f))
            n, _, h, w = y.shape
            # (N, A*C, H, W) -> (N, H, W, A, C) -> (N, H*W*A, C)
            outs.append(y.view(n, -1, self.out_per_anchor, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, self.out_per_anchor))
        return torch.cat(outs, dim=1)


def prior_bias(prior_prob: float) -> float:
    """b = -log((1 - pi) / pi): sigmoid(b) = pi."""
    return -math.log((1.0 - prior_prob) / prior_prob)


class RetinaNet(nn.Module):
    def __init__(self, num_classes: int, depth: int = 50, fpn_channels: int = 256, head_convs: int = 4,
                 head_norm: str = "none", prior_init: bool = True, prior_prob: float = 0.01,
                 anchor_generator: AnchorGenerator | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.anchor_generator = anchor_generator or AnchorGenerator()
        a = self.anchor_generator.num_anchors_per_location
        self.backbone = ResNetBackbone(depth)
        self.fpn = FPN(self.backbone.out_channels, fpn_channels)
        bias = prior_bias(prior_prob) if prior_init else 0.0
        self.cls_subnet = Subnet(fpn_channels, head_convs, a, num_classes, head_norm, final_bias=bias)
        self.box_subnet = Subnet(fpn_channels, head_convs, a, 4, head_norm, final_bias=0.0)

    def forward(self, images: torch.Tensor) -> Dict[str, object]:
        """images (N, 3, H, W) normalized -> cls_logits (N, R, K), box_deltas (N, R, 4), anchors (R, 4),
        and the per-level feature shapes (list of (H, W))."""
        features = self.fpn(self.backbone(images))
        shapes = [tuple(f.shape[-2:]) for f in features]
        return {
            "cls_logits": self.cls_subnet(features),
            "box_deltas": self.box_subnet(features),
            "anchors": self.anchor_generator(shapes, device=images.device),
            "shapes": shapes,
        }

    @torch.no_grad()
    def postprocess(self, outputs: Dict[str, object], image_sizes: Sequence[Tuple[int, int]],
                    score_thresh: float = 0.05, topk_per_level: int = 1000, nms_thresh: float = 0.5,
                    max_detections: int = 100) -> List[Dict[str, torch.Tensor]]:
        """Per level: keep scores > score_thresh, the top ``topk_per_level``, decode; merge levels,
        class-wise NMS, keep the best ``max_detections``. Boxes are clipped to each image's size
        (before padding). Returns per image: boxes (D, 4) xyxy, scores (D,), labels (D,) contiguous."""
        cls_logits, box_deltas, anchors = outputs["cls_logits"], outputs["box_deltas"], outputs["anchors"]
        a, k = self.anchor_generator.num_anchors_per_location, self.num_classes
        level_sizes = [h * w * a for h, w in outputs["shapes"]]
        n = cls_logits.shape[0]
        scores_all = torch.sigmoid(cls_logits.float())  # (N, R, K)
        results = []
        for i in range(n):
            boxes_i, scores_i, labels_i = [], [], []
            start = 0
            for size in level_sizes:
                scores = scores_all[i, start:start + size].flatten()  # (R_l * K,)
                keep = scores > score_thresh
                idx = keep.nonzero(as_tuple=True)[0]
                s = scores[idx]
                if len(s) > topk_per_level:
                    s, order = s.topk(topk_per_level)
                    idx = idx[order]
                anchor_idx = idx // k + start
                boxes_i.append(decode(anchors[anchor_idx], box_deltas[i, anchor_idx]))
                scores_i.append(s)
                labels_i.append(idx % k)
                start += size
            boxes = torch.cat(boxes_i)
            scores = torch.cat(scores_i)
            labels = torch.cat(labels_i)
            h, w = image_sizes[i]
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
            keep = batched_nms(boxes, scores, labels, nms_thresh)[:max_detections]
            results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return results


def from_config(cfg, num_classes: int) -> RetinaNet:
    """``cfg``: a RetinaConfig (uses its ``model`` and ``anchors`` sections)."""
    from .anchors import from_config as anchors_from_config

    m = cfg.model
    return RetinaNet(num_classes, m.depth, m.fpn_channels, m.head_convs, m.head_norm, m.prior_init, m.prior_prob,
                     anchors_from_config(cfg.anchors))
