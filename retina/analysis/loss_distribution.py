"""The paper's Figure 4: how the loss of a trained model is distributed over its anchors.

For one trained model, every (anchor, class) element of the validation images is a sample: positive
where the anchor is matched to a box of that class, negative where it is not (ignored anchors are
left out). Its focal loss is computed for several gamma; within the positives and within the
negatives the losses are sorted ascending and normalized to sum 1, so the curve at fraction x is the
share of the total loss carried by the easiest x of the samples (a Lorenz curve). alpha only scales
each group and so drops out of the normalized curves.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence

import torch

from ..config import from_container
from ..data.loaders import build_val_dataset, val_loader
from ..engine.checkpoint import load_checkpoint
from ..engine.step import assign
from ..execution import forward
from ..modeling.matcher import IGNORE
from ..modeling.losses import classification_targets, focal_loss
from ..build import build_model

PAPER_GAMMAS = (0.0, 0.5, 1.0, 2.0)


def lorenz(losses: torch.Tensor, points: int = 201) -> torch.Tensor:
    """Cumulative share of the total loss held by the easiest fraction x of samples, at ``points``
    evenly spaced x in [0, 1]: (points,), from 0 to 1."""
    values = losses.double().sort().values
    cumulative = torch.cat([torch.zeros(1, dtype=values.dtype), values.cumsum(0)])
    cumulative = cumulative / cumulative[-1].clamp(min=1e-300)
    idx = torch.linspace(0, len(values), points).round().long()
    return cumulative[idx].float()


MAX_NEGATIVES = 10_000_000  # the paper's Figure 4 counts ~1e7 negatives; more are sampled down to this


@torch.no_grad()
def collect_logits(checkpoint: str | Path, max_images: int = 50,
                   max_negatives: int = MAX_NEGATIVES) -> Dict[str, torch.Tensor]:
    """Class logits of the model in ``checkpoint`` on the first validation images, split into positive
    and negative samples: {"positives": (P,), "negatives": (Q,)}. Negatives beyond ``max_negatives``
    (the paper profile: 50 images x 116k anchors x 80 classes = 4.7e8) are a uniform random sample of
    that size (fixed seed), so the curves fit a driver's memory; positives are all kept."""
    state = load_checkpoint(checkpoint)
    cfg = from_container(state["config"])
    device = torch.device("cpu")
    val_set = build_val_dataset(cfg)  # the training split is never opened
    model = build_model(cfg, state["num_classes"])  # the checkpoint holds the weights
    model.load_state_dict(state["model"])
    model.eval()
    cfg.data.max_val_images = max_images
    loader, _ = val_loader(val_set, cfg, device)
    positives, negatives = [], []
    images = min(len(val_set), max_images)
    keep_share = None  # the share of negatives kept, set from the first batch
    g = torch.Generator().manual_seed(0)
    for batch in loader:
        out = forward(model, batch, cfg, device)
        labels, _, gt_labels = assign(out, batch, cfg, device)
        logits = out["cls_logits"].float()  # (N, R, K)
        targets = classification_targets(labels, gt_labels, logits.shape[2]).bool()
        used = (labels != IGNORE).unsqueeze(2).expand_as(logits)
        positives.append(logits[targets & used])
        neg = logits[~targets & used]
        if keep_share is None:
            expected = neg.numel() / logits.shape[0] * images
            keep_share = min(1.0, max_negatives / max(expected, 1.0))
        if keep_share < 1.0:
            neg = neg[torch.rand(neg.numel(), generator=g) < keep_share]
        negatives.append(neg)
    return {"positives": torch.cat(positives), "negatives": torch.cat(negatives)}


def loss_distribution(logits: Dict[str, torch.Tensor], gammas: Sequence[float] = PAPER_GAMMAS,
                      points: int = 201) -> Dict[str, object]:
    """{"fraction": (points,), "positives": {gamma: curve}, "negatives": {gamma: curve}, counts}."""
    out: Dict[str, object] = {"fraction": torch.linspace(0, 1, points)}
    for group, target in (("positives", 1.0), ("negatives", 0.0)):
        x = logits[group]
        t = torch.full_like(x, target)
        out[group] = {g: lorenz(focal_loss(x, t, alpha=0.5, gamma=g), points) for g in gammas}
        out[f"num_{group}"] = int(x.numel())
    return out
