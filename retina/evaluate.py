"""``python -m retina.evaluate CHECKPOINT [key=value ...]``: score a checkpoint on its validation split.

    python -m retina.evaluate runs/x/checkpoint.pt                      # as the run itself evaluated
    python -m retina.evaluate runs/x/checkpoint.pt eval.score_thresh=0.01 data.max_val_images=50

The config is the one stored in the checkpoint; only what does not change the model may be overridden
(:data:`EVAL_OVERRIDABLE`: the ``eval.*`` settings, which validation images, the device and threads).
The training split is never loaded. Prints the COCO summary and a JSON line, and writes the same
metrics as training (AP, AP50, AP75, APs, APm, APl, inference_ms, eval_summary, num_val_images,
num_detections, with the checkpoint's iteration) to ``--out`` (default: ``eval_metrics.json`` beside
the checkpoint). Bad input: one line on stderr, exit code 2, nothing written.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from . import config as config_lib

# Keys an evaluation may change: they decide how the model is scored, never what it is.
EVAL_OVERRIDABLE = ("eval.", "data.max_val_images", "data.num_workers", "train.device", "train.num_threads")


def check_eval_overrides(overrides: Sequence[str]) -> None:
    """Every override is ``key=value`` with a key an evaluation may change (:data:`EVAL_OVERRIDABLE`), and
    a known one; else a one-line ConfigError."""
    parsed = config_lib.parse_dotlist(list(overrides))
    config_lib.merge_into(config_lib.schema(), parsed, "command line")  # unknown keys, wrong types
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if not any(key == k or (k.endswith(".") and key.startswith(k)) for k in EVAL_OVERRIDABLE):
            raise config_lib.ConfigError(
                f"command line: {key} cannot change when a checkpoint is evaluated (the model is trained already); "
                f"expected eval.* , data.max_val_images, data.num_workers, train.device or train.num_threads")


def checkpoint_config(state: dict, overrides: Sequence[str] = ()):
    """The validated config stored in a checkpoint, with evaluation ``overrides`` (key=value) applied;
    any other key is a one-line ConfigError."""
    overrides = list(overrides)
    check_eval_overrides(overrides)
    cfg = config_lib.from_container(state["config"])
    if overrides:
        cfg = config_lib.merge_into(cfg, config_lib.parse_dotlist(overrides), "command line")
        config_lib.validate(cfg, where="command line")
    return cfg


def evaluate_checkpoint(path: str | Path, overrides: Sequence[str] = ()) -> Dict[str, object]:
    """Score the model in checkpoint ``path`` on its config's validation split (with ``overrides``)."""
    import torch

    from .data import DataError
    from .data.loaders import build_val_dataset
    from .engine.checkpoint import read_checkpoint
    from .engine.trainer import resolve_device
    from .evaluation.evaluator import evaluate_model
    from .build import build_model

    path = Path(path)
    state = read_checkpoint(path)
    cfg = checkpoint_config(state, overrides)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    try:
        val_set = build_val_dataset(cfg)
    except DataError as e:
        raise config_lib.ConfigError(str(e)) from None
    if val_set.num_classes != int(state["num_classes"]):
        raise config_lib.ConfigError(f"{path}: the model has {state['num_classes']} classes but the validation split "
                                     f"({val_set.annotations}) has {val_set.num_classes}")
    device = resolve_device(cfg.train.device)
    model = build_model(cfg, int(state["num_classes"])).to(device)  # the checkpoint holds the weights
    model.load_state_dict(state["model"])
    metrics = evaluate_model(model, val_set, cfg, device)
    metrics.update({"iterations": int(state.get("iteration", 0)), "checkpoint": str(path),
                    "eval_overrides": " ".join(overrides)})
    return metrics


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retina.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint.pt written by training")
    parser.add_argument("overrides", nargs="*", help="evaluation overrides, e.g. eval.score_thresh=0.01")
    parser.add_argument("--out", help="where to write the metrics JSON (default: eval_metrics.json beside the "
                                      "checkpoint)")
    args = parser.parse_args(argv)
    try:
        metrics = evaluate_checkpoint(args.checkpoint, args.overrides)
    except config_lib.ConfigError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.checkpoint).with_name("eval_metrics.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2, default=str))
    print(metrics["eval_summary"], file=sys.stderr)
    print(json.dumps({k: metrics[k] for k in ("iterations", "AP", "AP50", "AP75", "inference_ms", "num_val_images")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
