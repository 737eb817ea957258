"""A config's datasets and DataLoaders: the training and validation splits, batched and collated."""
from __future__ import annotations

from functools import partial
from typing import Dict, Tuple

import torch
from omegaconf import DictConfig

from ..config import ConfigError
from .coco import CocoDetection, collate
from .synthetic import ensure_synthetic


def dataset_paths(cfg: DictConfig) -> Tuple[Dict[str, str], Dict[str, str]]:
    """(train, val) {annotations, images} paths: generated synthetic data or the configured COCO files."""
    if cfg.data.source == "synthetic":
        return ensure_synthetic(cfg.data.synthetic)
    return dict(cfg.data.train), dict(cfg.data.val)


def _val_dataset(cfg: DictConfig, val_paths: Dict[str, str], verify_files: bool = False) -> CocoDetection:
    d = cfg.data
    return CocoDetection(val_paths["annotations"], val_paths["images"], train=False, min_size=d.min_size,
                         max_size=d.max_size, verify_files=verify_files)


def build_val_dataset(cfg: DictConfig) -> CocoDetection:
    """The validation split alone (evaluating a checkpoint never opens the training split)."""
    return _val_dataset(cfg, dataset_paths(cfg)[1])


def build_datasets(cfg: DictConfig, verify_files: bool = False) -> Tuple[CocoDetection, CocoDetection]:
    """(train, val) datasets of a config; their category ids must agree. ``verify_files``: check every
    image file once (retina.data.coco.verify_image_files): the driver's preflight and the train CLI
    do, trials and workers do not."""
    train_paths, val_paths = dataset_paths(cfg)
    d = cfg.data
    train = CocoDetection(train_paths["annotations"], train_paths["images"], train=True,
                          min_size=d.min_size, max_size=d.max_size, flip_prob=d.flip_prob, verify_files=verify_files)
    val = _val_dataset(cfg, val_paths, verify_files)
    if train.category_ids != val.category_ids:
        raise ConfigError(
            f"{val_paths['annotations']}: categories differ from {train_paths['annotations']}; "
            "expected the same category ids in both splits")
    return train, val


def prefetch_factor(cfg: DictConfig, batch_size: int) -> int:
    """Batches each DataLoader worker prepares ahead: as many as ``data.prefetch_mb`` of shared memory
    holds over all workers (a batch at most batch_size x 3 x max_size^2 bytes, uint8), from 1 to 4."""
    d = cfg.data
    batch_bytes = batch_size * 3 * d.max_size * d.max_size
    return max(1, min(4, int(d.prefetch_mb * 2**20 // max(1, d.num_workers * batch_bytes))))


def make_loader(dataset, batch_sampler, cfg: DictConfig, device: torch.device, batch_size: int = 1):
    workers = cfg.data.num_workers
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batch_sampler, num_workers=workers,
        collate_fn=partial(collate, size_divisibility=cfg.data.size_divisibility),
        pin_memory=device.type == "cuda", persistent_workers=False,
        prefetch_factor=prefetch_factor(cfg, batch_size) if workers > 0 else None,
        # its own generator: a loader's workers are seeded from it, so iterating a loader (an
        # evaluation during training) never draws from the global RNG that checkpoints hold
        generator=torch.Generator().manual_seed(0))


def val_loader(dataset: CocoDetection, cfg: DictConfig, device: torch.device):
    """Batches of ``eval.batch_size`` over the first ``data.max_val_images`` images (all if None), and
    their image ids."""
    n = len(dataset.image_ids)
    if cfg.data.max_val_images is not None:
        n = min(n, cfg.data.max_val_images)
    b = cfg.eval.batch_size
    batches = [list(range(i, min(i + b, n))) for i in range(0, n, b)]
    return make_loader(dataset, batches, cfg, device, b), dataset.image_ids[:n]
