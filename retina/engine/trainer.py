"""The training loop: ``fit(config, on_metrics=...) -> metrics`` (its CLI is ``python -m retina.train``).

It trains, evaluates on the validation split with pycocotools (also every ``eval.every`` iterations)
and returns the metrics. It never imports Ray or MLflow: the orchestrator drives it through the
``on_metrics`` / ``on_checkpoint`` callbacks.

Reproducibility: the data order and the flips are a pure function of (seed, position in the
stream), the learning rate a pure function of the iteration, and a checkpoint holds model,
optimizer, loss-normalizer and RNG state; so a run resumed from iteration i continues exactly as the
uninterrupted run would have.

Data-parallel: called in every process of an initialized ``torch.distributed`` process group, ``fit``
trains one model on ``train.batch_size`` images per iteration split across the processes, with the
gradient of one process on the whole batch (BatchNorm caveat on CPUs: see :mod:`retina.distributed`).
Checkpoints (interchangeable with single-process ones) are written and the model is evaluated by
rank 0 only.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from omegaconf import DictConfig

from .. import config as config_lib
from ..data.loaders import build_datasets, make_loader
from ..data.samplers import StreamBatchSampler, aspect_ratio_groups
from ..evaluation.evaluator import evaluate_model
from ..modeling.losses import from_config as loss_from_config
from ..build import build_model, resolve_backbone
from ..modeling.retinanet import RetinaNet
from . import distributed
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint, set_rng_state
from .schedule import learning_rate
from .step import apply_gradients, grad_scaler, losses as batch_losses, precision, set_learning_rate, uses_channels_last

log = logging.getLogger("retina.train")

MetricsCallback = Callable[[Dict[str, float]], None]
CheckpointCallback = Callable[[str, int], None]
EVAL_CURVE_KEYS = ("AP", "AP50", "AP75")  # what an evaluation during training (eval.every) reports


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise config_lib.ConfigError("train.device='cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def describe_backbone_init(cfg: DictConfig, source) -> Dict[str, str]:
    """What a run's backbone started from, for its record: ``backbone_init`` (one line: the weights and
    how they are trained) and ``backbone_weights_sha256`` ("" from scratch). ``source``: the
    ResolvedWeights the model was built from, or None."""
    m = cfg.model
    how = f"{m.backbone_norm}, freeze_at {m.freeze_at}"
    if source is None:
        return {"backbone_init": f"random (from scratch), {how}", "backbone_weights_sha256": ""}
    return {"backbone_init": f"{source.describe()}, {how}", "backbone_weights_sha256": source.sha256}


# ----------------------------------------------------------------------------------------------
# fit


@dataclass
class _Window:
    """Running sums between two on_metrics calls; the losses and counts as device tensors (0 until the
    first step), read once at the log step."""
    loss_cls: object = 0.0
    loss_box: object = 0.0
    num_fg: object = 0.0
    steps: int = 0
    images: int = 0
    data_wait: float = 0.0
    start: float = 0.0


def fit(cfg: DictConfig, on_metrics: Optional[MetricsCallback] = None,
        on_checkpoint: Optional[CheckpointCallback] = None, checkpoint_dir: Optional[str] = None,
        resume_from: Optional[str] = None) -> Dict[str, object]:
    """Train and evaluate one RetinaNet.

    Args:
        cfg: a validated RetinaConfig (see :func:`retina.config.load_config`).
        on_metrics: called every ``train.log_every`` iterations with {iteration, loss_cls, loss_box,
            loss, lr, images_per_s, num_foreground, data_wait_share, elapsed_s, eta_s}; every
            ``eval.every`` iterations (if > 0) with {iteration, AP, AP50, AP75, eval_s} (no "loss");
            and once at the end with the final metrics (no "iteration").
        on_checkpoint: called with (path, iteration) after each checkpoint is written.
        checkpoint_dir: where to write ``checkpoint.pt`` every ``train.checkpoint_every`` iterations
            and at the end; None: no checkpoints.
        resume_from: a checkpoint to continue from (its iteration, weights, optimizer, RNG).
    Returns:
        metrics: status ("finished" or "diverged"), iterations, diverged_at, AP, AP50, AP75, APs,
        APm, APl (percent), inference_ms, train_time_s, train_images_per_s, eval_summary,
        eval_history (the AP curve: [{iteration, AP, AP50, AP75}], the final evaluation last), ...

    In a torch.distributed process group of N processes (:mod:`retina.distributed`), every process
    calls ``fit`` with the same arguments and takes its share of each batch. The callbacks are called
    in every process, equally often, with the same metrics (those of the whole batch: losses,
    foreground count and images summed over processes), so a caller whose reporting is collective
    (Ray Train's ``report``) can report from each; ``on_checkpoint`` is called in every process once
    rank 0 has written ``checkpoint_dir/checkpoint.pt`` (the other processes write nothing). Rank 0
    evaluates; the other processes return the training part of the result (no AP) without waiting.
    """
    t = cfg.train
    ctx = distributed.context()
    device = resolve_device(t.device)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())  # this process's GPU (set by its launcher)
    if ctx.enabled and t.batch_size < ctx.world_size:
        raise config_lib.ConfigError(f"train.batch_size={t.batch_size} is smaller than the {ctx.world_size} "
                                     "data-parallel processes; expected at least one image per process")
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    if device.type == "cuda":
        if t.cuda_memory_fraction:  # a trial sharing its GPU keeps to its share
            torch.cuda.set_per_process_memory_fraction(float(t.cuda_memory_fraction), device)
    random.seed(t.seed)
    torch.manual_seed(t.seed)

    train_set, val_set = build_datasets(cfg)
    state = load_checkpoint(resume_from, map_location=device) if resume_from else None
    # resumed: the checkpoint holds every weight, and says which backbone weights the run started from
    backbone = resolve_backbone(cfg) if state is None else None  # explicit: may pre-train; a checkpoint holds them
    net: RetinaNet = build_model(cfg, train_set.num_classes, backbone).to(device)
    backbone_init = ((state.get("extra") or {}).get("backbone_init") if state is not None else None) \
        or describe_backbone_init(cfg, net.backbone_source)
    if uses_channels_last(cfg, device):
        net = net.to(memory_format=torch.channels_last)
    if t.compile:
        net.compile_dense(t.compile)
    loss_fn = loss_from_config(cfg.loss)

    start_iteration = 0
    if state is not None:
        net.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        start_iteration = int(state["iteration"])
    # DDP (and SyncBatchNorm on CUDA) when distributed; `net` is the model itself, whose state_dict
    # the checkpoints hold, `model` what the batches go through.
    model = distributed.wrap_model(net, device, ctx, sync_batch_norm=cfg.model.backbone_norm == "sync_bn")
    net = distributed.unwrap(model)
    trainable = [p for p in net.parameters() if p.requires_grad]  # model.freeze_at: frozen stages are not
    optimizer = torch.optim.SGD(trainable, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state({k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in state["rng"].items()})
        log.info("resumed from %s at iteration %d", resume_from, start_iteration)
    if ctx.enabled:
        loss_fn.count_over_processes = distributed.sum_tensor_over_processes

    groups = aspect_ratio_groups(train_set.heights, train_set.widths) if cfg.data.aspect_ratio_grouping else None
    sampler = StreamBatchSampler(len(train_set), t.batch_size, t.iterations, t.seed, cfg.data.flip_prob,
                                 start_iteration, groups=groups)
    if ctx.enabled:
        sampler = distributed.ShardedBatchSampler(sampler, ctx.rank, ctx.world_size)
    loader = make_loader(train_set, sampler, cfg, device, t.batch_size)
    scaler = grad_scaler(cfg, device)  # fp16 only
    if device.type == "cuda":
        # cuDNN's autotuner pays where every batch has one shape: images of one size, no resizing
        fixed = len({(int(h), int(w)) for h, w in zip(train_set.heights, train_set.widths)}) == 1 and \
            cfg.data.min_size == cfg.data.max_size == int(train_set.heights[0]) == int(train_set.widths[0])
        torch.backends.cudnn.benchmark = bool(t.cudnn_benchmark and fixed)
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None

    def checkpoint(iteration: int) -> None:
        if ckpt_path is None:
            return
        if ctx.is_main:
            save_checkpoint(ckpt_path, net, optimizer, loss_fn, iteration, cfg, extra={"backbone_init": backbone_init})
        if on_checkpoint:
            on_checkpoint(str(ckpt_path), iteration)

    eval_history: List[Dict[str, float]] = []  # the AP curve: one point per eval.every iterations, then the final

    def evaluate_during_training(iteration: int) -> Dict[str, float]:
        """{iteration, AP, AP50, AP75, eval_s}: rank 0 evaluates, and (data-parallel) every process
        gets its figures, so the callbacks are called equally often in every process."""
        start = time.perf_counter()
        figures = [float("nan")] * len(EVAL_CURVE_KEYS)
        if ctx.is_main:
            scores = evaluate_model(net, val_set, cfg, device)
            figures = [float(scores[k]) for k in EVAL_CURVE_KEYS]
        if ctx.enabled:
            figures = distributed.sum_over_processes([f if ctx.is_main else 0.0 for f in figures], device)
        return {"iteration": iteration, **dict(zip(EVAL_CURVE_KEYS, figures)), "eval_s": time.perf_counter() - start}

    # the first iteration whose loss was not finite (-1: none yet): kept on the device and read only
    # at log, checkpoint and evaluation steps, so divergence is found at most train.log_every late
    first_bad = torch.full((), -1, dtype=torch.int64, device=device)

    def diverged_since() -> Optional[int]:
        """The iteration (1-based) of the first non-finite loss so far, or None (a host read)."""
        bad = distributed.max_tensor_over_processes(first_bad) if ctx.enabled else first_bad
        value = int(bad)
        return value if value >= 0 else None

    model.train()
    status, diverged_at = "finished", None
    window = _Window(start=time.perf_counter())
    train_start = time.perf_counter()
    images_seen = 0
    eval_time = 0.0  # seconds spent in evaluations during training (eval.every)
    iteration = start_iteration
    wait_start = time.perf_counter()
    for batch in loader:
        window.data_wait += time.perf_counter() - wait_start
        lr = learning_rate(t, iteration)
        set_learning_rate(optimizer, lr)
        if ctx.enabled:
            batch = distributed.pad_like_global_batch(batch, device)
        losses = batch_losses(model, loss_fn, batch, cfg, device)
        loss = losses.total
        # no host read here: the finiteness check and the window's sums stay on the device
        loss_cls, loss_box = losses.loss_cls.detach(), losses.loss_box.detach()
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss_cls + loss_box),
                                torch.full_like(first_bad, iteration + 1), first_bad)
        # DDP averages the processes' gradients; each process's loss is its part of the batch's sum
        # (divided by the global count), so x N makes the average their sum: the whole batch's gradient
        apply_gradients(loss * ctx.world_size if ctx.enabled else loss, optimizer, trainable, t.grad_clip_norm, scaler)
        iteration += 1
        batch_images = t.batch_size if ctx.enabled else int(batch["images"].shape[0])  # the whole batch's
        images_seen += batch_images
        window.loss_cls = window.loss_cls + loss_cls
        window.loss_box = window.loss_box + loss_box
        window.num_fg = window.num_fg + losses.num_foreground  # the whole batch's already
        window.steps += 1
        window.images += batch_images

        log_step = iteration % t.log_every == 0 or iteration == t.iterations
        checkpoint_step = bool(t.checkpoint_every) and iteration % t.checkpoint_every == 0 and iteration < t.iterations
        eval_step = bool(cfg.eval.every) and iteration % cfg.eval.every == 0 and iteration < t.iterations
        if log_step or checkpoint_step or eval_step:
            bad_at = diverged_since()
            if bad_at is not None:  # nothing after it is worth logging, saving or evaluating
                status, diverged_at, iteration = "diverged", bad_at, bad_at - 1
                log.warning("non-finite loss at iteration %d: stopping", diverged_at)
                break
        if log_step:
            now = time.perf_counter()
            dt = max(now - window.start, 1e-9)
            rate = window.images / dt
            sums = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).reshape(())
                                for v in (window.loss_cls, window.loss_box, window.num_fg)])
            if ctx.enabled:  # each process's losses are its part of the batch's: their sums are the batch's
                sums = torch.cat([distributed.sum_tensor_over_processes(sums[:2]), sums[2:]])
            w_cls, w_box, w_fg = sums.tolist()  # the one host read of a log step
            metrics = {
                "iteration": iteration,
                "loss_cls": w_cls / window.steps,
                "loss_box": w_box / window.steps,
                "loss": (w_cls + w_box) / window.steps,
                "lr": lr,
                "images_per_s": rate,
                "num_foreground": w_fg / window.steps,
                "data_wait_share": window.data_wait / dt,
                "elapsed_s": now - train_start,
                "eta_s": (t.iterations - iteration) * t.batch_size / max(rate, 1e-9),
            }
            if on_metrics:
                on_metrics(metrics)
            window = _Window(start=time.perf_counter())
        if checkpoint_step:
            checkpoint(iteration)
        if eval_step:
            point = evaluate_during_training(iteration)
            eval_history.append(point)
            eval_time += point["eval_s"]
            window.start += point["eval_s"]  # the next images_per_s counts training only
            if on_metrics:
                on_metrics(point)
        wait_start = time.perf_counter()

    train_time = time.perf_counter() - train_start - eval_time  # evaluations during training excluded
    result: Dict[str, object] = {
        "status": status,
        "iterations": iteration,
        "diverged_at": diverged_at,
        "train_time_s": train_time,
        "train_images_per_s": images_seen / max(train_time, 1e-9),
        "eval_during_training_s": eval_time,
        "num_classes": train_set.num_classes,
        "num_train_images": len(train_set),
        "device": str(device),
        "precision": precision(cfg, device),
        **backbone_init,
    }
    if ctx.enabled:
        result.update({"world_size": ctx.world_size, "rank": ctx.rank})
    if status == "diverged":
        # A diverged model has no meaningful detections: AP 0 by definition, recorded, not raised.
        result.update({k: 0.0 for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")})
        result.update({"inference_ms": float("nan"), "eval_summary": f"diverged at iteration {diverged_at}",
                       "num_val_images": 0})
    else:
        checkpoint(iteration)
        if ctx.is_main:
            result.update(evaluate_model(net, val_set, cfg, device))
            eval_history.append({"iteration": iteration, **{k: float(result[k]) for k in EVAL_CURVE_KEYS}})
    result["eval_history"] = eval_history
    if on_metrics:
        on_metrics({k: v for k, v in result.items() if isinstance(v, (int, float)) and v is not None})
    return result
