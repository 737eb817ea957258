"""``python -m retina.train``: train and evaluate one RetinaNet (``retina.train.fit`` from Python).

    python -m retina.train [CONFIG.yaml] [key=value ...] [--profile cpu|gpu|paper] [--resume checkpoint.pt]

trains, evaluates on the validation split with pycocotools, and writes the resolved config, the
metrics JSON and the final checkpoint to ``output_dir`` (default ``runs/<timestamp>``), printing a
progress line (iteration, loss, lr, images/s, ETA; AP at each ``eval.every``). The loop itself is
:func:`retina.engine.trainer.fit`.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from . import config as config_lib
from .engine.trainer import MetricsCallback, fit

__all__ = ["fit", "main", "progress_printer"]


def _format_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress_printer(total: int, stream=sys.stderr) -> MetricsCallback:
    def show(m: Dict[str, float]) -> None:
        if "iteration" in m and "AP" in m:  # an evaluation during training (eval.every)
            print(f"it {int(m['iteration']):>6}/{total} | eval: AP {m['AP']:.2f} AP50 {m['AP50']:.2f} "
                  f"AP75 {m['AP75']:.2f} ({m['eval_s']:.1f} s)", file=stream, flush=True)
        elif "iteration" in m and "loss" in m:
            print(f"it {int(m['iteration']):>6}/{total} | loss {m['loss']:.4f} (cls {m['loss_cls']:.4f} "
                  f"box {m['loss_box']:.4f}) | lr {m['lr']:.5f} | {m['images_per_s']:.1f} img/s | "
                  f"ETA {_format_eta(m['eta_s'])}", file=stream, flush=True)
    return show


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retina.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", help="a YAML config (merged over the profile)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides (OmegaConf dotlist)")
    parser.add_argument("--profile", default=config_lib.DEFAULT_PROFILE, help="cpu (default), gpu or paper")
    parser.add_argument("--resume", help="a checkpoint.pt to continue from")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    files, overrides = [], list(args.overrides)
    if args.config:
        if "=" in args.config and not args.config.endswith((".yaml", ".yml")):
            overrides.insert(0, args.config)
        else:
            files.append(args.config)
    try:
        cfg = config_lib.load_config(args.profile, files, overrides, check_paths=True)
        out = Path(cfg.output_dir or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
        if args.resume:  # a checkpoint that cannot be resumed from: one line, nothing written
            from .engine.checkpoint import read_checkpoint

            read_checkpoint(args.resume)
        else:  # the backbone's weights: had now (downloaded, read, or pre-trained), or one line
            from .modeling.backbone_weights import resolve

            resolve(str(cfg.model.backbone_weights), int(cfg.model.depth), pretrain=cfg.pretrain)
        from .data import DataError
        from .data.loaders import build_datasets

        try:
            build_datasets(cfg, verify_files=True)  # bad data fails here, before anything is created
        except DataError as e:
            raise config_lib.ConfigError(str(e)) from None
    except config_lib.ConfigError as e:  # WeightsError included
        print(f"error: {e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(config_lib.to_yaml(cfg))
    print(f"training {cfg.train.iterations} iterations x {cfg.train.batch_size} images "
          f"(ResNet-{cfg.model.depth}-FPN-{cfg.model.fpn_channels}, {cfg.data.min_size} px, "
          f"loss {cfg.loss.kind} alpha {cfg.loss.alpha} gamma {cfg.loss.gamma}) -> {out}", file=sys.stderr)
    metrics = fit(cfg, on_metrics=progress_printer(cfg.train.iterations), checkpoint_dir=str(out),
                  resume_from=args.resume)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    print(metrics.get("eval_summary", ""), file=sys.stderr)
    print(json.dumps({k: metrics[k] for k in ("status", "iterations", "AP", "AP50", "AP75", "inference_ms")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
