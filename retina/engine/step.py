"""One batch through the model: device placement and precision, anchor assignment, the losses, the
optimizer update.

Shared by training (retina/engine/trainer.py), inference (retina/evaluation/predict.py), the benchmark
(benchmarks/bench.py) and Figure 4's analysis (retina/evaluation/loss_distribution.py), so all four
run the model exactly the same way.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from omegaconf import DictConfig

from ..data import normalize
from ..modeling.boxes import match_anchors, pad_targets
from ..modeling.losses import LossOutput, RetinaLoss


def uses_amp(cfg: DictConfig, device: torch.device) -> bool:
    """Autocast (``train.amp``): on CUDA; on the CPU only with ``train.amp_cpu``."""
    return bool(cfg.train.amp) and (device.type == "cuda" or (device.type == "cpu" and bool(cfg.train.amp_cpu)))


def amp_dtype(cfg: DictConfig) -> torch.dtype:
    return torch.float16 if cfg.train.amp_dtype == "float16" else torch.bfloat16


def precision(cfg: DictConfig, device: torch.device) -> str:
    """What the model computes in: "bf16-autocast", "fp16-autocast" or "fp32"."""
    if not uses_amp(cfg, device):
        return "fp32"
    return "fp16-autocast" if amp_dtype(cfg) == torch.float16 else "bf16-autocast"


def grad_scaler(cfg: DictConfig, device: torch.device) -> Optional[torch.amp.GradScaler]:
    """float16 autocast needs loss scaling (small gradients underflow); bf16 and fp32 do not: None."""
    if uses_amp(cfg, device) and amp_dtype(cfg) == torch.float16:
        return torch.amp.GradScaler(device.type)
    return None


def uses_channels_last(cfg: DictConfig, device: torch.device) -> bool:
    """channels_last memory format: on CUDA only (``model.channels_last``). On CPUs without AVX-512
    oneDNN's channels_last backward passes are slower on small maps (measured: the cpu profile's
    backbone and torchvision's whole model); the CPU speed-ups are ``model.fast_cpu_convs``."""
    return bool(cfg.model.channels_last) and device.type == "cuda"


def forward(model, batch: dict, cfg: DictConfig, device: torch.device) -> Dict[str, object]:
    """The model's outputs for a collated batch: cls_logits (N, R, K), box_deltas (N, R, 4), anchors (R, 4)."""
    # (N, 3, Hp, Wp): bytes (images at their own size) are normalized here, on the device
    images = normalize(batch["images"].to(device, non_blocking=True), batch["image_sizes"])
    if uses_channels_last(cfg, device):
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=amp_dtype(cfg), enabled=uses_amp(cfg, device)):
        return model(images)


def assign(out: Dict[str, object], batch: dict, cfg: DictConfig,
           device: torch.device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Anchor assignment of a batch: labels (N, R) (see match_anchors), gt_boxes (N, G, 4), gt_labels (N, G)."""
    gt_boxes, gt_labels, gt_crowd, gt_valid = pad_targets(batch["boxes"], batch["labels"], batch["iscrowd"], device)
    m = cfg.matcher
    any_crowd = any(c.numpy().any() for c in batch["iscrowd"])  # the loader's host tensors: no device read
    labels = match_anchors(out["anchors"], gt_boxes, gt_valid, gt_crowd if any_crowd else None, m.fg_iou, m.bg_iou,
                           m.allow_low_quality_matches)
    return labels, gt_boxes, gt_labels


def losses(model, loss_fn: RetinaLoss, batch: dict, cfg: DictConfig, device: torch.device) -> LossOutput:
    """Forward, assignment and loss of one training batch."""
    out = forward(model, batch, cfg, device)
    labels, gt_boxes, gt_labels = assign(out, batch, cfg, device)
    return loss_fn(out["cls_logits"], out["box_deltas"], out["anchors"], labels, gt_boxes, gt_labels)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def apply_gradients(loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor],
                    grad_clip_norm: Optional[float], scaler: Optional[torch.amp.GradScaler] = None) -> None:
    """One optimizer update from ``loss``: gradients zeroed, backward, clipped to ``grad_clip_norm``
    (total norm over ``params``; None: no clipping), step. With a GradScaler (fp16): the loss scaled,
    the gradients unscaled before clipping, the step skipped where they overflowed."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        if grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip_norm)
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    if grad_clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, grad_clip_norm)
    scaler.step(optimizer)
    scaler.update()
