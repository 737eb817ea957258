"""A trial's key: the first 12 hex digits of sha256 over the canonical JSON of its resolved config,
minus the keys that cannot change its results. Running a sweep again finds each trial by it."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, Mapping, Tuple

from omegaconf import DictConfig, OmegaConf

from retina import config as config_lib

KEY_LENGTH = 12  # hex digits of sha256: 48 bits, collisions negligible for any number of trials here

# Config keys that change how a run is logged, stored, parallelized, compiled or evaluated, never what
# it trains (train.compile: the same network, kernels fused; equal up to float rounding). A key ending
# in "." excludes every key under it.
KEY_EXCLUDED: Tuple[str, ...] = (
    "eval.",  # every evaluation setting (a prefix): `orchestrator evaluate` re-scores a checkpoint instead
    "data.max_val_images",
    "output_dir",
    "train.log_every",
    "train.checkpoint_every",
    "train.num_threads",
    "train.compile",
    "train.cudnn_benchmark",
    "train.cuda_memory_fraction",
    "data.num_workers",
    "data.prefetch_mb",
    "data.synthetic.cache_dir",
)

# Config keys added after stores held runs: left out of the key while they hold this value (their
# default, how every earlier run ran), so those runs keep their keys and are found and resumed.
KEY_OMITTED_AT: Dict[str, Any] = {
    "train.amp_cpu": False,
    "train.amp_dtype": "bfloat16",
}


def trial_key(cfg: DictConfig | Mapping[str, Any]) -> str:
    """First 12 hex digits of sha256 over the canonical JSON of the resolved config, without
    :data:`KEY_EXCLUDED` and the keys of :data:`KEY_OMITTED_AT` at their value there. The typed schema
    normalizes values first (``gamma: 0`` is 0.0)."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    flat = {k: v for k, v in config_lib.flatten_dict(container).items()
            if not key_excluded(k) and not (k in KEY_OMITTED_AT and v == KEY_OMITTED_AT[k])}
    if flat.get("model.backbone_weights") != "synthetic":  # the pretrain settings make no difference then
        flat = {k: v for k, v in flat.items() if not k.startswith("pretrain.")}
    canonical = json.dumps(flat, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:KEY_LENGTH]


def key_excluded(key: str) -> bool:
    """Whether config key ``key`` is left out of trial keys (:data:`KEY_EXCLUDED`)."""
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in KEY_EXCLUDED)
