"""A model's COCO AP on a config's validation split: prediction (predict.py) scored by pycocotools
(coco_eval.py)."""
from __future__ import annotations

from typing import Dict

import torch
from omegaconf import DictConfig

from ..data.coco import CocoDetection
from ..data.loaders import make_loader, val_loader
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
    if cfg.eval.timing_images:
        out["inference_ms_batch1"] = inference_ms_batch1(net, val_set, cfg, device)
    return out


def inference_ms_batch1(net, val_set: CocoDetection, cfg: DictConfig, device: torch.device) -> float:
    """Inference ms per image at batch size 1 (forward + post-processing), as the paper timed Table 1e,
    over the first ``eval.timing_images`` validation images (after one untimed warm-up image)."""
    n = min(len(val_set), int(cfg.eval.timing_images) + 1)
    batches = [[i] for i in range(n)]
    _, ms = predict(net, make_loader(val_set, batches[1:], cfg, device, 1), val_set.category_ids, cfg, device,
                    warmup=make_loader(val_set, batches[:1], cfg, device, 1))
    return ms
