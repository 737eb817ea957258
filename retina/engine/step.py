"""One training batch: anchor assignment, the losses, the optimizer update (the network's forward
pass, its precision and memory format: retina/execution.py, re-exported here).

Shared by training (retina/engine/trainer.py), the benchmark (benchmarks/bench.py) and Figure 4's
analysis (retina/analysis/loss_distribution.py), so all of them run a batch the same way.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from omegaconf import DictConfig

from ..execution import amp_dtype, forward, grad_scaler, precision, uses_amp, uses_channels_last  # noqa: F401
from ..modeling.boxes import pad_targets
from ..modeling.matcher import match_anchors
from ..modeling.losses import LossOutput, RetinaLoss


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
