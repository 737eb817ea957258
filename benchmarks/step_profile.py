"""Where a CPU training step's time goes, and how far the network is from this thread's limit: one JSON object.

    python benchmarks/step_profile.py [--profile cpu] [--steps N] [--warmup N] [--eval-images N]
                                      [--threads N] [key=value ...]

On the profile's own data, model and settings (``key=value`` overrides them, e.g. ``train.amp_cpu=true``
for bf16 autocast), in one process on ``--threads`` threads (default: the profile's ``train.num_threads``):

- ``step_ms``: one whole training iteration as ``retina.train.fit`` runs it: the next batch from the
  trainer's loader, forward, anchor assignment, loss, backward, gradient clipping, SGD step (the trainer's
  one host sync per step included; no logging, checkpointing or evaluation);
- ``network_ms``: the network alone on the same batches, forward + backward, the backward started from
  fixed gradients on its outputs (no loss);
- ``outside_network_ms`` = step_ms - network_ms, and its parts, each timed alone on the same batches:
  ``data_wait_ms`` (the loader's next batch), ``matching_ms`` (padding the targets, anchor assignment),
  ``loss_ms`` (the losses' forward + backward to the network's outputs), ``optimizer_ms`` (zeroing the
  gradients, clipping, SGD step); ``outside_rest_ms`` is what these leave (Python, autograd's
  bookkeeping between the two halves, the host sync);
- ``eval_ms_per_image``: ``retina.evaluation.evaluate_model`` over ``--eval-images`` validation images
  (prediction, post-processing and pycocotools), per image;
- ``network_gflop_per_step`` (torch.utils.flop_counter: matrix products and convolutions, forward +
  backward) and ``network_gflop_per_s`` achieved;
- ``matmul_peak_gflop_per_s``: this thread's measured fp32 and bf16 matrix products (2048^2, best of
  several), and the network's achieved rate as a fraction of the fp32 one and of the bf16 one;
- the CPU's model and whether it has native bf16 (``amx_bf16``, ``avx512_bf16`` in /proc/cpuinfo).

Every time is the median over ``--steps`` measured steps after ``--warmup`` untimed ones. The backbone's
weights do not change the time: the network is built with random weights (the profile's frozen stages
stay frozen), so nothing is pre-trained or read. This is a script, not a test; nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

from retina import config as config_lib
from retina.build import build_model
from retina.data.loaders import build_datasets, make_loader
from retina.data.samplers import StreamBatchSampler
from retina.engine.schedule import learning_rate
from retina.engine.step import apply_gradients, assign, forward, losses as batch_losses, precision, set_learning_rate
from retina.evaluation.evaluator import evaluate_model
from retina.modeling.losses import from_config as loss_from_config


def cpu_facts() -> Dict[str, object]:
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        info = ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.processor())
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    return {"cpu_model": model, "amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags,
            "avx512f": "avx512f" in flags}


def matmul_gflop_per_s(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def median_ms(times: List[float]) -> float:
    return round(statistics.median(times) * 1000, 3)


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(args) -> Dict[str, object]:
    overrides = list(args.overrides)
    cfg = config_lib.load_config(args.profile, overrides=overrides + ["train.device=cpu"])
    threads = args.threads or int(cfg.train.num_threads) or torch.get_num_threads()
    torch.set_num_threads(threads)
    device = torch.device("cpu")
    torch.manual_seed(cfg.train.seed)
    train_set, val_set = build_datasets(cfg)
    model = build_model(cfg, train_set.num_classes, None).to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    t = cfg.train
    optimizer = torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    loss_fn = loss_from_config(cfg.loss)
    total = args.warmup + args.steps
    sampler = StreamBatchSampler(len(train_set), t.batch_size, total, t.seed, cfg.data.flip_prob)

    # 1. the whole step, with the loader's wait, as the trainer runs it
    step_times: List[float] = []
    wait_times: List[float] = []
    batches: List[dict] = []
    loader = iter(make_loader(train_set, sampler, cfg, device, t.batch_size))
    for i in range(total):
        start = time.perf_counter()
        batch = next(loader)
        got = time.perf_counter()
        set_learning_rate(optimizer, learning_rate(t, i))
        out = batch_losses(model, loss_fn, batch, cfg, device)
        float(out.total.detach())  # the trainer's finiteness check
        apply_gradients(out.total, optimizer, params, t.grad_clip_norm)
        end = time.perf_counter()
        if i >= args.warmup:
            step_times.append(end - start)
            wait_times.append(got - start)
            batches.append(batch)

    # 2. the parts, each alone, on the same batches (the weights keep training; the time does not care)
    network_times: List[float] = []
    matching_times: List[float] = []
    loss_times: List[float] = []
    optimizer_times: List[float] = []
    for batch in batches:
        def network() -> Dict[str, object]:
            result = forward(model, batch, cfg, device)
            grads = [torch.full_like(result[k], 1e-3) for k in ("cls_logits", "box_deltas")]
            torch.autograd.backward([result["cls_logits"], result["box_deltas"]], grads)
            return result

        optimizer.zero_grad(set_to_none=True)
        start = time.perf_counter()
        result = network()
        network_times.append(time.perf_counter() - start)
        detached = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in result.items()}
        labels = [None]

        def matching() -> None:
            with torch.no_grad():
                labels[0] = assign(detached, batch, cfg, device)

        matching_times.append(timed(matching))
        cls = detached["cls_logits"].float().requires_grad_(True)
        box = detached["box_deltas"].float().requires_grad_(True)

        def loss() -> None:
            lab, gt_boxes, gt_labels = labels[0]
            loss_fn(cls, box, detached["anchors"], lab, gt_boxes, gt_labels).total.backward()

        loss_times.append(timed(loss))

        def optimize() -> None:
            optimizer.zero_grad(set_to_none=False)
            if t.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, t.grad_clip_norm)
            optimizer.step()

        optimizer_times.append(timed(optimize))
    optimizer.zero_grad(set_to_none=True)

    flops = FlopCounterMode(display=False)
    with flops:
        result = forward(model, batches[0], cfg, device)
        torch.autograd.backward([result["cls_logits"], result["box_deltas"]],
                                [torch.ones_like(result["cls_logits"]), torch.ones_like(result["box_deltas"])])
    optimizer.zero_grad(set_to_none=True)
    gflop = flops.get_total_flops() / 1e9

    # 3. evaluation, per image, on the first --eval-images validation images
    eval_cfg = config_lib.load_config(args.profile, overrides=overrides + [
        "train.device=cpu", f"data.max_val_images={args.eval_images}"])
    eval_images = min(args.eval_images, len(val_set))
    eval_s = timed(lambda: evaluate_model(model, val_set, eval_cfg, device))

    step_ms = median_ms(step_times)
    network_ms = median_ms(network_times)
    parts = {"data_wait_ms": median_ms(wait_times), "matching_ms": median_ms(matching_times),
             "loss_ms": median_ms(loss_times), "optimizer_ms": median_ms(optimizer_times)}
    outside = round(step_ms - network_ms, 3)
    fp32_peak = matmul_gflop_per_s(torch.float32)
    bf16_peak = matmul_gflop_per_s(torch.bfloat16)
    achieved = gflop / (network_ms / 1000) if network_ms > 0 else None
    return {
        "benchmark": "step_profile", "profile": args.profile, "overrides": list(args.overrides),
        "threads": threads, "precision": precision(cfg, device), "batch_size": int(t.batch_size),
        "image_size": int(cfg.data.max_size), "steps_timed": len(step_times), "warmup_steps": args.warmup,
        "step_ms": step_ms, "network_ms": network_ms, "outside_network_ms": outside,
        "outside_network_fraction": round(outside / step_ms, 3) if step_ms else None,
        "outside_network_parts": {**parts, "outside_rest_ms": round(outside - sum(parts.values()), 3)},
        "eval_ms_per_image": round(eval_s * 1000 / max(1, eval_images), 3), "eval_images": eval_images,
        "network_gflop_per_step": round(gflop, 3),
        "network_gflop_per_s": round(achieved, 1) if achieved else None,
        "matmul_peak_gflop_per_s": {"fp32": round(fp32_peak, 1), "bf16": round(bf16_peak, 1)},
        "network_fraction_of_peak": {"fp32": round(achieved / fp32_peak, 3) if achieved else None,
                                     "bf16": round(achieved / bf16_peak, 3) if achieved else None},
        **cpu_facts(), "torch": torch.__version__,
    }


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--eval-images", type=int, default=100)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: the profile's train.num_threads)")
    p.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.eval_images < 1:
        p.error("--steps and --eval-images must be >= 1, --warmup >= 0")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        print(json.dumps(run(args)))
    except config_lib.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
