"""Online hard example mining (OHEM, the paper's section 5.2 baseline): which anchors of an image
its loss is computed on: the highest-loss anchors after NMS over all of them, up to a batch size per
image, optionally at most one positive to three negatives (SSD's 1:3).
"""
from __future__ import annotations

from typing import Optional

import torch
from torchvision.ops import batched_nms

from .matcher import IGNORE
from .nms_graph import greedy_nms, overlap_graph


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
