"""The trainer's configuration schema: every knob the paper's ablations turn, as dataclasses whose
defaults are the paper's recipe (ResNet-50-FPN, 600 px, 16 images per iteration, lr 0.01, 90k
iterations, FL gamma 2 alpha .25, 3 scales x 3 ratios), and the schema's keys."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

DEFAULT_PROFILE = "cpu"


# model.backbone_norm (retina/backbone.py) and the stages model.freeze_at counts: stem, res2 .. res5.
BACKBONE_NORMS = ("bn", "frozen_bn", "sync_bn", "group")
NUM_STAGES = 5

# train.compile: "" = eager, else a torch.compile mode ("reduce-overhead" adds CUDA graphs).
COMPILE_MODES = ("", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class ModelConfig:
    depth: int = 50  # ResNet depth: 18, 34, 50 or 101 (torchvision's ResNet)
    # The backbone's initial weights (retina/modeling/backbone_weights.py): "" = random, trained from
    # scratch; a torchvision weights name of that ResNet (IMAGENET1K_V1, IMAGENET1K_V2), read from torch
    # hub's cache (downloaded there on first use where there is internet); a path to a .pth state dict of
    # it; or "synthetic": pre-trained once on synthetic data with the pretrain.* settings (retina/pretrain.py).
    backbone_weights: str = ""
    # "bn" (trainable BatchNorm), "frozen_bn" (statistics and affine fixed, as the paper and detectron2),
    # "sync_bn" (BatchNorm synchronized across data-parallel CUDA processes), "group" (GroupNorm(32)).
    backbone_norm: str = "bn"
    # detectron2's FREEZE_AT: stages 1 (stem) .. freeze_at get no gradient (0 = none, 2 = stem + res2, 5 = all).
    freeze_at: int = 0
    fpn_channels: int = 256  # width of P3..P7 and of the subnets
    head_convs: int = 4  # 3x3 convs (+ReLU) in each subnet before its predictor
    head_norm: str = "none"  # "none" (paper) or "group" (GroupNorm(32) in the subnets; a stabilizer)
    prior_init: bool = True  # last class conv bias = -log((1 - pi) / pi); False: bias 0 (section 5.1)
    prior_prob: float = 0.01  # pi
    channels_last: bool = False  # memory format on CUDA
    # CPU only, where oneDNN's direct convolution is slow on AVX2 (ignored on CUDA): the subnets' 3x3
    # convs and the FPN's P3 output conv by Winograd F(4x4, 3x3) (retina/winograd.py, C transforms built
    # on first use; F(2x2, 3x3) without a C compiler), and the weight gradients of 3x3 convs on maps of
    # <= 16 positions as one matrix product (retina/fast_conv.py). The same results up to float
    # rounding; a cpu-profile training step in ~60% of the time.
    fast_cpu_convs: bool = False


@dataclass
class AnchorConfig:
    base_size: float = 32.0  # anchor size on P3 in input pixels; P(l) uses base_size * 2^(l-3)
    scales_per_octave: int = 3  # n: scales 2^(k/n), k = 0..n-1
    aspect_ratios: List[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])  # height / width


@dataclass
class MatcherConfig:
    fg_iou: float = 0.5  # IoU >= fg_iou: foreground
    bg_iou: float = 0.4  # IoU < bg_iou: background; in between: ignored
    # True: each ground-truth box also claims the anchor(s) of its highest IoU even below fg_iou
    # (Detectron's RetinaNet does; the paper's text does not mention it).
    allow_low_quality_matches: bool = False


@dataclass
class LossConfig:
    kind: str = "focal"  # "focal" (gamma 0 = alpha-balanced CE, Table 1a) or "ohem" (section 5.2)
    alpha: float = 0.25  # weight of the positive class; negatives get 1 - alpha
    gamma: float = 2.0  # focusing parameter; 0 = cross entropy
    smooth_l1_beta: float = 0.11
    box_weight: float = 1.0
    # Normalizer = number of foreground anchors in the batch; momentum > 0 uses an exponential
    # moving average of it (Detectron2 uses 0.9), a known stabilizer when training from scratch.
    normalizer_momentum: float = 0.0
    ohem_batch_size: int = 128  # anchors kept per image
    ohem_nms: float = 0.7  # NMS threshold over anchor boxes, scored by their loss
    ohem_pos_ratio: Optional[float] = None  # e.g. 0.25 for the paper's "1:3"; None: no ratio


@dataclass
class DatasetSplit:
    annotations: str = ""  # COCO instances JSON
    images: str = ""  # folder that the JSON's file_name values are relative to


@dataclass
class SyntheticConfig:
    seed: int = 0
    num_train: int = 512
    num_val: int = 128
    image_size: int = 128
    num_classes: int = 3
    min_objects: int = 1
    max_objects: int = 3
    min_object_size: float = 12.0  # object size sqrt(w * h) in pixels, smallest
    max_object_size: float = 96.0  # largest; 12..96 spans three octaves
    easy_distractors: int = 6  # clutter unlike any object: specks, stripes, blurs
    hard_distractors: int = 2  # object-like clutter: outlines and shapes of no class
    cache_dir: str = ""  # "" = the user cache folder's synthetic/ (retina/paths.py)


@dataclass
class DataConfig:
    source: str = "synthetic"  # "synthetic" (generated, the default) or "coco" (the four paths below)
    train: DatasetSplit = field(default_factory=DatasetSplit)
    val: DatasetSplit = field(default_factory=DatasetSplit)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    min_size: int = 600  # shorter side after resize, pixels
    max_size: int = 1000  # cap on the longer side
    size_divisibility: int = 32  # batches are padded to a multiple of this
    flip_prob: float = 0.5  # horizontal flip, training only
    num_workers: int = 0  # DataLoader worker processes
    prefetch_mb: int = 512  # shared memory the workers' prefetched batches may hold in all (data.loaders)
    # batches of landscape or of portrait images only (detectron2's ASPECT_RATIO_GROUPING): less padding;
    # square images (synthetic data) are one group, and then it changes nothing
    aspect_ratio_grouping: bool = True
    max_val_images: Optional[int] = None  # evaluate on the first N validation images


@dataclass
class TrainConfig:
    iterations: int = 90000
    batch_size: int = 16  # images per iteration
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    warmup_factor: float = 1.0 / 3.0
    lr_steps: List[float] = field(default_factory=lambda: [60000 / 90000, 80000 / 90000])
    lr_gamma: float = 0.1
    grad_clip_norm: Optional[float] = None  # None = no clipping (the paper)
    seed: int = 0
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda"
    amp: bool = True  # autocast on CUDA (amp_dtype); on CPU only with amp_cpu
    # "bfloat16", or "float16" (with a GradScaler: for GPUs without bf16, before Ampere)
    amp_dtype: str = "bfloat16"
    # cuDNN's autotuner (torch.backends.cudnn.benchmark), on CUDA where every batch has the same shape
    cudnn_benchmark: bool = True
    # cap this process's CUDA memory at this fraction of the GPU (0: no cap); the orchestrator sets it for
    # trials that share a GPU (--gpus-per-trial 0.25 -> 0.25), so one cannot starve the others
    cuda_memory_fraction: float = 0.0
    # bf16 autocast on CPU too (with amp): to measure bf16's accuracy without a GPU. Emulated where the
    # CPU lacks AVX512-BF16/AMX (~13x slower here), and the fast_cpu_convs paths step aside.
    amp_cpu: bool = False
    compile: str = ""  # torch.compile mode for the network ("" = eager; see COMPILE_MODES)
    num_threads: int = 0  # torch CPU threads; 0 = torch's default
    log_every: int = 20  # iterations between on_metrics calls
    checkpoint_every: int = 1000  # iterations between checkpoints; 0 = only the final one


@dataclass
class EvalConfig:
    # Evaluate every N iterations during training as well as at the end (0 = only at the end): AP,
    # AP50, AP75 on the validation split (its first data.max_val_images) reach on_metrics with the
    # iteration, an AP curve. Changes nothing in training (out of the trial key, like all of eval).
    every: int = 0
    score_thresh: float = 0.05
    topk_per_level: int = 1000
    nms_thresh: float = 0.5
    max_detections: int = 100
    batch_size: int = 8
    # also time inference at batch size 1 on this many validation images (inference_ms_batch1), as the
    # paper timed Table 1e; 0 = not timed
    timing_images: int = 0


@dataclass
class PretrainConfig:
    """The backbone ``model.backbone_weights=synthetic`` starts from (retina/pretrain.py): a ResNet trained
    once to classify single synthetic objects of all 48 shape x colour classes, cached by these settings."""
    image_size: int = 32  # pixels (ImageNet's 224 px against COCO's 600-800 is the same kind of gap)
    num_images: int = 16000
    min_object_fraction: float = 0.4  # object size / image size
    max_object_fraction: float = 0.95
    easy_distractors: int = 3
    iterations: int = 500
    batch_size: int = 128
    lr: float = 0.2  # SGD, Nesterov momentum .9, cosine to 0 after warmup_iters
    warmup_iters: int = 50
    weight_decay: float = 5e-4
    seed: int = 0
    # torch threads while pre-training: part of the settings, since CPU kernels split their sums by thread
    # and the weights differ in the last bits with the count (and then in everything trained on them);
    # fixed, so a driver (every core) and a one-thread trial that pre-train compute the same backbone
    num_threads: int = 2


@dataclass
class RetinaConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    output_dir: str = ""  # where `python -m retina.train` writes; "" = runs/<timestamp>




def schema() -> DictConfig:
    """The default (paper) config as a struct-mode OmegaConf object."""
    cfg = OmegaConf.structured(RetinaConfig)
    OmegaConf.set_struct(cfg, True)
    return cfg


def valid_keys(cfg: Optional[DictConfig] = None) -> List[str]:
    """Every dotted leaf key of the schema (or of ``cfg``), e.g. ``loss.alpha``."""
    if cfg is None:
        return list(_schema_keys())
    return sorted(flatten_dict(OmegaConf.to_container(cfg, resolve=True)).keys())


@functools.lru_cache(maxsize=1)
def _schema_keys() -> Tuple[str, ...]:
    """The schema's keys, built once: a sweep of N rows validates N override sets against them."""
    return tuple(valid_keys(schema()))


def flatten_dict(d: Any, prefix: str = "") -> dict:
    """A nested dict as dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                out.update(flatten_dict(v, key + "."))
            else:
                out[key] = v
    return out


def flatten(cfg: DictConfig) -> dict:
    """Resolved config as ``{"loss.alpha": 0.25, ...}`` (lists stay lists)."""
    return flatten_dict(OmegaConf.to_container(cfg, resolve=True))
