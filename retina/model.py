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

from . import cpu_kernels, winograd
from .anchors import AnchorGenerator
from .backbone import ResNetBackbone
from .boxes import decode
from .fast_conv import applies as fast_convs_apply, use_fast_convs

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
        # P3's output conv by Winograd on CPU (retina/winograd.py; set by RetinaNet's ``fast_cpu_convs``):
        # at the cpu profile's sizes the largest 3x3 conv of the FPN, and the only one where Winograd pays.
        self.winograd_p3 = False

    def forward(self, c: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        c3, c4, c5 = c
        top = self.lateral[2](c5)
        p5 = self.output[2](top)
        top = self.lateral[1](c4) + F.interpolate(top, size=c4.shape[-2:], mode="nearest")
        p4 = self.output[1](top)
        top = self.lateral[0](c3) + F.interpolate(top, size=c3.shape[-2:], mode="nearest")
        if self.winograd_p3 and fast_convs_apply(top):
            conv = self.output[0]
            p3 = winograd.conv3x3([top.permute(0, 2, 3, 1)], [conv.weight], [conv.bias])[0][0]
            p3 = p3.permute(0, 3, 1, 2)  # channels-last memory: what the subnets' Winograd path reads
        else:
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


def prior_bias(prior_prob: float) -> float:
    """b = -log((1 - pi) / pi): sigmoid(b) = pi."""
    return -math.log((1.0 - prior_prob) / prior_prob)


def _norm_relu(y: torch.Tensor, norm: nn.GroupNorm | None) -> torch.Tensor:
    """[GroupNorm] and ReLU of a channels-last (N, H, W, C) tensor; returns (N, H, W, C) contiguous."""
    if norm is not None:
        y = F.group_norm(y.permute(0, 3, 1, 2), norm.num_groups, norm.weight, norm.bias, norm.eps).permute(0, 2, 3, 1)
    return F.relu(y, inplace=True).contiguous()


def heads_winograd(cls_subnet: Subnet, box_subnet: Subnet,
                   features: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Both subnets over all levels, as ``cls_subnet(features), box_subnet(features)`` compute them, with
    the 3x3 convs by Winograd (retina/winograd.py): one matrix product per conv for all levels, and the
    two subnets' first convs (same input) as one. Channels-last throughout. The predictors (few output
    channels) too where the C transforms are built; with the PyTorch transforms they would cost more
    than they save, and the predictors stay direct."""
    xs = [f.permute(0, 2, 3, 1) for f in features]  # (N, H, W, C): free if features are channels_last
    subnets = (cls_subnet, box_subnet)
    stages = [s.layers() + [(s.predictor, None)] for s in subnets]
    c_kernels = xs[0].dtype == torch.float32 and cpu_kernels.load() is not None
    states = [xs, xs]
    for i in range(len(stages[0])):
        convs = [stage[i][0] for stage in stages]
        last = i == len(stages[0]) - 1
        if last and not c_kernels:  # direct, on the channels-last view
            ys = [[c.predictor(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1) for x in state]
                  for c, state in zip(subnets, states)]
        elif states[0] is states[1]:  # the same input: one product for both subnets
            outs = winograd.conv3x3(states[0], [c.weight for c in convs], [c.bias for c in convs])
            ys = [[o[j] for o in outs] for j in range(2)]
        else:
            ys = [[o[0] for o in winograd.conv3x3(states[j], [convs[j].weight], [convs[j].bias])]
                  for j in range(2)]
        states = ys if last else [[_norm_relu(y, stages[j][i][1]) for y in ys[j]] for j in range(2)]
    n = features[0].shape[0]
    # (N, H, W, A*K) is already (N, H*W*A, K) in memory
    return tuple(torch.cat([y.reshape(n, -1, s.out_per_anchor) for y in ys], dim=1)
                 for ys, s in zip(states, subnets))


class RetinaNet(nn.Module):
    def __init__(self, num_classes: int, depth: int = 50, fpn_channels: int = 256, head_convs: int = 4,
                 head_norm: str = "none", prior_init: bool = True, prior_prob: float = 0.01,
                 anchor_generator: AnchorGenerator | None = None, fast_cpu_convs: bool = False,
                 backbone_norm: str = "bn", freeze_at: int = 0, backbone_state_dict=None):
        super().__init__()
        self.num_classes = num_classes
        self.anchor_generator = anchor_generator or AnchorGenerator()
        a = self.anchor_generator.num_anchors_per_location
        self.backbone = ResNetBackbone(depth, norm=backbone_norm, freeze_at=freeze_at, state_dict=backbone_state_dict)
        self.fpn = FPN(self.backbone.out_channels, fpn_channels)
        self.fast_cpu_convs = fast_cpu_convs
        self._dense_fn = None  # dense through torch.compile (compile_dense), else None: eager
        bias = prior_bias(prior_prob) if prior_init else 0.0
        self.cls_subnet = Subnet(fpn_channels, head_convs, a, num_classes, head_norm, final_bias=bias)
        self.box_subnet = Subnet(fpn_channels, head_convs, a, 4, head_norm, final_bias=0.0)

    @property
    def fast_cpu_convs(self) -> bool:
        """``model.fast_cpu_convs``: on CPU, the subnets' 3x3 convs (predictors included where the C
        transforms are built) and the FPN's P3 output conv by Winograd (retina/winograd.py: F(4x4, 3x3)
        with C transforms, F(2x2, 3x3) in PyTorch ops otherwise), and the weight gradients of the 3x3
        convs on maps of at most 16 positions (C5 stage, P5..P7 at the cpu profile's 96 px) as one
        matrix product (retina/fast_conv.py). The same results up to float rounding; nothing changes
        on CUDA, nor under CPU autocast (fast_conv.applies)."""
        return self.fpn.winograd_p3

    @fast_cpu_convs.setter
    def fast_cpu_convs(self, on: bool) -> None:
        self.fpn.winograd_p3 = bool(on)
        use_fast_convs(self.backbone, bool(on))
        use_fast_convs(self.fpn, bool(on))

    def dense(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, List[Tuple[int, int]]]:
        """The network proper: images -> (cls_logits (N, R, K), box_deltas (N, R, 4), per-level (H, W)).
        What :meth:`compile_dense` compiles; the anchors (a cache keyed by shapes) stay outside."""
        features = self.fpn(self.backbone(images))
        shapes = [(int(f.shape[-2]), int(f.shape[-1])) for f in features]
        if self.fast_cpu_convs and fast_convs_apply(images):
            cls_logits, box_deltas = heads_winograd(self.cls_subnet, self.box_subnet, features)
        else:
            cls_logits, box_deltas = self.cls_subnet(features), self.box_subnet(features)
        return cls_logits, box_deltas, shapes

    def compile_dense(self, mode: str, backend: str = "inductor") -> None:
        """``train.compile``: run :meth:`dense` through ``torch.compile(mode=mode)`` from now on ("" =
        eager again). The parameters and the state_dict are the module's own, so checkpoints do not
        change. Shapes are static: each new padded input size compiles once more (torch's
        recompile limit, 8 by default, then runs it eagerly), so it pays with fixed-size batches."""
        if not mode:
            self._dense_fn = None
        elif backend == "inductor":
            self._dense_fn = torch.compile(self.dense, mode=mode, dynamic=False)
        else:  # a backend without modes (tests: "aot_eager" traces and differentiates, generates no code)
            self._dense_fn = torch.compile(self.dense, backend=backend, dynamic=False)

    def forward(self, images: torch.Tensor) -> Dict[str, object]:
        """images (N, 3, H, W) normalized -> cls_logits (N, R, K), box_deltas (N, R, 4), anchors (R, 4),
        and the per-level feature shapes (list of (H, W))."""
        cls_logits, box_deltas, shapes = (self._dense_fn or self.dense)(images)
        return {
            "cls_logits": cls_logits,
            "box_deltas": box_deltas,
            "anchors": self.anchor_generator(shapes, device=images.device),
            "shapes": shapes,
        }

    @torch.no_grad()
    def postprocess(self, outputs: Dict[str, object], image_sizes: Sequence[Tuple[int, int]],
                    score_thresh: float = 0.05, topk_per_level: int = 1000, nms_thresh: float = 0.5,
                    max_detections: int = 100) -> List[Dict[str, torch.Tensor]]:
        """Per level: keep scores > score_thresh, the top ``topk_per_level``, decode; merge levels,
        class-wise NMS, keep the best ``max_detections``. Boxes are clipped to each image's size
        (before padding). Returns per image: boxes (D, 4) xyxy, scores (D,), labels (D,) contiguous,
        by decreasing score.

        Batched over the images: one top-k per level for the whole batch, one decode, one
        ``batched_nms`` with a group per (image, class), so the cost does not grow with a Python
        loop over images (tests/test_speed_paths.py checks it against the per-image loop)."""
        cls_logits, box_deltas, anchors = outputs["cls_logits"], outputs["box_deltas"], outputs["anchors"]
        a, k = self.anchor_generator.num_anchors_per_location, self.num_classes
        level_sizes = [h * w * a for h, w in outputs["shapes"]]
        n = cls_logits.shape[0]
        device = cls_logits.device
        scores_all = torch.sigmoid(cls_logits.float())  # (N, R, K)
        scores_l, anchors_l, labels_l = [], [], []
        start = 0
        for size in level_sizes:
            scores = scores_all[:, start:start + size].reshape(n, size * k)
            # the top ``topk_per_level`` of the scores above the threshold: those below cannot be
            # among them unless fewer are above, and are dropped after the top-k
            s, idx = scores.masked_fill(scores <= score_thresh, -1.0).topk(min(topk_per_level, size * k), dim=1)
            scores_l.append(s)
            anchors_l.append(idx // k + start)
            labels_l.append(idx % k)
            start += size
        scores, anchor_idx, labels = torch.cat(scores_l, 1), torch.cat(anchors_l, 1), torch.cat(labels_l, 1)
        img, cand = (scores > score_thresh).nonzero(as_tuple=True)  # (C,) each, image-major
        anchor_idx = anchor_idx[img, cand]
        scores, labels = scores[img, cand], labels[img, cand]
        boxes = decode(anchors[anchor_idx], box_deltas[img, anchor_idx])
        limits = torch.tensor([[w, h, w, h] for h, w in image_sizes], dtype=boxes.dtype, device=device)[img]
        boxes = torch.minimum(boxes.clamp(min=0), limits)
        keep = batched_nms(boxes, scores, img * k + labels, nms_thresh)  # by decreasing score
        # per image, in score order: a stable sort by image keeps the score order within each image
        keep = keep[torch.sort(img[keep], stable=True).indices]
        counts = torch.bincount(img[keep], minlength=n)
        first = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(keep), device=device) - first[img[keep]]
        keep = keep[rank < max_detections]
        counts = counts.clamp(max=max_detections).tolist()
        return [{"boxes": b, "scores": s, "labels": l} for b, s, l in
                zip(boxes[keep].split(counts), scores[keep].split(counts), labels[keep].split(counts))]


def from_config(cfg, num_classes: int, load_backbone_weights: bool = True) -> RetinaNet:
    """``cfg``: a RetinaConfig (uses its ``model`` and ``anchors`` sections). The backbone starts from
    ``model.backbone_weights`` (unless ``load_backbone_weights`` is False: the caller loads a whole
    checkpoint next); ``model.backbone_source`` is then the ResolvedWeights read, or None (random)."""
    from .anchors import from_config as anchors_from_config
    from .backbone_weights import load_state_dict, resolve

    m = cfg.model
    source = resolve(m.backbone_weights, m.depth) if load_backbone_weights else None
    model = RetinaNet(num_classes, depth=m.depth, fpn_channels=m.fpn_channels, head_convs=m.head_convs,
                      head_norm=m.head_norm, prior_init=m.prior_init, prior_prob=m.prior_prob,
                      anchor_generator=anchors_from_config(cfg.anchors), fast_cpu_convs=m.fast_cpu_convs,
                      backbone_norm=m.backbone_norm, freeze_at=m.freeze_at,
                      backbone_state_dict=load_state_dict(source) if source is not None else None)
    model.backbone_source = source
    return model
