"""Checkpoints: model, optimizer, loss-normalizer and RNG state, and the resolved config, in one file
loadable with ``torch.load(..., weights_only=True)``; written atomically."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Optional

import torch
from omegaconf import DictConfig, OmegaConf

CHECKPOINT_NAME = "checkpoint.pt"


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, model, optimizer, loss_fn, iteration: int, cfg: DictConfig,
                    extra: Optional[dict] = None) -> None:
    """Atomically write a checkpoint loadable with ``torch.load(..., weights_only=True)``."""
    state = {
        "iteration": iteration,  # iterations completed
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "loss": loss_fn.state_dict(),
        "rng": rng_state(),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "num_classes": model.num_classes,
        "extra": extra or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)


def read_checkpoint(path) -> dict:
    """A checkpoint of retina.train, or a one-line ConfigError naming the file and what is wrong (not
    found, not a torch file, truncated, not a training checkpoint)."""
    from pathlib import Path

    from ..config import ConfigError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: checkpoint not found; expected a checkpoint.pt written by training")
    try:
        state = load_checkpoint(path)
    except Exception as e:  # noqa: BLE001 - not a torch file, truncated, pickled code
        raise ConfigError(f"{path}: cannot be read as a checkpoint ({' '.join(str(e).split())[:120]})") from None
    if not isinstance(state, dict) or not {"model", "config", "num_classes"} <= set(state):
        raise ConfigError(f"{path}: not a checkpoint of retina.train (no model, config or num_classes)")
    return state
