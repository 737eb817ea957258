"""A model's COCO AP on a config's validation split: prediction (predict.py) scored by pycocotools
(coco_eval.py)."""
from __future__ import annotations

from typing import Dict

import torch
from omegaconf import DictConfig

from ..data.coco import CocoDetection
from ..data.loaders import val_loader
from .coco_eval import evaluate_coco
from .predict import predict


def evaluate_model(net, val_set: CocoDetection, cfg: DictConfig, device: torch.device) -> Dict[str, object]:
    """pycocotools AP of ``net`` on the validation split (its first ``data.max_val_images``): AP, AP50,
    AP75, APs, APm, APl (percent), inference_ms, eval_summary, num_val_images, num_detections. Leaves
    the model in the mode it found it in and touches no random state, so evaluating during training
    changes nothing in the training that follows."""
    loader_val, image_ids = val_loader(val_set, cfg, device)
    detections, inference_ms = predict(net, loader_val, val_set.category_ids, cfg, device)
    scores = evaluate_coco(val_set.coco, detections, image_ids)
    out: Dict[str, object] = {k: v for k, v in scores.items() if k != "summary"}
    out.update({"inference_ms": inference_ms, "eval_summary": scores["summary"], "num_val_images": len(image_ids),
                "num_detections": len(detections)})
    return out
