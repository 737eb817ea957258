"""Running a trained model over a loader: detections in COCO result format, and inference time."""
from __future__ import annotations

import time
from typing import Dict, List, Tuple

import torch
from omegaconf import DictConfig

from ..data import to_coco_results
from ..execution import forward


@torch.no_grad()
def predict(model, loader, category_ids: List[int], cfg: DictConfig,
            device: torch.device, warmup=None) -> Tuple[List[Dict], float]:
    """COCO result dicts (original image pixels and category ids) for every image of ``loader``, and
    the inference time in ms per image (forward pass + post-processing, data loading excluded).
    ``warmup``: a loader run first, untimed and not returned (kernel selection, allocator)."""
    was_training = model.training
    model.eval()
    for batch in warmup or []:
        forward(model, batch, cfg, device)
    results: List[Dict] = []
    busy, images = 0.0, 0
    for batch in loader:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = forward(model, batch, cfg, device)
        detections = model.postprocess(out, batch["image_sizes"], cfg.eval.score_thresh, cfg.eval.topk_per_level,
                                       cfg.eval.nms_thresh, cfg.eval.max_detections)
        if device.type == "cuda":
            torch.cuda.synchronize()
        busy += time.perf_counter() - start
        images += batch["images"].shape[0]
        detections = [{k: v.cpu() for k, v in d.items()} for d in detections]
        results.extend(to_coco_results(detections, batch["image_ids"], batch["scales"], category_ids))
    model.train(was_training)
    return results, 1000.0 * busy / max(images, 1)
