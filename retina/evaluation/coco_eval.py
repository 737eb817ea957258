"""COCO box evaluation: pycocotools' COCOeval, quietly, with its numbers in percent."""
from __future__ import annotations

import contextlib
import io
import math
from typing import Any, Dict, List, Optional, Sequence

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# COCOeval.stats[0:6], in order
AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def evaluate_coco(coco_gt: COCO, results: List[Dict[str, Any]],
                  image_ids: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """Box AP of ``results`` against ``coco_gt``.

    results: COCO result dicts ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` in
    original-image pixels (see ``retina.data.to_coco_results``); they are not modified.
    image_ids: evaluate on these images only (default: every image of ``coco_gt``).
    Returns ``AP, AP50, AP75, APs, APm, APl`` in percent (NaN where no ground truth has that size)
    and ``summary``, the text COCOeval.summarize() prints. No results: every AP is 0.
    """
    gt_ids = set(coco_gt.getImgIds())
    if image_ids is not None:
        unknown = sorted(set(image_ids) - gt_ids)
        if unknown:
            raise ValueError(f"evaluate_coco: image_ids {unknown[:5]} are not in the ground truth")
        wanted = set(image_ids)
        results = [r for r in results if r["image_id"] in wanted]
    stray = sorted({r["image_id"] for r in results} - gt_ids)
    if stray:
        raise ValueError(f"evaluate_coco: results for image ids {stray[:5]} that are not in the ground truth")
    if not results:  # loadRes cannot take an empty list
        metrics: Dict[str, Any] = {key: 0.0 for key in AP_KEYS}
        metrics["summary"] = "no detections: every AP is 0"
        return metrics

    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes([dict(r) for r in results])  # loadRes adds keys to the dicts
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(set(image_ids))
        evaluator.evaluate()
        evaluator.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.summarize()
    metrics = {key: _percent(stat) for key, stat in zip(AP_KEYS, evaluator.stats[: len(AP_KEYS)])}
    metrics["summary"] = summary.getvalue()
    return metrics


def _percent(stat: float) -> float:
    """A COCOeval stat in percent; its -1 (nothing to evaluate) becomes NaN."""
    return math.nan if stat < 0 else float(stat) * 100.0
