"""Range and consistency checks of a config that its types cannot express (and the backbone
weights' combinations that cannot work), each a one-line :class:`ConfigError` naming the key."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ..errors import ConfigError
from ..weight_names import SYNTHETIC, TORCHVISION_WEIGHT_NAMES, check_weights_file, is_weights_name
from .schema import BACKBONE_NORMS, COMPILE_MODES, NUM_STAGES

def _fail(where: str, key: str, value: Any, expected: str) -> None:
    detail = f"{key}={value!r} is out of range; expected {expected}"
    raise ConfigError(f"{where}: {detail}", key=key, detail=detail)


def validate(cfg: DictConfig, where: str = "config", check_paths: bool = False) -> None:
    """Range and consistency checks the type system cannot express."""
    m, a, mt, l, d, t, e = cfg.model, cfg.anchors, cfg.matcher, cfg.loss, cfg.data, cfg.train, cfg.eval

    def need(cond: bool, key: str, value: Any, expected: str) -> None:
        if not cond:
            _fail(where, key, value, expected)

    need(m.depth in (18, 34, 50, 101), "model.depth", m.depth, "one of 18, 34, 50, 101")
    _validate_backbone(m, cfg.pretrain, need, check_paths)
    need(m.fpn_channels >= 1, "model.fpn_channels", m.fpn_channels, "a positive integer")
    need(m.head_convs >= 0, "model.head_convs", m.head_convs, "an integer >= 0")
    need(m.head_norm in ("none", "group"), "model.head_norm", m.head_norm, "'none' or 'group'")
    if m.head_norm == "group":
        need(m.fpn_channels % 32 == 0, "model.fpn_channels", m.fpn_channels,
             "a multiple of 32 with model.head_norm=group")
    need(0.0 < m.prior_prob < 1.0, "model.prior_prob", m.prior_prob, "a probability in (0, 1)")
    need(a.base_size > 0, "anchors.base_size", a.base_size, "a positive size in pixels")
    need(a.scales_per_octave >= 1, "anchors.scales_per_octave", a.scales_per_octave, "an integer >= 1")
    need(len(a.aspect_ratios) >= 1 and all(r > 0 for r in a.aspect_ratios), "anchors.aspect_ratios",
         list(a.aspect_ratios), "a non-empty list of positive height/width ratios")
    need(0.0 < mt.fg_iou <= 1.0, "matcher.fg_iou", mt.fg_iou, "a value in (0, 1]")
    need(0.0 <= mt.bg_iou <= mt.fg_iou, "matcher.bg_iou", mt.bg_iou, f"a value in [0, matcher.fg_iou={mt.fg_iou}]")
    need(l.kind in ("focal", "ohem"), "loss.kind", l.kind, "'focal' or 'ohem'")
    need(0.0 <= l.alpha <= 1.0, "loss.alpha", l.alpha, "a value in [0, 1]")
    need(l.gamma >= 0.0 and math.isfinite(l.gamma), "loss.gamma", l.gamma, "a finite value >= 0")
    need(l.smooth_l1_beta >= 0.0, "loss.smooth_l1_beta", l.smooth_l1_beta, "a value >= 0")
    need(l.box_weight >= 0.0, "loss.box_weight", l.box_weight, "a value >= 0")
    need(0.0 <= l.normalizer_momentum < 1.0, "loss.normalizer_momentum", l.normalizer_momentum, "a value in [0, 1)")
    need(l.ohem_batch_size >= 1, "loss.ohem_batch_size", l.ohem_batch_size, "an integer >= 1")
    need(0.0 < l.ohem_nms <= 1.0, "loss.ohem_nms", l.ohem_nms, "a value in (0, 1]")
    if l.ohem_pos_ratio is not None:
        need(0.0 < l.ohem_pos_ratio < 1.0, "loss.ohem_pos_ratio", l.ohem_pos_ratio, "a value in (0, 1) or null")
    need(d.source in ("synthetic", "coco"), "data.source", d.source, "'synthetic' or 'coco'")
    need(d.min_size >= 8, "data.min_size", d.min_size, "an integer >= 8")
    need(d.max_size >= d.min_size, "data.max_size", d.max_size, f"an integer >= data.min_size={d.min_size}")
    need(d.size_divisibility >= 1, "data.size_divisibility", d.size_divisibility, "an integer >= 1")
    need(0.0 <= d.flip_prob <= 1.0, "data.flip_prob", d.flip_prob, "a probability in [0, 1]")
    need(d.num_workers >= 0, "data.num_workers", d.num_workers, "an integer >= 0")
    need(d.prefetch_mb >= 1, "data.prefetch_mb", d.prefetch_mb, "a positive number of MiB")
    s = d.synthetic
    need(s.num_train >= 1 and s.num_val >= 1, "data.synthetic.num_train", s.num_train, "an integer >= 1")
    need(s.image_size >= 32, "data.synthetic.image_size", s.image_size, "an integer >= 32")
    need(1 <= s.num_classes <= 48, "data.synthetic.num_classes", s.num_classes,
         "an integer in [1, 48] (6 shapes x 8 colour families)")
    need(0 <= s.min_objects <= s.max_objects, "data.synthetic.max_objects", s.max_objects,
         f"an integer >= data.synthetic.min_objects={s.min_objects}")
    need(0 < s.min_object_size <= s.max_object_size <= s.image_size, "data.synthetic.max_object_size",
         s.max_object_size, "min_object_size <= max_object_size <= image_size")
    if d.source == "coco":
        for split in ("train", "val"):
            for k in ("annotations", "images"):
                value = d[split][k]
                need(bool(value), f"data.{split}.{k}", value, "a path (data.source=coco)")
                if check_paths and not Path(value).exists():
                    raise ConfigError(f"{where}: data.{split}.{k}={value!r} does not exist; expected an existing "
                                      f"{'file' if k == 'annotations' else 'folder'}")
    need(t.compile in COMPILE_MODES, "train.compile", t.compile,
         "'' (eager) or a torch.compile mode: " + ", ".join(repr(m) for m in COMPILE_MODES[1:]))
    need(t.iterations >= 1, "train.iterations", t.iterations, "an integer >= 1")
    need(t.batch_size >= 1, "train.batch_size", t.batch_size, "an integer >= 1")
    need(t.lr > 0 and math.isfinite(t.lr), "train.lr", t.lr, "a positive learning rate")
    need(0.0 <= t.momentum < 1.0, "train.momentum", t.momentum, "a value in [0, 1)")
    need(t.weight_decay >= 0, "train.weight_decay", t.weight_decay, "a value >= 0")
    need(t.warmup_iters >= 0, "train.warmup_iters", t.warmup_iters, "an integer >= 0")
    need(0.0 < t.warmup_factor <= 1.0, "train.warmup_factor", t.warmup_factor, "a value in (0, 1]")
    need(all(0.0 < s_ < 1.0 for s_ in t.lr_steps) and list(t.lr_steps) == sorted(t.lr_steps), "train.lr_steps",
         list(t.lr_steps), "increasing fractions of train.iterations in (0, 1)")
    need(0.0 < t.lr_gamma <= 1.0, "train.lr_gamma", t.lr_gamma, "a value in (0, 1]")
    if t.grad_clip_norm is not None:
        need(t.grad_clip_norm > 0, "train.grad_clip_norm", t.grad_clip_norm, "a positive norm or null")
    need(t.device in ("auto", "cpu", "cuda"), "train.device", t.device, "'auto', 'cpu' or 'cuda'")
    need(t.num_threads >= 0, "train.num_threads", t.num_threads, "an integer >= 0")
    need(t.log_every >= 1, "train.log_every", t.log_every, "an integer >= 1")
    need(t.checkpoint_every >= 0, "train.checkpoint_every", t.checkpoint_every, "an integer >= 0")
    need(e.every >= 0, "eval.every", e.every, "an integer >= 0 (iterations between evaluations; 0 = at the end only)")
    need(0.0 <= e.score_thresh < 1.0, "eval.score_thresh", e.score_thresh, "a value in [0, 1)")
    need(e.topk_per_level >= 1, "eval.topk_per_level", e.topk_per_level, "an integer >= 1")
    need(0.0 < e.nms_thresh <= 1.0, "eval.nms_thresh", e.nms_thresh, "a value in (0, 1]")
    need(e.max_detections >= 1, "eval.max_detections", e.max_detections, "an integer >= 1")
    need(e.batch_size >= 1, "eval.batch_size", e.batch_size, "an integer >= 1")
    need(e.timing_images >= 0, "eval.timing_images", e.timing_images, "an integer >= 0")
    need(t.amp_dtype in ("bfloat16", "float16"), "train.amp_dtype", t.amp_dtype, "'bfloat16' or 'float16'")
    need(0.0 <= t.cuda_memory_fraction <= 1.0, "train.cuda_memory_fraction", t.cuda_memory_fraction,
         "a fraction in [0, 1] (0: no cap)")


def _validate_backbone(m: DictConfig, cfg_pretrain: DictConfig, need, check_paths: bool) -> None:
    """model.backbone_weights / backbone_norm / freeze_at, and the combinations that cannot work."""
    need(m.backbone_norm in BACKBONE_NORMS, "model.backbone_norm", m.backbone_norm,
         "one of " + ", ".join(repr(n) for n in BACKBONE_NORMS))
    need(0 <= m.freeze_at <= NUM_STAGES, "model.freeze_at", m.freeze_at,
         f"an integer in [0, {NUM_STAGES}] (detectron2's FREEZE_AT: 2 = stem and res2 frozen)")
    weights = m.backbone_weights
    if not weights:
        # a frozen random stem cost Detectron's GroupNorm project 3 AP; frozen BN without trained
        # statistics is no normalization at all
        need(m.freeze_at == 0, "model.freeze_at", m.freeze_at,
             "0 with a randomly initialized backbone (model.backbone_weights=''): freezing random stages "
             "freezes noise; give pretrained weights or set model.freeze_at=0")
        need(m.backbone_norm != "frozen_bn", "model.backbone_norm", m.backbone_norm,
             "'bn', 'sync_bn' or 'group' with a randomly initialized backbone (model.backbone_weights=''): "
             "frozen BatchNorm needs trained statistics")
    elif weights == SYNTHETIC:
        p = cfg_pretrain
        need(p.image_size >= 24, "pretrain.image_size", p.image_size, "an integer >= 24")
        need(p.num_images >= 100, "pretrain.num_images", p.num_images, "an integer >= 100")
        need(0.0 < p.min_object_fraction <= p.max_object_fraction <= 1.0, "pretrain.max_object_fraction",
             p.max_object_fraction, "0 < pretrain.min_object_fraction <= max_object_fraction <= 1")
        need(p.iterations >= 1 and p.batch_size >= 1, "pretrain.iterations", p.iterations, "an integer >= 1")
        need(p.lr > 0 and p.weight_decay >= 0, "pretrain.lr", p.lr, "a positive learning rate")
        need(p.num_threads >= 1, "pretrain.num_threads", p.num_threads,
             "an integer >= 1 (a fixed count: the weights depend on it)")
        need(m.backbone_norm != "group", "model.backbone_norm", m.backbone_norm,
             "'bn', 'frozen_bn' or 'sync_bn' with model.backbone_weights=synthetic (a BatchNorm ResNet)")
    elif is_weights_name(weights):
        names = TORCHVISION_WEIGHT_NAMES[m.depth]
        need(weights in names, "model.backbone_weights", weights,
             f"a weights name of torchvision's ResNet-{m.depth} ({', '.join(names)}), a path to a state dict "
             "(.pth), or '' (from scratch)")
        need(m.backbone_norm != "group", "model.backbone_norm", m.backbone_norm,
             f"'bn', 'frozen_bn' or 'sync_bn' with torchvision's {weights} (BatchNorm-trained weights); "
             "'group' needs a GroupNorm ResNet's state dict")
    elif check_paths:
        check_weights_file(weights, m.depth)  # the file exists (WeightsError names it otherwise)
