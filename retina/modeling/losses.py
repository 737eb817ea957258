"""Classification losses of the paper (focal loss, alpha-balanced CE, OHEM) and the box loss.

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
from torchvision.ops import batched_nms

from .boxes import IGNORE, encode
from .nms_graph import greedy_nms, overlap_graph


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


# Anchors per image must stay below 2^OHEM_INDEX_BITS for the loss-order keys (a 600x1000 image: 116,712).
OHEM_INDEX_BITS = 24
OHEM_FIRST_PREFIX = 4  # the first NMS looks at this many times the batch size of highest-loss anchors
# On the CPU, an image whose prefix would grow past this many anchors finishes through the anchors'
# overlap graph (retina/modeling/nms_graph.py): one pass in loss order instead of NMS over ever longer prefixes.
OHEM_GRAPH_FROM = 4096


def loss_order_keys(anchor_losses: torch.Tensor) -> torch.Tensor:
    """(..., R) int64 keys, all distinct, whose decreasing order is the OHEM order: higher loss first,
    the lower anchor index first among equal losses. A non-negative float32's bits, read as an
    integer, order as the float does; the anchor index fills the low bits."""
    bits = anchor_losses.detach().float().clamp(min=0.0).contiguous().view(torch.int32).to(torch.int64)
    index = torch.arange(anchor_losses.shape[-1], device=anchor_losses.device, dtype=torch.int64)
    return (bits << OHEM_INDEX_BITS) + ((1 << OHEM_INDEX_BITS) - 1 - index)


def ohem_select(anchor_losses: torch.Tensor, anchors: torch.Tensor, labels: torch.Tensor,
                batch_size: int, nms_thresh: float, pos_ratio: Optional[float]) -> torch.Tensor:
    """Online hard example mining (section 5.2) for a batch of images, or one image.

    Per image: the non-ignored anchors in loss order (:func:`loss_order_keys`), greedy NMS over their
    boxes at ``nms_thresh``, then the first ``batch_size`` survivors; with ``pos_ratio`` (e.g. 0.25 for
    the paper's "1:3", SSD's variant) at most ``batch_size * pos_ratio`` positives and at most three
    negatives per positive kept ((1 - r) / r; with few positives the minibatch is smaller: SSD's cap,
    not Fast R-CNN's filling with negatives).

    Exact and fast: greedy NMS decides each box from the boxes before it in the order, so NMS over the
    highest-loss prefix keeps, within that prefix, exactly what NMS over all boxes keeps. Each image
    starts with a prefix of OHEM_FIRST_PREFIX x batch_size anchors and doubles it until enough anchors
    survive (1:3 also needs every positive seen, or enough of them kept); all images' prefixes go
    through one batched NMS per round. On the CPU an image whose prefix would pass OHEM_GRAPH_FROM
    anchors is finished by one greedy pass over the anchors' cached overlap graph (the same NMS
    decisions, see nms_graph.py): the scan that must reach the last positive no longer costs NMS over
    all anchors (~1 minute per 600x1000 image).

    Args:
        anchor_losses: (N, R) or (R,) loss of each anchor (summed over classes), detached.
        anchors: (R, 4) anchor boxes; labels: (N, R) or (R,) assignment (>= 0 fg, BACKGROUND, IGNORE).
    Returns:
        bool mask of the kept anchors, the shape of ``labels``.
    """
    if labels.dim() == 1:
        return ohem_select(anchor_losses[None], anchors, labels[None], batch_size, nms_thresh, pos_ratio)[0]
    n = labels.shape[0]
    device = labels.device
    mask = torch.zeros_like(labels, dtype=torch.bool)
    keys = loss_order_keys(anchor_losses).masked_fill(labels == IGNORE, -1)  # ignored: last, never taken
    num_candidates = (labels != IGNORE).sum(dim=1).tolist()
    # the key of each image's lowest-loss positive: a prefix that reaches it has seen every positive
    last_positive = keys.masked_fill(labels < 0, torch.iinfo(torch.int64).max).min(dim=1).values.tolist()
    prefix = [min(num_candidates[i], OHEM_FIRST_PREFIX * batch_size) for i in range(n)]
    pending = [i for i in range(n) if num_candidates[i]]
    cap = int(batch_size * pos_ratio) if pos_ratio is not None else batch_size
    while pending:
        tops = [keys[i].topk(prefix[i]) for i in pending]  # each image's first prefix[i], in loss order
        order = [t.indices for t in tops]
        sizes = [len(o) for o in order]
        groups = torch.repeat_interleave(torch.arange(len(pending), device=device), torch.tensor(sizes, device=device))
        # scores that decrease along each prefix: NMS then visits the boxes in exactly the loss order
        ranks = torch.cat([torch.arange(k, 0, -1, dtype=torch.float32, device=device) for k in sizes])
        keep = batched_nms(anchors[torch.cat(order)].float(), ranks, groups, nms_thresh)  # per group, in order
        kept_group = groups[keep]
        offsets = [0]
        for k in sizes[:-1]:
            offsets.append(offsets[-1] + k)
        unfinished = []
        for j, i in enumerate(pending):
            kept = order[j][keep[kept_group == j] - offsets[j]]
            whole = prefix[i] == num_candidates[i]
            if pos_ratio is None:
                if len(kept) >= batch_size or whole:
                    mask[i, kept[:batch_size]] = True
                    continue
            else:
                is_pos = labels[i, kept] >= 0
                pos, neg = kept[is_pos], kept[~is_pos]
                every_positive = whole or int(tops[j].values[-1]) <= last_positive[i]
                if len(pos) >= cap or every_positive:
                    num_pos = min(len(pos), cap)
                    num_neg = _ohem_negatives(num_pos, batch_size, pos_ratio)
                    if len(neg) >= num_neg or whole:
                        mask[i, pos[:num_pos]] = True
                        mask[i, neg[:num_neg]] = True
                        continue
            if device.type == "cpu" and 2 * prefix[i] > OHEM_GRAPH_FROM and prefix[i] < num_candidates[i]:
                mask[i, _ohem_by_graph(keys[i], labels[i], anchors, num_candidates[i], batch_size, nms_thresh,
                                       pos_ratio, cap)] = True
                continue
            unfinished.append(i)
            prefix[i] = min(num_candidates[i], 2 * prefix[i])
        pending = unfinished
    return mask


def _ohem_by_graph(keys: torch.Tensor, labels: torch.Tensor, anchors: torch.Tensor, num_candidates: int,
                   batch_size: int, nms_thresh: float, pos_ratio: Optional[float], cap: int) -> torch.Tensor:
    """One image's OHEM selection (as ohem_select's) by greedy NMS over the anchors' overlap graph,
    scanning in loss order until the minibatch is decided: the indices of the kept anchors."""
    order = keys.topk(num_candidates).indices  # the non-ignored anchors in loss order
    is_positive = (labels >= 0).numpy()
    positive_positions = is_positive[order.numpy()].nonzero()[0]
    last_positive = int(positive_positions[-1]) if len(positive_positions) else -1
    counts = [0, 0]  # kept negatives, kept positives

    def done(position: int, box: int) -> bool:
        counts[bool(is_positive[box])] += 1
        if pos_ratio is None:
            return counts[0] + counts[1] >= batch_size
        if counts[1] < cap and position < last_positive:  # more positives may still be kept
            return False
        return counts[0] >= _ohem_negatives(min(counts[1], cap), batch_size, pos_ratio)

    kept = torch.tensor(greedy_nms(order, overlap_graph(anchors, nms_thresh), done), dtype=torch.long)
    if pos_ratio is None:
        return kept[:batch_size]
    pos_mask = labels[kept] >= 0
    pos, neg = kept[pos_mask], kept[~pos_mask]
    num_pos = min(len(pos), cap)
    return torch.cat([pos[:num_pos], neg[:_ohem_negatives(num_pos, batch_size, pos_ratio)]])


def _ohem_negatives(num_pos: int, batch_size: int, pos_ratio: float) -> int:
    """1:3's negatives for ``num_pos`` kept positives: (1 - r) / r each, within the batch size."""
    return min(int(round(num_pos * (1.0 - pos_ratio) / pos_ratio)), batch_size - num_pos)


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
