"""How the network runs on a device: precision (autocast), memory format and input normalization.

Shared by training (retina/engine/), inference (retina/evaluation/predict.py), the benchmark
(benchmarks/bench.py) and Figure 4's analysis (retina/analysis/), so all of them run the model the
same way.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from omegaconf import DictConfig

from .data import normalize


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
