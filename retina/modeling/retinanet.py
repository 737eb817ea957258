"""RetinaNet as the paper builds it: a ResNet backbone (retina/modeling/backbone.py), the feature
pyramid P3..P7 (fpn.py), the class and box subnets (heads.py) over anchors (anchors.py), and the
inference post-processing.

The dense part (backbone, FPN, subnets) is :meth:`RetinaNet.dense`; a speed path can replace how the
two subnets run over the levels through one hook, :attr:`RetinaNet.heads_hook` (the CPU's Winograd
subnets, retina/cpu/, set by ``model.fast_cpu_convs``), without changing what they compute.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torchvision.ops import batched_nms

from .anchors import AnchorGenerator
from .backbone import ResNetBackbone
from .box_regression import decode
from .fpn import FPN
from .heads import Subnet, prior_bias

# (cls_subnet, box_subnet, features) -> (cls_logits (N, R, K), box_deltas (N, R, 4)), or None where the
# speed path does not apply to these features (then the subnets run as modules)
HeadsHook = Callable[[Subnet, Subnet, Sequence[torch.Tensor]], Optional[Tuple[torch.Tensor, torch.Tensor]]]

class RetinaNet(nn.Module):
    def __init__(self, num_classes: int, depth: int = 50, fpn_channels: int = 256, head_convs: int = 4,
                 head_norm: str = "none", prior_init: bool = True, prior_prob: float = 0.01,
                 anchor_generator: AnchorGenerator | None = None, backbone_norm: str = "bn", freeze_at: int = 0,
                 backbone_state_dict=None):
        super().__init__()
        self.num_classes = num_classes
        self.anchor_generator = anchor_generator or AnchorGenerator()
        a = self.anchor_generator.num_anchors_per_location
        self.backbone = ResNetBackbone(depth, norm=backbone_norm, freeze_at=freeze_at, state_dict=backbone_state_dict)
        self.fpn = FPN(self.backbone.out_channels, fpn_channels)
        bias = prior_bias(prior_prob) if prior_init else 0.0
        self.cls_subnet = Subnet(fpn_channels, head_convs, a, num_classes, head_norm, final_bias=bias)
        self.box_subnet = Subnet(fpn_channels, head_convs, a, 4, head_norm, final_bias=0.0)
        self.heads_hook: Optional[HeadsHook] = None  # a speed path for the subnets (see the module docstring)
        self._dense_fn = None  # dense through torch.compile (compile_dense), else None: eager

    def heads(self, features: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Both subnets over all levels: cls_logits (N, R, K), box_deltas (N, R, 4)."""
        if self.heads_hook is not None:
            out = self.heads_hook(self.cls_subnet, self.box_subnet, features)
            if out is not None:
                return out
        return self.cls_subnet(features), self.box_subnet(features)

    def dense(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, List[Tuple[int, int]]]:
        """The network proper: images -> (cls_logits (N, R, K), box_deltas (N, R, 4), per-level (H, W)).
        What :meth:`compile_dense` compiles; the anchors (a cache keyed by shapes) stay outside."""
        features = self.fpn(self.backbone(images))
        shapes = [(int(f.shape[-2]), int(f.shape[-1])) for f in features]
        cls_logits, box_deltas = self.heads(features)
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


def from_config(cfg, num_classes: int, backbone=None) -> RetinaNet:
    """``cfg``: a RetinaConfig (uses its ``model`` and ``anchors`` sections). The backbone starts from
    ``backbone``, weights already resolved (``backbone_weights.resolve``; None: random, or the caller
    loads a whole checkpoint next); ``model.backbone_source`` is that ResolvedWeights. Building never
    downloads or trains anything; the CPU speed paths are plugged in by ``retina/build.py``."""
    from .anchors import from_config as anchors_from_config
    from .backbone_weights import load_state_dict

    m = cfg.model
    source = backbone
    model = RetinaNet(num_classes, depth=m.depth, fpn_channels=m.fpn_channels, head_convs=m.head_convs,
                      head_norm=m.head_norm, prior_init=m.prior_init, prior_prob=m.prior_prob,
                      anchor_generator=anchors_from_config(cfg.anchors), backbone_norm=m.backbone_norm,
                      freeze_at=m.freeze_at, backbone_state_dict=load_state_dict(source) if source is not None else None)
    model.backbone_source = source
    return model
