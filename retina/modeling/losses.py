"""Classification losses of the paper (focal loss, alpha-balanced CE, CE on OHEM's anchors) and the
box loss; which anchors OHEM keeps is retina/modeling/sampling.py.

Focal loss (paper eq. 5), per anchor and class, with p = sigmoid(x) and y in {0, 1}:

    p_t = p if y = 1 else 1 - p,      alpha_t = alpha if y = 1 else 1 - alpha
    FL(p_t) = -alpha_t * (1 - p_t)^gamma * log(p_t)

gamma = 0 gives the alpha-balanced cross entropy of Table 1a. The modulating factor is computed as
exp(gamma * log(1 - p_t)) with log(1 - p_t) = logsigmoid(-x) for y = 1 and logsigmoid(x) for y = 0,
which keeps its gradient finite for 0 < gamma < 1 where (1 - p_t)^gamma's derivative is infinite
at p_t = 1 (sigmoid saturates to exactly 1 in float32 for |x| > ~17).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from .box_regression import encode
from .matcher import IGNORE
from .sampling import ohem_select


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Element-wise focal loss (no reduction); ``targets`` in {0, 1}, same shape as ``logits``."""
    logits = logits.float()
    targets = targets.to(logits.dtype)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    loss = ce
    if gamma != 0:
        signed = logits * (1.0 - 2.0 * targets)  # x for negatives, -x for positives
        loss = ce * torch.exp(gamma * F.logsigmoid(signed))  # (1 - p_t)^gamma
    alpha_t = alpha * targets + (1.0 - alpha) * (1.0 - targets)
    return alpha_t * loss


def box_loss(box_deltas: torch.Tensor, anchors: torch.Tensor, matched_boxes: torch.Tensor,
             beta: float, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Smooth L1 summed over foreground anchors: (..., 4) predictions, anchors, matched gt boxes;
    ``mask`` (...) selects the foreground ones (None: all)."""
    target = encode(anchors, matched_boxes)
    if beta == 0:
        per = F.l1_loss(box_deltas.float(), target, reduction="none")
    else:
        per = F.smooth_l1_loss(box_deltas.float(), target, reduction="none", beta=beta)
    if mask is not None:
        per = torch.where(mask.unsqueeze(-1), per, torch.zeros_like(per))
    return per.sum()


def classification_targets(labels: torch.Tensor, gt_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot targets (N, R, K) in {0, 1}: 1 at (image, anchor, class of its matched box) for
    foreground anchors; ``labels`` (N, R) from match_anchors, ``gt_labels`` (N, G) contiguous. Built
    by a gather and a one-hot over K + 1 classes (the last, "background", dropped): no ``nonzero``,
    so no wait for the device."""
    fg = labels >= 0
    cls = gt_labels.gather(1, labels.clamp(min=0))  # (N, R): the class of each anchor's matched box
    cls = torch.where(fg, cls, torch.full_like(cls, num_classes))
    return F.one_hot(cls, num_classes + 1)[..., :num_classes].to(torch.float32)


@dataclass
class LossOutput:
    loss_cls: torch.Tensor
    loss_box: torch.Tensor
    num_foreground: torch.Tensor  # () float: this batch's foreground anchors (all processes' when data-parallel)

    @property
    def total(self) -> torch.Tensor:
        return self.loss_cls + self.loss_box


class RetinaLoss:
    """The detector's loss, given the head outputs, anchors and assignment.

    Classification sums over all non-ignored anchors (focal) or over the OHEM-kept anchors, and both
    terms are divided by the number of foreground anchors in the batch (optionally an exponential
    moving average of it, ``normalizer_momentum``). Everything stays on the device: the count and its
    average are tensors, the box loss is masked rather than gathered, so a training step never waits
    for the device here (OHEM's selection does: its prefix sizes are decided on the host).
    """

    def __init__(self, kind: str = "focal", alpha: float = 0.25, gamma: float = 2.0,
                 smooth_l1_beta: float = 0.11, box_weight: float = 1.0, normalizer_momentum: float = 0.0,
                 ohem_batch_size: int = 128, ohem_nms: float = 0.7, ohem_pos_ratio: Optional[float] = None):
        self.kind = kind
        self.alpha, self.gamma = alpha, gamma
        self.smooth_l1_beta, self.box_weight = smooth_l1_beta, box_weight
        self.normalizer_momentum = normalizer_momentum
        self.ohem_batch_size, self.ohem_nms, self.ohem_pos_ratio = ohem_batch_size, ohem_nms, ohem_pos_ratio
        self.normalizer_ema: Optional[torch.Tensor] = None  # () float64 state, saved in checkpoints
        # Data-parallel training (retina.engine.distributed, set by fit): sums this process's foreground
        # count tensor over all processes (an all-reduce on the device, no host read), so that each
        # divides by the whole batch's count (and the moving average follows it) as one process would.
        self.count_over_processes: Optional[Callable[[torch.Tensor], torch.Tensor]] = None

    def state_dict(self) -> dict:
        return {"normalizer_ema": None if self.normalizer_ema is None else float(self.normalizer_ema)}

    def load_state_dict(self, state: dict) -> None:
        ema = state.get("normalizer_ema")
        self.normalizer_ema = None if ema is None else torch.tensor(float(ema), dtype=torch.float64)

    def _normalizer(self, count: torch.Tensor) -> torch.Tensor:
        """() float32 tensor: max(1, count) or max(1, its moving average); ``count``: () float64, the
        whole batch's foreground anchors."""
        if self.normalizer_momentum > 0:
            m = self.normalizer_momentum
            if self.normalizer_ema is None:
                self.normalizer_ema = count
            else:
                self.normalizer_ema = m * self.normalizer_ema.to(count.device) + (1 - m) * count
            count = self.normalizer_ema
        return count.clamp(min=1.0).to(torch.float32)

    def __call__(self, cls_logits: torch.Tensor, box_deltas: torch.Tensor, anchors: torch.Tensor,
                 labels: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor) -> LossOutput:
        """
        Args:
            cls_logits: (N, R, K); box_deltas: (N, R, 4); anchors: (R, 4).
            labels: (N, R) from :func:`retina.boxes.match_anchors`.
            gt_boxes: (N, G, 4), gt_labels: (N, G) contiguous class of each padded gt box.
        """
        n, r, k = cls_logits.shape
        fg = labels >= 0  # (N, R)
        num_fg = fg.sum()  # () long, on the device
        matched = labels.clamp(min=0)  # (N, R) gt index (garbage where not fg)
        targets = classification_targets(labels, gt_labels, k)

        per_element = focal_loss(cls_logits, targets, self.alpha, self.gamma)  # (N, R, K)
        if self.kind == "ohem":
            per_anchor = per_element.sum(dim=2)  # (N, R)
            kept = ohem_select(per_anchor.detach(), anchors, labels, self.ohem_batch_size, self.ohem_nms,
                               self.ohem_pos_ratio)  # (N, R), all images at once
            cls_sum = (per_anchor * kept).sum()
        else:
            cls_sum = (per_element * (labels != IGNORE).unsqueeze(2)).sum()

        # smooth L1 over the foreground anchors: computed for every anchor against its matched box (the
        # anchor itself where there is none: a zero target) and masked, instead of gathered by nonzero
        anchors_n = anchors.unsqueeze(0).expand(n, r, 4)
        matched_boxes = gt_boxes.gather(1, matched.unsqueeze(2).expand(n, r, 4))  # (N, R, 4)
        matched_boxes = torch.where(fg.unsqueeze(2), matched_boxes, anchors_n)
        box_sum = box_loss(box_deltas, anchors_n, matched_boxes, self.smooth_l1_beta, mask=fg)
        count = num_fg.to(torch.float64)
        if self.count_over_processes is not None:
            count = self.count_over_processes(count)  # the whole batch's
        norm = self._normalizer(count)
        return LossOutput(cls_sum / norm, self.box_weight * box_sum / norm, count.to(torch.float32))


def from_config(cfg) -> RetinaLoss:
    """``cfg``: the ``loss`` section of a RetinaConfig."""
    return RetinaLoss(cfg.kind, cfg.alpha, cfg.gamma, cfg.smooth_l1_beta, cfg.box_weight, cfg.normalizer_momentum,
                      cfg.ohem_batch_size, cfg.ohem_nms, cfg.ohem_pos_ratio)
