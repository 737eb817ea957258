"""Throughput benchmark: our trainer's step vs torchvision's RetinaNet, same settings, one JSON line.

    python benchmarks/bench.py [--device cpu|cuda] [--profile cpu|gpu|paper] [--iterations N] [--warmup N]
                           [--rounds N] [--compile MODE] [--top-ops N] [--profile-steps N] [key=value ...]

In one process: (1) our training step exactly as ``retina.train.fit`` runs it (forward, pad_targets,
match_anchors, RetinaLoss, backward, [grad clip], SGD step; bf16 autocast and channels_last on CUDA
and model.fast_cpu_convs on CPU when the profile says so) on batches from the profile's loader; (2)
torchvision's ``RetinaNet`` (ResNet-FPN via ``_resnet_fpn_extractor``, weights=None) on the same
batches (same sampler, so the same images, flips and order), converted to its input format, once in
the contiguous (NCHW) and once in the channels_last memory format: the ratio is against the faster
of the two, whichever ours uses; (3) inference of all of them (ours: forward + ``postprocess``;
torchvision: eval forward) on the same validation batches. The timed steps are split into
``--rounds`` blocks that run by turns (ours, torchvision, torchvision channels_last, ours, ...), so
that a machine shared with other work slows all of them alike. With ``--compile MODE`` (the default
on CUDA) ours runs a second time as ``ours_compiled`` (``train.compile=MODE``: the network through
``torch.compile``); the headline ratio is the faster of ours against the faster of torchvision, and a
compiler failure is reported under ``ours_configurations_failed`` instead of ending the run. After the
timing: the operators with the most self time per step (``--top-ops``, torch.profiler) of the fastest
of each, and the images/s that the training loader alone delivers (``data_loader_images_per_s``).

Both models get: the profile's ResNet depth, FPN width 256 and 4 head convs (torchvision's are fixed
at 256 / 4), the same 9 anchors per location (sizes and ratios), image size, batch size, precision,
optimizer, learning-rate schedule, gradient clipping, matcher thresholds and post-processing
thresholds. What cannot be made equal is listed under ``not_equal`` in the output. torchvision's
model is never compiled; ours is not on CPU by default (on the 2-core CPU inductor took minutes to
compile the training step and the compiled step was slower than the eager one). This is a script,
not a test; nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from functools import partial
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torchvision
from omegaconf import DictConfig
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from retina import config as config_lib
from retina.cpu import fast_cpu_convs_on, use_fast_cpu_convs
from retina.data import IMAGENET_MEAN, IMAGENET_STD
from retina.data.coco import unit_floats
from retina.data.loaders import build_datasets, make_loader, val_loader
from retina.data.samplers import StreamBatchSampler
from retina.engine.schedule import learning_rate
from retina.engine.step import (apply_gradients, forward, losses as batch_losses, precision, set_learning_rate,
                                uses_amp, uses_channels_last)
from retina.engine.trainer import resolve_device
from retina.modeling.backbone import RESNET_C_CHANNELS
from retina.modeling.losses import from_config as loss_from_config
from retina.build import build_model, resolve_backbone

H200_BF16_DENSE_TFLOPS = 989.0  # NVIDIA H200 SXM, bf16 tensor core, dense (no sparsity)

# Both models at torchvision's fixed widths: FPN 256, 4 convs per subnet.
FAIR_OVERRIDES = ["model.fpn_channels=256", "model.head_convs=4"]
# The CUDA setting: the paper's recipe (ResNet-50, batch 16, bf16, channels_last) on
# synthetic 600 px images, so that no COCO is needed.
CUDA_DEFAULT_OVERRIDES = [
    "data.source=synthetic", "data.synthetic.image_size=600", "data.min_size=600", "data.max_size=1000",
    "data.synthetic.num_train=512", "data.synthetic.num_val=64",
    "data.synthetic.min_object_size=32", "data.synthetic.max_object_size=400",
]

Batch = Dict[str, object]  # retina.data.collate's output


# ----------------------------------------------------------------------------------------------
# configuration


def bench_config(device: str, profile: Optional[str], overrides: List[str]) -> DictConfig:
    """The profile (default: cpu on CPU, paper at 600 px synthetic on CUDA) + fair widths + overrides."""
    base = []
    if profile is None:
        profile = "paper" if device == "cuda" else "cpu"
        if device == "cuda":
            base = list(CUDA_DEFAULT_OVERRIDES)
    cfg = config_lib.load_config(profile, overrides=base + FAIR_OVERRIDES + [f"train.device={device}"] + overrides)
    if cfg.model.fpn_channels != 256:
        raise config_lib.ConfigError("model.fpn_channels: torchvision's ResNet-FPN is fixed at 256; keep 256")
    return cfg


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------
# the two models


def build_ours(cfg: DictConfig, num_classes: int, device: torch.device) -> nn.Module:
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, num_classes, resolve_backbone(cfg)).to(device)
    if uses_channels_last(cfg, device):
        model = model.to(memory_format=torch.channels_last)
    return model


def torchvision_anchor_sizes(cfg: DictConfig) -> Tuple[Tuple[float, ...], ...]:
    """Our anchor sizes per level P3..P7: base_size * 2^(l-3) * 2^(k/n), k = 0..n-1."""
    a = cfg.anchors
    scales = [2.0 ** (k / a.scales_per_octave) for k in range(a.scales_per_octave)]
    return tuple(tuple(a.base_size * 2 ** level * s for s in scales) for level in range(5))


def build_torchvision(cfg: DictConfig, num_classes: int, device: torch.device,
                      channels_last: bool = False) -> nn.Module:
    """torchvision's RetinaNet at our settings: ResNet-{depth}-FPN-256 with P6 from C5 (as ours),
    4-conv heads ([GroupNorm] as ours), our anchors, matcher, transform sizes and eval thresholds;
    parameters in the channels_last memory format if ``channels_last`` (its convs then run in it)."""
    from torchvision.models.detection import RetinaNet as TorchvisionRetinaNet
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.retinanet import RetinaNetHead
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    torch.manual_seed(cfg.train.seed)
    depth = cfg.model.depth
    resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    c5 = RESNET_C_CHANNELS[depth][-1]
    # in_channels (c5) != 256 -> LastLevelP6P7 takes C5, as our FPN does (torchvision's v1 takes P5)
    backbone = _resnet_fpn_extractor(resnet, trainable_layers=5, returned_layers=[2, 3, 4],
                                     extra_blocks=LastLevelP6P7(c5, 256))
    ratios = tuple(float(r) for r in cfg.anchors.aspect_ratios)
    anchors = AnchorGenerator(torchvision_anchor_sizes(cfg), (ratios,) * 5)
    norm = partial(nn.GroupNorm, 32) if cfg.model.head_norm == "group" else None
    head = RetinaNetHead(256, anchors.num_anchors_per_location()[0], num_classes, norm_layer=norm)
    matcher = det_utils.Matcher(cfg.matcher.fg_iou, cfg.matcher.bg_iou,
                                allow_low_quality_matches=cfg.matcher.allow_low_quality_matches)
    e = cfg.eval
    model = TorchvisionRetinaNet(
        backbone, num_classes, min_size=cfg.data.min_size, max_size=cfg.data.max_size,
        image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD), anchor_generator=anchors, head=head,
        proposal_matcher=matcher, score_thresh=e.score_thresh, nms_thresh=e.nms_thresh, detections_per_img=e.max_detections,
        fg_iou_thresh=cfg.matcher.fg_iou, bg_iou_thresh=cfg.matcher.bg_iou, topk_candidates=e.topk_per_level)
    model.transform.size_divisible = cfg.data.size_divisibility
    model.head.regression_head._loss_type = "smooth_l1"  # beta 1/9 (ours: loss.smooth_l1_beta)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def make_optimizer(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    t = cfg.train
    return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


# ----------------------------------------------------------------------------------------------
# batches


def to_torchvision(batch: Batch) -> Tuple[List[torch.Tensor], List[Dict[str, torch.Tensor]]]:
    """Our collated batch -> torchvision's inputs: un-normalized, un-padded (3, h, w) images in [0, 1]
    and targets {boxes (G, 4) xyxy, labels (G,)}."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    x = batch["images"]
    if x.dtype == torch.uint8:  # images at their own size, as bytes (see retina.data.collate)
        images = [unit_floats(x[i, :, :h, :w]) for i, (h, w) in enumerate(batch["image_sizes"])]
    else:
        images = [x[i, :, :h, :w] * std + mean for i, (h, w) in enumerate(batch["image_sizes"])]
    targets = [{"boxes": b, "labels": l} for b, l in zip(batch["boxes"], batch["labels"])]
    return images, targets


def train_batches(cfg: DictConfig, train_set, num_steps: int, device: torch.device) -> torch.utils.data.DataLoader:
    """The trainer's loader over ``num_steps`` batches; the same batches each time it is built."""
    t = cfg.train
    sampler = StreamBatchSampler(len(train_set), t.batch_size, num_steps, t.seed, cfg.data.flip_prob)
    return make_loader(train_set, sampler, cfg, device, t.batch_size)


def inference_batches(cfg: DictConfig, val_set, num_batches: int, device: torch.device) -> List[Batch]:
    """The first ``num_batches`` validation batches (eval.batch_size images each), cycled, in memory."""
    loader, _ = val_loader(val_set, cfg, device)
    batches = list(loader)
    return [batches[i % len(batches)] for i in range(num_batches)]


# ----------------------------------------------------------------------------------------------
# training steps: (batch) -> None, one optimizer step each


def our_step(cfg: DictConfig, model: nn.Module, optimizer, loss_fn, device: torch.device) -> Callable:
    """The body of retina.train.fit's loop (its step functions), without the logging and checkpointing."""
    t = cfg.train
    iteration = [0]

    def step(batch: Batch) -> None:
        set_learning_rate(optimizer, learning_rate(t, iteration[0]))
        losses = batch_losses(model, loss_fn, batch, cfg, device)  # forward, assignment, loss
        float(losses.total.detach())  # the trainer's finiteness check: one host sync per step
        apply_gradients(losses.total, optimizer, [p for p in model.parameters() if p.requires_grad], t.grad_clip_norm)
        iteration[0] += 1

    return step


def torchvision_step(cfg: DictConfig, model: nn.Module, optimizer, device: torch.device) -> Callable:
    """The same step for torchvision's model: its forward computes the losses."""
    t = cfg.train
    iteration = [0]

    def step(batch: Batch) -> None:
        set_learning_rate(optimizer, learning_rate(t, iteration[0]))
        images, targets = to_torchvision(batch)
        images = [x.to(device, non_blocking=True) for x in images]  # N x (3, h, w)
        targets = [{k: v.to(device, non_blocking=True) for k, v in d.items()} for d in targets]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_amp(cfg, device)):
            losses = model(images, targets)  # {classification, bbox_regression}
        total = losses["classification"] + losses["bbox_regression"]
        float(total.detach())
        apply_gradients(total, optimizer, list(model.parameters()), t.grad_clip_norm)
        iteration[0] += 1

    return step


# ----------------------------------------------------------------------------------------------
# inference: (batch) -> detections


def our_inference(cfg: DictConfig, model: nn.Module, device: torch.device) -> Callable:
    """As retina.evaluation.predict.predict: forward + postprocess."""
    e = cfg.eval

    @torch.no_grad()
    def infer(batch: Batch):
        out = forward(model, batch, cfg, device)
        return model.postprocess(out, batch["image_sizes"], e.score_thresh, e.topk_per_level, e.nms_thresh,
                                 e.max_detections)

    return infer


def torchvision_inference(cfg: DictConfig, model: nn.Module, device: torch.device) -> Callable:
    @torch.no_grad()
    def infer(batch: Batch):
        images, _ = to_torchvision(batch)
        images = [x.to(device, non_blocking=True) for x in images]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_amp(cfg, device)):
            return model(images)

    return infer


# ----------------------------------------------------------------------------------------------
# measurement


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def held_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Parameters, gradients and optimizer state: what a model keeps on the device between steps."""
    tensors = list(model.parameters()) + [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def process_max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def count_flops(fn: Callable, *args) -> int:
    """FLOPs of ``fn(*args)`` as executed (matrix products and convolutions; elementwise work not counted)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn(*args)
    return counter.get_total_flops()


def assumed_peak_tflops(device: torch.device) -> Optional[float]:
    """CUDA: the H200's dense bf16 figure. CPU: threads x FMA units' fp32 FLOP per cycle (32 with AVX2
    and FMA, 64 with AVX-512) x the clock /proc/cpuinfo reports (no boost): an estimate."""
    if device.type == "cuda":
        return H200_BF16_DENSE_TFLOPS
    try:
        info = open("/proc/cpuinfo").read()
        mhz = float(info.split("cpu MHz")[1].split(":")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None
    per_cycle = 64 if " avx512f" in info else 32 if (" avx2" in info and " fma" in info) else 8
    return torch.get_num_threads() * per_cycle * mhz * 1e6 / 1e12


def top_ops(step: Callable, batches: List[Batch], device: torch.device, count: int,
            step_s: float) -> List[Dict[str, object]]:
    """Where a training step's time goes: ``torch.profiler`` over ``batches`` (one step each), the
    ``count`` operators and kernels with the most self time (device time on CUDA, CPU time on CPU),
    per step and as a share of the timed step (``step_s``). On CUDA an operator's self device time
    is that of the kernels it launched, so an operator and its kernel can both be listed."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    synchronize(device)
    with profile(activities=activities) as prof:
        for batch in batches:
            step(batch)
        synchronize(device)
    field = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, field), reverse=True)[:count]
    steps = max(len(batches), 1)
    return [{"name": e.key[:120], "self_ms_per_step": getattr(e, field) / 1000 / steps,
             "share_of_step": getattr(e, field) / 1e6 / steps / step_s, "calls_per_step": e.count / steps}
            for e in events]


def loader_images_per_s(loader) -> float:
    """Images/s that a training loader delivers with nothing else running (its workers started by
    the first batch, which is not counted): the most the data pipeline can feed a trainer."""
    batches = iter(loader)
    next(batches)
    start, images = time.perf_counter(), 0
    for batch in batches:
        images += len(batch["image_sizes"])
    return images / max(time.perf_counter() - start, 1e-9)


class Contender:
    """One model in one configuration: its training step over its own loader (the same batches as
    the others'), and its inference; timings accumulate over the rounds."""

    def __init__(self, name: str, model: nn.Module, optimizer, step: Callable, infer: Callable,
                 loader, device: torch.device):
        self.name, self.model, self.optimizer, self.step, self.infer = name, model, optimizer, step, infer
        self.batches = iter(loader)
        self.device = device
        self.train_s = self.data_wait_s = self.infer_s = 0.0
        self.train_images = self.infer_images = self.steps = 0
        self.peak_bytes = 0
        self.first_step_s: Optional[float] = None  # ours_compiled: its first step, compilation included

    def warm_up(self, steps: int) -> None:
        for _ in range(steps):
            self.step(next(self.batches))

    def train_block(self, steps: int) -> None:
        """``steps`` timed training steps; on CUDA the peak memory above what all models hold."""
        synchronize(self.device)
        if self.device.type == "cuda":
            base = torch.cuda.memory_allocated(self.device)
            reset_peak_memory(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            wait_start = time.perf_counter()
            batch = next(self.batches)
            self.data_wait_s += time.perf_counter() - wait_start
            self.step(batch)
            self.train_images += len(batch["image_sizes"])
            self.steps += 1
        synchronize(self.device)
        self.train_s += time.perf_counter() - start
        if self.device.type == "cuda":
            transient = torch.cuda.max_memory_allocated(self.device) - base
            self.peak_bytes = max(self.peak_bytes, transient + held_bytes(self.model, self.optimizer))

    def infer_block(self, batches: List[Batch]) -> None:
        self.model.eval()
        for batch in batches:
            synchronize(self.device)
            start = time.perf_counter()
            self.infer(batch)
            synchronize(self.device)
            self.infer_s += time.perf_counter() - start
            self.infer_images += len(batch["image_sizes"])
        self.model.train()

    def result(self) -> Dict[str, object]:
        return {
            "train_images_per_s": self.train_images / self.train_s,
            "first_step_s": self.first_step_s,
            "step_s": self.train_s / max(self.steps, 1),
            "data_wait_share": self.data_wait_s / self.train_s,
            "inference_ms_per_image": 1000.0 * self.infer_s / max(self.infer_images, 1),
            "peak_memory_mib": self.peak_bytes / 2 ** 20 if self.device.type == "cuda" else None,
            "timed_steps": self.steps,
        }


def split(total: int, parts: int) -> List[int]:
    """``total`` as ``parts`` near-equal positive blocks (fewer if total < parts)."""
    parts = max(1, min(parts, total))
    return [total // parts + (i < total % parts) for i in range(parts)]


# ----------------------------------------------------------------------------------------------
# the benchmark


def winograd_kind() -> str:
    from retina.cpu import kernels

    if kernels.load() is not None:
        return "F(4x4, 3x3) with C transforms (36 instead of 144 multiplies per 4x4 output tile)"
    return "F(2x2, 3x3) in PyTorch ops (16 instead of 36 multiplies per 2x2 output tile; no C compiler)"


def not_equal(cfg: DictConfig, device: torch.device) -> List[str]:
    """What differs between the two models' training steps however they are configured."""
    loss = cfg.loss
    notes = [
        "loss normalization: ours divides the batch's summed loss by its foreground-anchor count; torchvision "
        "divides each image's loss by that image's count and averages over images",
        "anchors: torchvision rounds anchor corners to integers and places them at cell corners (i * stride); "
        "ours keeps fractions and centres them ((i + 0.5) * stride)",
        "torchvision's transform normalizes, resizes (interpolates even at scale 1.0) and pads on the device "
        "inside the timed step; ours does that in the data loader (counted as data wait when it blocks)",
        "torchvision's loss computation loops over images in Python; ours is batched",
        "torchvision's post-processing loops over images in Python; ours is batched (one top-k per level, one "
        "batched_nms)",
        "iscrowd: torchvision has no crowd handling (synthetic data has no crowd boxes)",
        "torchvision's smooth L1 beta is fixed at 1/9; ours is loss.smooth_l1_beta="
        f"{loss.smooth_l1_beta}",
        "torchvision's head convs have no bias when followed by GroupNorm; ours have one (2,048 more "
        "parameters)" if cfg.model.head_norm == "group" else None,
    ]
    if device.type == "cpu" and cfg.model.fast_cpu_convs:
        notes.append(
            "convolution algorithms (model.fast_cpu_convs): ours computes the subnets' 3x3 convs and the FPN's "
            f"P3 output conv by Winograd {winograd_kind()} and the weight gradients of 3x3 convs on maps of "
            "<= 16 positions as one im2col matrix product, the same results up to float rounding; "
            "torchvision's run oneDNN's direct convolution throughout (oneDNN has Winograd on AVX-512 CPUs "
            "only). flops_per_train_step counts what each executes; ours_direct_flops_per_train_step is ours "
            "with direct convolutions")
    if loss.kind != "focal" or loss.alpha != 0.25 or loss.gamma != 2.0 or loss.normalizer_momentum:
        notes.append(f"loss: torchvision is fixed at focal alpha 0.25 gamma 2, no normalizer EMA; ours is "
                     f"{loss.kind} alpha {loss.alpha} gamma {loss.gamma} momentum {loss.normalizer_momentum}")
    if not cfg.model.prior_init or cfg.model.prior_prob != 0.01:
        notes.append(f"class prior: torchvision's head is fixed at pi 0.01; ours prior_init "
                     f"{cfg.model.prior_init} pi {cfg.model.prior_prob}")
    if loss.box_weight != 1.0:
        notes.append(f"box loss weight: torchvision 1.0, ours {loss.box_weight}")
    return [n for n in notes if n]


def one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())[:300]


def run(args) -> Dict[str, object]:
    cfg = bench_config(args.device, args.profile, args.overrides)
    device = resolve_device(cfg.train.device)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    train_set, val_set = build_datasets(cfg)  # generates the synthetic data if needed
    num_classes = train_set.num_classes
    steps = args.warmup + args.iterations + args.profile_steps
    infer_data = inference_batches(cfg, val_set, args.warmup + args.iterations, device)
    first = next(iter(train_batches(cfg, train_set, 1, device)))  # for the FLOP counts

    # build every contender, count its FLOPs (one extra step, untimed) and warm it up
    contenders: List[Contender] = []
    flops: Dict[str, int] = {}
    failed: Dict[str, str] = {}
    ours = build_ours(cfg, num_classes, device)
    opt = make_optimizer(cfg, ours)
    loss_fn = loss_from_config(cfg.loss)
    flops["ours"] = count_flops(our_step(cfg, ours, opt, loss_fn, device), first)
    if fast_cpu_convs_on(ours) and device.type == "cpu":  # the same model with oneDNN's convolutions only
        use_fast_cpu_convs(ours, False)
        flops["ours_direct"] = count_flops(lambda b: batch_losses(ours, loss_fn, b, cfg, device).total.backward(),
                                           first)
        use_fast_cpu_convs(ours, True)
        opt.zero_grad(set_to_none=True)
    contenders.append(Contender("ours", ours, opt, our_step(cfg, ours, opt, loss_fn, device),
                                our_inference(cfg, ours, device), train_batches(cfg, train_set, steps, device),
                                device))
    if args.compile:  # the same model, seed and first step; its network through torch.compile
        compiled = build_ours(cfg, num_classes, device)
        compiled.compile_dense(args.compile)
        opt = make_optimizer(cfg, compiled)
        step = our_step(cfg, compiled, opt, loss_from_config(cfg.loss), device)
        try:
            start = time.perf_counter()
            step(first)
            synchronize(device)
            contenders.append(Contender("ours_compiled", compiled, opt, step, our_inference(cfg, compiled, device),
                                        train_batches(cfg, train_set, steps, device), device))
            contenders[-1].first_step_s = time.perf_counter() - start
        except Exception as e:  # a compiler failure is a finding, not the end of the benchmark
            failed["ours_compiled"] = one_line(e)
    for name, channels_last in (("torchvision", False), ("torchvision_channels_last", True)):
        model = build_torchvision(cfg, num_classes, device, channels_last)
        opt = make_optimizer(cfg, model)
        step = torchvision_step(cfg, model, opt, device)
        if "torchvision" not in flops:
            flops["torchvision"] = count_flops(step, first)
        else:
            step(first)  # the same extra step as the first torchvision model took
        contenders.append(Contender(name, model, opt, step, torchvision_inference(cfg, model, device),
                                    train_batches(cfg, train_set, steps, device), device))
    for c in list(contenders):
        c.model.train()
        try:
            c.warm_up(args.warmup)
            c.infer_block(infer_data[:args.warmup])
        except Exception as e:
            if c.name != "ours_compiled":  # only the compiled variant may fail and be left out
                raise
            failed[c.name] = one_line(e)
            contenders.remove(c)
        c.infer_s, c.infer_images = 0.0, 0

    # the timed blocks, by turns
    for block in split(args.iterations, args.rounds):
        for c in contenders:
            c.train_block(block)
    start = args.warmup
    for block in split(len(infer_data) - args.warmup, args.rounds):
        for c in contenders:
            c.infer_block(infer_data[start:start + block])
        start += block
    results = {c.name: c.result() for c in contenders}
    rss = process_max_rss_mib()

    ours_names = [c.name for c in contenders if c.name.startswith("ours")]
    tv_names = [c.name for c in contenders if c.name.startswith("torchvision")]
    fastest = lambda names: max(names, key=lambda n: results[n]["train_images_per_s"])  # noqa: E731
    quickest = lambda names: min(names, key=lambda n: results[n]["inference_ms_per_image"])  # noqa: E731
    best_ours, best = fastest(ours_names), fastest(tv_names)
    best_ours_infer, best_infer = quickest(ours_names), quickest(tv_names)
    ours_r, tv_r = results[best_ours], results[best]

    # after the timing: where the step's time goes, and what the data pipeline alone delivers
    by_name = {c.name: c for c in contenders}
    breakdown = {}
    if args.profile_steps and args.top_ops:
        for name in (best_ours, best):
            c = by_name[name]
            batches = [next(c.batches) for _ in range(args.profile_steps)]
            breakdown[name] = top_ops(c.step, batches, device, args.top_ops, results[name]["step_s"])
    loader_batches = max(2 * cfg.data.num_workers, 4)
    loader_rate = loader_images_per_s(train_batches(cfg, train_set, loader_batches + 1, device))

    peak = assumed_peak_tflops(device)
    achieved = flops["ours"] / ours_r["step_s"] / 1e12
    return {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "profile": args.profile or ("paper" if args.device == "cuda" else "cpu"),
        "settings": {
            "depth": cfg.model.depth, "fpn_channels": cfg.model.fpn_channels, "head_convs": cfg.model.head_convs,
            "head_norm": cfg.model.head_norm, "anchors_per_location": len(cfg.anchors.aspect_ratios)
            * cfg.anchors.scales_per_octave, "image_size": [cfg.data.min_size, cfg.data.max_size],
            "batch_size": cfg.train.batch_size, "eval_batch_size": cfg.eval.batch_size,
            "precision": precision(cfg, device),
            "ours_channels_last": uses_channels_last(cfg, device),
            "ours_fast_cpu_convs": bool(cfg.model.fast_cpu_convs) and device.type == "cpu",
            "compile_mode": args.compile or None, "num_workers": cfg.data.num_workers,
            "torch_threads": torch.get_num_threads(), "iterations": args.iterations, "warmup": args.warmup,
            "rounds": len(split(args.iterations, args.rounds)),
            "torch": torch.__version__, "torchvision": torchvision.__version__,
        },
        "train_images_per_s": {"ours": ours_r["train_images_per_s"], "torchvision": tv_r["train_images_per_s"]},
        "train_speed_ratio_ours_over_torchvision": ours_r["train_images_per_s"] / tv_r["train_images_per_s"],
        "ours_best_configuration": best_ours,
        "torchvision_best_configuration": best,
        "ours_configurations": {n: {k: results[n][k] for k in ("train_images_per_s", "inference_ms_per_image",
                                                                  "first_step_s")} for n in ours_names},
        "ours_configurations_failed": failed,
        "torchvision_configurations": {n: {k: results[n][k] for k in ("train_images_per_s", "inference_ms_per_image")}
                                       for n in tv_names},
        "inference_ms_per_image": {"ours": results[best_ours_infer]["inference_ms_per_image"],
                                   "ours_configuration": best_ours_infer,
                                   "torchvision": results[best_infer]["inference_ms_per_image"],
                                   "torchvision_configuration": best_infer},
        "flops_per_train_step": {"ours": flops["ours"], "torchvision": flops["torchvision"]},
        "ours_direct_flops_per_train_step": flops.get("ours_direct"),
        "ours_achieved_tflops": achieved,
        "ours_direct_equivalent_tflops": (flops["ours_direct"] / ours_r["step_s"] / 1e12
                                          if "ours_direct" in flops else None),
        "assumed_peak_tflops": peak,
        "assumed_peak_kind": ("H200 SXM dense bf16" if device.type == "cuda" else
                              "threads x fp32 FMA FLOP/cycle x /proc/cpuinfo clock (an estimate)"),
        "ours_share_of_peak": achieved / peak if peak else None,
        "peak_memory_mib": {"ours": ours_r["peak_memory_mib"], "torchvision": tv_r["peak_memory_mib"],
                            "process_max_rss": rss if device.type == "cpu" else None,
                            "kind": "torch.cuda.max_memory_allocated during the model's timed blocks, above "
                                    "what the models held when it began, plus the model's parameters, "
                                    "gradients and optimizer state" if device.type == "cuda" else
                                    "CPU: only the process's max RSS (all models together) is known"},
        "data_wait_share": {"ours": ours_r["data_wait_share"], "torchvision": tv_r["data_wait_share"]},
        "data_loader_images_per_s": loader_rate,
        "data_loader_headroom": loader_rate / ours_r["train_images_per_s"],
        "top_ops_per_step": breakdown,
        "parameters": {"ours": sum(p.numel() for p in ours.parameters()),
                       "torchvision": sum(p.numel() for p in by_name[best].model.parameters())},
        "not_equal": not_equal(cfg, device),
    }


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--profile", choices=["cpu", "gpu", "paper"], default=None,
                        help="default: cpu on CPU; paper with synthetic 600 px data on CUDA")
    parser.add_argument("--iterations", type=int, default=None, help="timed steps (default: 12 cpu, 50 cuda)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 2 cpu, 10 cuda)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="blocks the timed steps are split into, run by turns (default: 3 cpu, 2 cuda)")
    parser.add_argument("--compile", default=None, choices=config_lib.COMPILE_MODES, metavar="MODE",
                        help="also time ours with train.compile=MODE ('' = not; default: 'default' on cuda, "
                             "'' on cpu, where inductor took minutes and the result was slower)")
    parser.add_argument("--top-ops", type=int, default=12,
                        help="list the N operators with the most self time per step of the fastest of ours "
                             "and of torchvision (torch.profiler; 0 = no profile)")
    parser.add_argument("--profile-steps", type=int, default=None,
                        help="steps profiled for --top-ops, after the timing (default: 3 cuda, 1 cpu)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides (OmegaConf dotlist)")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    args.compile = args.compile if args.compile is not None else ("default" if cuda else "")
    args.profile_steps = (args.profile_steps if args.profile_steps is not None else (3 if cuda else 1)) \
        if args.top_ops > 0 else 0
    args.iterations = args.iterations if args.iterations is not None else (50 if cuda else 12)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    args.rounds = args.rounds if args.rounds is not None else (2 if cuda else 3)
    if args.iterations < 1 or args.warmup < 0 or args.rounds < 1 or args.top_ops < 0 or args.profile_steps < 0:
        parser.error("--iterations and --rounds must be >= 1, --warmup, --top-ops and --profile-steps >= 0")
    if args.compile and args.warmup < 1:
        parser.error("--compile needs --warmup >= 1 (its first steps compile)")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    try:
        result = run(args)
    except config_lib.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:  # run() sets train.num_threads; an in-process caller (the tests) keeps its own
        torch.set_num_threads(threads)
    print(json.dumps(result, default=lambda v: None if isinstance(v, float) and not math.isfinite(v) else str(v)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
