"""Detection data: COCO-format datasets, batching, results, and the synthetic generator."""
from __future__ import annotations

from typing import Any

from retina.data.coco import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CocoDetection,
    DataError,
    collate,
    decode_rgb,
    load_coco,
    normalize,
    resize_scale,
    to_coco_results,
)

_SYNTHETIC_NAMES = ("ensure_synthetic", "generate", "SHAPES")

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "CocoDetection", "DataError", "collate", "decode_rgb", "load_coco",
    "normalize", "resize_scale", "to_coco_results", *_SYNTHETIC_NAMES,
]


def __getattr__(name: str) -> Any:
    # retina.data.synthetic is imported on first use, not here, so that
    # `python -m retina.data.synthetic` does not find it imported already (runpy warns then).
    if name in _SYNTHETIC_NAMES:
        from retina.data import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
