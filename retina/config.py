"""The trainer's configuration schema: every knob the paper's ablations turn.

The dataclass defaults are the paper's recipe (ResNet-50-FPN, 600 px, 16 images per iteration,
lr 0.01, 90k iterations, FL gamma 2 alpha .25, 3 scales x 3 ratios); the profiles in
``retina/profiles/`` (``cpu`` default, ``gpu``, ``paper``) override what a smaller machine needs.

A config is an OmegaConf structured config: unknown keys and wrong types are refused. ``load_config``
merges profile, YAML files and ``key=value`` overrides and validates ranges; every mistake a user can
make becomes a one-line :class:`ConfigError` naming the file, the key and what would be right.
"""
from __future__ import annotations

import difflib
import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, List, Optional, Tuple

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError  # noqa: F401 - raised here, and imported from here by callers
from .paths import PROFILES_DIR
from .weight_names import SYNTHETIC, TORCHVISION_WEIGHT_NAMES, check_weights_file, is_weights_name
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


# ----------------------------------------------------------------------------------------------
# building and validating


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


def closest_key(key: str, candidates: Iterable[str]) -> Optional[str]:
    candidates = list(candidates)
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    if match:
        return match[0]
    leaf = key.split(".")[-1]
    by_leaf = [c for c in candidates if c.split(".")[-1] == leaf]
    return by_leaf[0] if by_leaf else None


def _unknown_key_message(where: str, key: str) -> str:
    hint = closest_key(key, valid_keys())
    right = f"did you mean '{hint}'?" if hint else "see retina/config.py for the valid keys"
    return f"{where}: unknown key '{key}'; {right}"


def merge_into(cfg: DictConfig, overrides: Any, where: str) -> DictConfig:
    """Merge a dict / DictConfig of overrides into ``cfg``; mistakes become one-line ConfigErrors."""
    if overrides is None:
        return cfg
    if not isinstance(overrides, (dict, DictConfig)):
        raise ConfigError(f"{where}: expected a mapping of config keys, got {type(overrides).__name__}")
    flat = flatten_dict(OmegaConf.to_container(OmegaConf.create(overrides)) if isinstance(overrides, dict)
                    else OmegaConf.to_container(overrides))
    known = set(valid_keys())
    for key in flat:
        if key not in known and not any(key.startswith(k + ".") for k in known):
            raise ConfigError(_unknown_key_message(where, key))
    try:
        return OmegaConf.merge(cfg, overrides)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        expected = _expected_type(key)
        raise ConfigError(f"{where}: key '{key}' has a value of the wrong type; expected {expected}") from None


def _expected_type(key: str) -> str:
    import typing

    node: Any = RetinaConfig

    try:
        for part in key.split("."):
            hints = typing.get_type_hints(node)
            node = hints[part]
    except Exception:
        return "the type in retina/config.py"
    name = getattr(node, "__name__", None) or str(node).replace("typing.", "")
    return name


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's floats (OmegaConf's rule): ``1e-1`` and ``1e6`` are numbers,
    which YAML 1.1 (PyYAML's default) reads as strings."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+][0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml_text(text: str):
    """YAML text -> Python values, safely (no object construction), numbers by OmegaConf's rules."""
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - _YamlLoader is a SafeLoader


def parse_dotlist(items: Iterable[str], where: str = "command line") -> dict:
    """``["loss.alpha=0.5", "train.iterations=10"]`` -> nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{where}: override '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = load_yaml_text(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping safely (no object construction); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = load_yaml_text(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return data


def profile_path(name: str) -> Path:
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown profile '{name}'; expected one of {', '.join(known)}")
    return path


def load_config(
    profile: Optional[str] = DEFAULT_PROFILE,
    files: Iterable[str | Path] = (),
    overrides: Iterable[str] = (),
    extra: Optional[dict] = None,
    check_paths: bool = False,
) -> DictConfig:
    """Schema <- profile <- YAML files <- ``extra`` dict <- ``key=value`` overrides, then validated.

    A value out of range is reported against the source that set it (file, "command line", ...)."""
    sources = []  # (where, overrides) in merge order
    if profile:
        path = profile_path(profile)
        sources.append((str(path), read_yaml(path)))
    sources += [(str(f), read_yaml(f)) for f in files]
    if extra:
        sources.append(("config", extra))
    overrides = list(overrides)
    if overrides:
        sources.append(("command line", parse_dotlist(overrides)))
    cfg = schema()
    for where, values in sources:
        cfg = merge_into(cfg, values, where)
    try:
        validate(cfg, check_paths=check_paths)
    except ConfigError as e:
        if e.key is None:
            raise
        setters = [where for where, values in sources if e.key in flatten_dict(OmegaConf.to_container(
            OmegaConf.create(values)))]
        where = setters[-1] if setters else "config (default value)"
        raise ConfigError(f"{where}: {e.detail}", key=e.key, detail=e.detail) from None
    return cfg


def _fail(where: str, key: str, value: Any, expected: str) -> None:
    detail = f"{key}={value!r} is out of range; expected {expected}"
    raise ConfigError(f"{where}: {detail}", key=key, detail=detail)


def validate(cfg: DictConfig, where: str = "config", check_paths: bool = False) -> None:
    """Range and consistency checks the type system cannot express."""
    m, a, mt, l, d, t, e = cfg.model, cfg.anchors, cfg.matcher, cfg.loss, cfg.data, cfg.train, cfg.eval

    def need(cond: bool, key: str, value: Any, expected: str) -> None:
        if not cond:
            _fail(where, key, value, expected)

    need(m.depth in (18, 34, 50, 101), "model.depth", m.depth, "one of 18, 34, 50, 101")
    _validate_backbone(m, cfg.pretrain, need, check_paths)
    need(m.fpn_channels >= 1, "model.fpn_channels", m.fpn_channels, "a positive integer")
    need(m.head_convs >= 0, "model.head_convs", m.head_convs, "an integer >= 0")
    need(m.head_norm in ("none", "group"), "model.head_norm", m.head_norm, "'none' or 'group'")
    if m.head_norm == "group":
        need(m.fpn_channels % 32 == 0, "model.fpn_channels", m.fpn_channels,
             "a multiple of 32 with model.head_norm=group")
    need(0.0 < m.prior_prob < 1.0, "model.prior_prob", m.prior_prob, "a probability in (0, 1)")
    need(a.base_size > 0, "anchors.base_size", a.base_size, "a positive size in pixels")
    need(a.scales_per_octave >= 1, "anchors.scales_per_octave", a.scales_per_octave, "an integer >= 1")
    need(len(a.aspect_ratios) >= 1 and all(r > 0 for r in a.aspect_ratios), "anchors.aspect_ratios",
         list(a.aspect_ratios), "a non-empty list of positive height/width ratios")
    need(0.0 < mt.fg_iou <= 1.0, "matcher.fg_iou", mt.fg_iou, "a value in (0, 1]")
    need(0.0 <= mt.bg_iou <= mt.fg_iou, "matcher.bg_iou", mt.bg_iou, f"a value in [0, matcher.fg_iou={mt.fg_iou}]")
    need(l.kind in ("focal", "ohem"), "loss.kind", l.kind, "'focal' or 'ohem'")
    need(0.0 <= l.alpha <= 1.0, "loss.alpha", l.alpha, "a value in [0, 1]")
    need(l.gamma >= 0.0 and math.isfinite(l.gamma), "loss.gamma", l.gamma, "a finite value >= 0")
    need(l.smooth_l1_beta >= 0.0, "loss.smooth_l1_beta", l.smooth_l1_beta, "a value >= 0")
    need(l.box_weight >= 0.0, "loss.box_weight", l.box_weight, "a value >= 0")
    need(0.0 <= l.normalizer_momentum < 1.0, "loss.normalizer_momentum", l.normalizer_momentum, "a value in [0, 1)")
    need(l.ohem_batch_size >= 1, "loss.ohem_batch_size", l.ohem_batch_size, "an integer >= 1")
    need(0.0 < l.ohem_nms <= 1.0, "loss.ohem_nms", l.ohem_nms, "a value in (0, 1]")
    if l.ohem_pos_ratio is not None:
        need(0.0 < l.ohem_pos_ratio < 1.0, "loss.ohem_pos_ratio", l.ohem_pos_ratio, "a value in (0, 1) or null")
    need(d.source in ("synthetic", "coco"), "data.source", d.source, "'synthetic' or 'coco'")
    need(d.min_size >= 8, "data.min_size", d.min_size, "an integer >= 8")
    need(d.max_size >= d.min_size, "data.max_size", d.max_size, f"an integer >= data.min_size={d.min_size}")
    need(d.size_divisibility >= 1, "data.size_divisibility", d.size_divisibility, "an integer >= 1")
    need(0.0 <= d.flip_prob <= 1.0, "data.flip_prob", d.flip_prob, "a probability in [0, 1]")
    need(d.num_workers >= 0, "data.num_workers", d.num_workers, "an integer >= 0")
    need(d.prefetch_mb >= 1, "data.prefetch_mb", d.prefetch_mb, "a positive number of MiB")
    s = d.synthetic
    need(s.num_train >= 1 and s.num_val >= 1, "data.synthetic.num_train", s.num_train, "an integer >= 1")
    need(s.image_size >= 32, "data.synthetic.image_size", s.image_size, "an integer >= 32")
    need(1 <= s.num_classes <= 48, "data.synthetic.num_classes", s.num_classes,
         "an integer in [1, 48] (6 shapes x 8 colour families)")
    need(0 <= s.min_objects <= s.max_objects, "data.synthetic.max_objects", s.max_objects,
         f"an integer >= data.synthetic.min_objects={s.min_objects}")
    need(0 < s.min_object_size <= s.max_object_size <= s.image_size, "data.synthetic.max_object_size",
         s.max_object_size, "min_object_size <= max_object_size <= image_size")
    if d.source == "coco":
        for split in ("train", "val"):
            for k in ("annotations", "images"):
                value = d[split][k]
                need(bool(value), f"data.{split}.{k}", value, "a path (data.source=coco)")
                if check_paths and not Path(value).exists():
                    raise ConfigError(f"{where}: data.{split}.{k}={value!r} does not exist; expected an existing "
                                      f"{'file' if k == 'annotations' else 'folder'}")
    need(t.compile in COMPILE_MODES, "train.compile", t.compile,
         "'' (eager) or a torch.compile mode: " + ", ".join(repr(m) for m in COMPILE_MODES[1:]))
    need(t.iterations >= 1, "train.iterations", t.iterations, "an integer >= 1")
    need(t.batch_size >= 1, "train.batch_size", t.batch_size, "an integer >= 1")
    need(t.lr > 0 and math.isfinite(t.lr), "train.lr", t.lr, "a positive learning rate")
    need(0.0 <= t.momentum < 1.0, "train.momentum", t.momentum, "a value in [0, 1)")
    need(t.weight_decay >= 0, "train.weight_decay", t.weight_decay, "a value >= 0")
    need(t.warmup_iters >= 0, "train.warmup_iters", t.warmup_iters, "an integer >= 0")
    need(0.0 < t.warmup_factor <= 1.0, "train.warmup_factor", t.warmup_factor, "a value in (0, 1]")
    need(all(0.0 < s_ < 1.0 for s_ in t.lr_steps) and list(t.lr_steps) == sorted(t.lr_steps), "train.lr_steps",
         list(t.lr_steps), "increasing fractions of train.iterations in (0, 1)")
    need(0.0 < t.lr_gamma <= 1.0, "train.lr_gamma", t.lr_gamma, "a value in (0, 1]")
    if t.grad_clip_norm is not None:
        need(t.grad_clip_norm > 0, "train.grad_clip_norm", t.grad_clip_norm, "a positive norm or null")
    need(t.device in ("auto", "cpu", "cuda"), "train.device", t.device, "'auto', 'cpu' or 'cuda'")
    need(t.num_threads >= 0, "train.num_threads", t.num_threads, "an integer >= 0")
    need(t.log_every >= 1, "train.log_every", t.log_every, "an integer >= 1")
    need(t.checkpoint_every >= 0, "train.checkpoint_every", t.checkpoint_every, "an integer >= 0")
    need(e.every >= 0, "eval.every", e.every, "an integer >= 0 (iterations between evaluations; 0 = at the end only)")
    need(0.0 <= e.score_thresh < 1.0, "eval.score_thresh", e.score_thresh, "a value in [0, 1)")
    need(e.topk_per_level >= 1, "eval.topk_per_level", e.topk_per_level, "an integer >= 1")
    need(0.0 < e.nms_thresh <= 1.0, "eval.nms_thresh", e.nms_thresh, "a value in (0, 1]")
    need(e.max_detections >= 1, "eval.max_detections", e.max_detections, "an integer >= 1")
    need(e.batch_size >= 1, "eval.batch_size", e.batch_size, "an integer >= 1")
    need(e.timing_images >= 0, "eval.timing_images", e.timing_images, "an integer >= 0")
    need(t.amp_dtype in ("bfloat16", "float16"), "train.amp_dtype", t.amp_dtype, "'bfloat16' or 'float16'")
    need(0.0 <= t.cuda_memory_fraction <= 1.0, "train.cuda_memory_fraction", t.cuda_memory_fraction,
         "a fraction in [0, 1] (0: no cap)")


def _validate_backbone(m: DictConfig, cfg_pretrain: DictConfig, need, check_paths: bool) -> None:
    """model.backbone_weights / backbone_norm / freeze_at, and the combinations that cannot work."""
    need(m.backbone_norm in BACKBONE_NORMS, "model.backbone_norm", m.backbone_norm,
         "one of " + ", ".join(repr(n) for n in BACKBONE_NORMS))
    need(0 <= m.freeze_at <= NUM_STAGES, "model.freeze_at", m.freeze_at,
         f"an integer in [0, {NUM_STAGES}] (detectron2's FREEZE_AT: 2 = stem and res2 frozen)")
    weights = m.backbone_weights
    if not weights:
        # a frozen random stem cost Detectron's GroupNorm project 3 AP; frozen BN without trained
        # statistics is no normalization at all
        need(m.freeze_at == 0, "model.freeze_at", m.freeze_at,
             "0 with a randomly initialized backbone (model.backbone_weights=''): freezing random stages "
             "freezes noise; give pretrained weights or set model.freeze_at=0")
        need(m.backbone_norm != "frozen_bn", "model.backbone_norm", m.backbone_norm,
             "'bn', 'sync_bn' or 'group' with a randomly initialized backbone (model.backbone_weights=''): "
             "frozen BatchNorm needs trained statistics")
    elif weights == SYNTHETIC:
        p = cfg_pretrain
        need(p.image_size >= 24, "pretrain.image_size", p.image_size, "an integer >= 24")
        need(p.num_images >= 100, "pretrain.num_images", p.num_images, "an integer >= 100")
        need(0.0 < p.min_object_fraction <= p.max_object_fraction <= 1.0, "pretrain.max_object_fraction",
             p.max_object_fraction, "0 < pretrain.min_object_fraction <= max_object_fraction <= 1")
        need(p.iterations >= 1 and p.batch_size >= 1, "pretrain.iterations", p.iterations, "an integer >= 1")
        need(p.lr > 0 and p.weight_decay >= 0, "pretrain.lr", p.lr, "a positive learning rate")
        need(p.num_threads >= 1, "pretrain.num_threads", p.num_threads,
             "an integer >= 1 (a fixed count: the weights depend on it)")
        need(m.backbone_norm != "group", "model.backbone_norm", m.backbone_norm,
             "'bn', 'frozen_bn' or 'sync_bn' with model.backbone_weights=synthetic (a BatchNorm ResNet)")
    elif is_weights_name(weights):
        names = TORCHVISION_WEIGHT_NAMES[m.depth]
        need(weights in names, "model.backbone_weights", weights,
             f"a weights name of torchvision's ResNet-{m.depth} ({', '.join(names)}), a path to a state dict "
             "(.pth), or '' (from scratch)")
        need(m.backbone_norm != "group", "model.backbone_norm", m.backbone_norm,
             f"'bn', 'frozen_bn' or 'sync_bn' with torchvision's {weights} (BatchNorm-trained weights); "
             "'group' needs a GroupNorm ResNet's state dict")
    elif check_paths:
        check_weights_file(weights, m.depth)  # the file exists (WeightsError names it otherwise)


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def from_container(d: dict) -> DictConfig:
    """Rebuild a validated config from a plain dict (e.g. one saved in a checkpoint or a trial)."""
    cfg = merge_into(schema(), d, "config")
    validate(cfg)
    return cfg
