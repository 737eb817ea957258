"""A synthetic detection dataset, written as real COCO instances JSON + PNG files.

It is built so that the focal-loss paper's phenomena can show at small scale:

* classes are filled shapes told apart by shape alone (every instance gets a random colour); beyond
  the six shapes (``num_classes`` up to 48) a class is a shape in one of eight colour families
  (class k: shape k % 6, colour family k // 6), so that the negative sigmoid logits per anchor grow
  with the number of classes as COCO's 80 do;
* object sizes are log-uniform over several octaves (12..96 px by default: three), aspect ratios
  (height / width) log-uniform in [1/2, 2], so every pyramid level and anchor shape has work;
* a few objects per image on a textured, noisy background, so almost every anchor is background;
* easy distractors (specks, stripes, smooth blobs): many easy negatives, which dominate the loss
  of plain cross entropy;
* hard distractors (outlines of shapes, half-discs, stars, the shapes of classes not in use, and
  beyond six classes the classes' shapes in colour families no class uses): object-like but not
  annotated, the hard negatives that a detector has to learn to reject.

Everything is drawn with PIL's ImageDraw and numpy, from ``np.random.default_rng`` generators
seeded per split and per image (image ``i`` of a split does not depend on how many images the
split has). No global random state is touched.

``ensure_synthetic(cfg)`` caches a dataset under a hash of the generator settings and is safe
when several processes call it at once. ``python -m retina.data.synthetic OUT_DIR [key=value ...]``
writes one from the command line.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
from PIL import Image, ImageDraw

logger = logging.getLogger("retina.data")

# Bump when the generator's output changes, so that caches made by an older version are not used.
GENERATOR_VERSION = 3  # 3: beyond six classes, class shapes in unused colour families as hard distractors

from ..paths import cache_dir as user_cache_dir


# Class k (category id k + 1) is SHAPES[k]; a dataset with num_classes = n uses the first n.
SHAPES: Tuple[str, ...] = ("rectangle", "ellipse", "triangle", "cross", "diamond", "ring")

# Colour families of the classes beyond the six shapes: hue in degrees (HSV), one per block of six classes.
COLOUR_FAMILIES: Tuple[Tuple[str, float], ...] = (
    ("red", 0.0), ("orange", 30.0), ("yellow", 60.0), ("green", 120.0), ("cyan", 180.0), ("blue", 225.0),
    ("purple", 275.0), ("magenta", 320.0),
)
MAX_CLASSES = len(SHAPES) * len(COLOUR_FAMILIES)
_HUE_JITTER = 8.0  # degrees either side of a family's hue

# Object-like shapes that are never a class. The shapes of classes not in use join them.
HARD_SHAPES: Tuple[str, ...] = (
    "rectangle_outline", "triangle_outline", "diamond_outline", "half_disc", "star", "ell",
)

# The fields of retina.config.SyntheticConfig that determine the data (cache_dir does not).
GENERATOR_FIELDS: Tuple[str, ...] = (
    "seed", "num_train", "num_val", "image_size", "num_classes", "min_objects", "max_objects",
    "min_object_size", "max_object_size", "easy_distractors", "hard_distractors",
)

SPLITS: Tuple[str, ...] = ("train", "val")
COMPLETE_MARKER = "COMPLETE"

_MAX_IOU = 0.3  # placements overlapping an earlier object by more than this are rejected
_MAX_COVER = 0.35  # ... as are those covering more than this fraction of the smaller box
_MAX_HARD_COVER = 0.2  # a hard distractor may cover at most this much of an object or other distractor
_PLACEMENT_TRIES = 50
_MIN_CONTRAST = 90.0  # RGB distance between a shape's colour and the background's mean colour
_PIXEL_NOISE = 6.0  # std of the per-pixel noise added last, grey levels


@dataclass(frozen=True)
class RenderSettings:
    """The generator fields of a SyntheticConfig, read from a dataclass, DictConfig or dict."""

    seed: int
    num_train: int
    num_val: int
    image_size: int
    num_classes: int
    min_objects: int
    max_objects: int
    min_object_size: float
    max_object_size: float
    easy_distractors: int
    hard_distractors: int

    @staticmethod
    def of(cfg: Any) -> "RenderSettings":
        get: Callable[[str], Any] = cfg.get if isinstance(cfg, dict) else lambda k: getattr(cfg, k)
        s = RenderSettings(
            seed=int(get("seed")), num_train=int(get("num_train")), num_val=int(get("num_val")),
            image_size=int(get("image_size")), num_classes=int(get("num_classes")),
            min_objects=int(get("min_objects")), max_objects=int(get("max_objects")),
            min_object_size=float(get("min_object_size")), max_object_size=float(get("max_object_size")),
            easy_distractors=int(get("easy_distractors")), hard_distractors=int(get("hard_distractors")),
        )
        s.check()
        return s

    def check(self) -> None:
        def need(cond: bool, key: str, value: Any, expected: str) -> None:
            if not cond:
                raise ValueError(f"synthetic data: {key}={value!r} is out of range; expected {expected}")

        need(1 <= self.num_classes <= MAX_CLASSES, "num_classes", self.num_classes, f"1..{MAX_CLASSES}")
        need(self.image_size >= 16, "image_size", self.image_size, "an integer >= 16")
        need(0 <= self.min_objects <= self.max_objects, "max_objects", self.max_objects,
             f"an integer >= min_objects={self.min_objects}")
        need(0 < self.min_object_size <= self.max_object_size <= self.image_size, "max_object_size",
             self.max_object_size, "min_object_size <= max_object_size <= image_size")
        need(self.num_train >= 0 and self.num_val >= 0, "num_train", self.num_train, "counts >= 0")
        need(self.easy_distractors >= 0 and self.hard_distractors >= 0, "easy_distractors",
             self.easy_distractors, "counts >= 0")

    def num_images(self, split: str) -> int:
        return self.num_train if split == "train" else self.num_val

    def digest(self) -> str:
        """A short hash of the generator fields and GENERATOR_VERSION: the cache folder's name."""
        payload = {"version": GENERATOR_VERSION, **{k: getattr(self, k) for k in GENERATOR_FIELDS}}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# drawing


Box = Tuple[int, int, int, int]  # x0, y0, w, h in pixels; the shape covers pixels x0..x0+w-1
Colour = Tuple[int, int, int]


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, box: Box, colour: Colour) -> None:
    """Draw ``kind`` so that its tight bounding box is ``box`` (continuous [x0, x0 + w))."""
    x0, y0, w, h = box
    x1, y1 = x0 + w - 1, y0 + h - 1  # PIL's coordinates are inclusive
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    line = max(1, round(min(w, h) / 12))  # outline width of the hard distractors
    if kind == "rectangle":
        draw.rectangle((x0, y0, x1, y1), fill=colour)
    elif kind == "ellipse":
        draw.ellipse((x0, y0, x1, y1), fill=colour)
    elif kind == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=colour)
    elif kind == "cross":
        tw, th = max(1, round(w / 3)), max(1, round(h / 3))
        draw.rectangle((x0, round(cy - (th - 1) / 2), x1, round(cy - (th - 1) / 2) + th - 1), fill=colour)
        draw.rectangle((round(cx - (tw - 1) / 2), y0, round(cx - (tw - 1) / 2) + tw - 1, y1), fill=colour)
    elif kind == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=colour)
    elif kind == "ring":
        draw.ellipse((x0, y0, x1, y1), outline=colour, width=max(2, round(0.22 * min(w, h))))
    elif kind == "rectangle_outline":
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=line)
    elif kind == "triangle_outline":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], outline=colour, width=line)
    elif kind == "diamond_outline":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], outline=colour, width=line)
    elif kind == "half_disc":  # the upper half of an ellipse twice the box's height
        draw.pieslice((x0, y0, x1, y0 + 2 * h - 1), 180, 360, fill=colour)
    elif kind == "star":
        pts = []
        for k in range(10):
            radius = 1.0 if k % 2 == 0 else 0.42
            angle = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + radius * (w - 1) / 2 * math.cos(angle), cy + radius * (h - 1) / 2 * math.sin(angle)))
        draw.polygon(pts, fill=colour)
    elif kind == "ell":  # an L: the left and bottom arms of a cross-like stroke
        tw, th = max(1, round(w / 3)), max(1, round(h / 3))
        draw.rectangle((x0, y0, x0 + tw - 1, y1), fill=colour)
        draw.rectangle((x0, y1 - th + 1, x1, y1), fill=colour)
    else:
        raise ValueError(f"unknown shape {kind!r}")


def _iou_and_cover(a: Box, b: Box) -> Tuple[float, float]:
    """IoU of two boxes, and their intersection over the smaller box's area."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a, area_b = a[2] * a[3], b[2] * b[3]
    return inter / (area_a + area_b - inter), inter / min(area_a, area_b)


def _sample_extent(rng: np.random.Generator, s: RenderSettings) -> Tuple[int, int]:
    """(w, h): size sqrt(w h) log-uniform in [min, max], h / w log-uniform in [1/2, 2] (narrowed so
    that the box fits the image), rounded to whole pixels keeping h / w within [1/2, 2]."""
    size = math.exp(rng.uniform(math.log(s.min_object_size), math.log(s.max_object_size)))
    fit = (s.image_size / size) ** 2  # h <= image_size and w <= image_size  <=>  1/fit <= r <= fit
    lo, hi = max(0.5, 1.0 / fit), min(2.0, fit)
    ratio = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    w = min(s.image_size, max(2, round(size / math.sqrt(ratio))))
    h = min(s.image_size, max(2, round(size * math.sqrt(ratio))))
    h, w = min(h, 2 * w), min(w, 2 * h)
    return w, h


def _place(rng: np.random.Generator, w: int, h: int, image_size: int) -> Box:
    x0 = int(rng.integers(0, image_size - w + 1))
    y0 = int(rng.integers(0, image_size - h + 1))
    return x0, y0, w, h


def _random_colour(rng: np.random.Generator, background: np.ndarray) -> Colour:
    """A random colour far enough from the background's mean colour to be seen."""
    for _ in range(100):
        c = rng.integers(0, 256, size=3)
        if np.linalg.norm(c - background) >= _MIN_CONTRAST:
            break
    return int(c[0]), int(c[1]), int(c[2])


def _family_colour(rng: np.random.Generator, family: int, background: np.ndarray) -> Colour:
    """A colour of colour family ``family`` (its hue +- _HUE_JITTER, saturated and bright), far enough
    from the background's mean colour to be seen."""
    import colorsys

    hue = COLOUR_FAMILIES[family][1]
    for _ in range(100):
        h = ((hue + rng.uniform(-_HUE_JITTER, _HUE_JITTER)) % 360.0) / 360.0
        rgb = np.array(colorsys.hsv_to_rgb(h, rng.uniform(0.65, 1.0), rng.uniform(0.6, 1.0))) * 255.0
        if np.linalg.norm(rgb - background) >= _MIN_CONTRAST:
            break
    return int(round(rgb[0])), int(round(rgb[1])), int(round(rgb[2]))


def class_shape(label: int) -> str:
    """The shape of class ``label`` (0-based): the six shapes, repeated per colour family."""
    return SHAPES[label % len(SHAPES)]


def class_name(label: int, num_classes: int) -> str:
    """COCO category name of class ``label``: its shape, and its colour family beyond six classes."""
    if num_classes <= len(SHAPES):
        return SHAPES[label]
    return f"{COLOUR_FAMILIES[label // len(SHAPES)][0]} {class_shape(label)}"


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32: a mid-tone colour, low-frequency texture and smooth blobs."""
    base = rng.uniform(50, 205, size=3).astype(np.float32)
    cells = int(rng.integers(3, 8))
    coarse = rng.uniform(100, 156, size=(cells, cells, 3)).astype(np.uint8)
    texture = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
    return (base - 128) + np.asarray(texture, dtype=np.float32)


def _add_blobs(rng: np.random.Generator, image: np.ndarray, count: int) -> None:
    """Easy distractors: ``count`` smooth, low-contrast Gaussian blobs added to ``image`` in place."""
    if count == 0:
        return
    size = image.shape[0]
    sigma = rng.uniform(3, size / 6, size=(count, 1)).astype(np.float32)
    centres = rng.uniform(0, size, size=(count, 2)).astype(np.float32)
    amplitude = (rng.uniform(25, 60, size=(count, 1)) * rng.choice([-1.0, 1.0], size=(count, 3))).astype(np.float32)
    grid = np.arange(size, dtype=np.float32)
    yy = np.exp(-((grid - centres[:, :1]) ** 2) / (2 * sigma**2))  # (count, size)
    xx = np.exp(-((grid - centres[:, 1:]) ** 2) / (2 * sigma**2))
    image += np.einsum("ky,kx,kc->yxc", yy, xx, amplitude, optimize=True)


def _draw_clutter(rng: np.random.Generator, draw: ImageDraw.ImageDraw, kind: str, size: int,
                  background: np.ndarray) -> None:
    """An easy distractor drawn with PIL: a speck (tiny dot) or a thin stripe."""
    colour = _random_colour(rng, background)
    if kind == "speck":
        r = int(rng.integers(1, 3))
        x, y = rng.integers(0, size, size=2)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    else:  # stripe: a long thin line, at any angle
        length = rng.uniform(0.3, 1.0) * size
        angle = rng.uniform(0, math.pi)
        x, y = rng.uniform(0, size, size=2)
        dx, dy = length / 2 * math.cos(angle), length / 2 * math.sin(angle)
        draw.line((x - dx, y - dy, x + dx, y + dy), fill=colour, width=int(rng.integers(1, 3)))


def render(rng: np.random.Generator, s: RenderSettings) -> Tuple[np.ndarray, List[Tuple[Box, int]]]:
    """One image: (size, size, 3) uint8 and its objects [(box, class index)]."""
    n_objects = int(rng.integers(s.min_objects, s.max_objects + 1))
    extents = sorted((_sample_extent(rng, s) for _ in range(n_objects)), key=lambda e: -e[0] * e[1])
    objects: List[Tuple[Box, int]] = []  # largest first: smaller objects are drawn on top
    for w, h in extents:
        for _ in range(_PLACEMENT_TRIES):
            box = _place(rng, w, h, s.image_size)
            if all(_ok_overlap(box, other) for other, _ in objects):
                objects.append((box, int(rng.integers(0, s.num_classes))))
                break
        # An object that found no place is left out (rare: only with many large objects).

    hard_pool = HARD_SHAPES + SHAPES[s.num_classes:]  # beyond six classes every shape is some class's
    # beyond six classes, also the classes' shapes in colour families no class uses: the same shape, the
    # wrong colour (half of the hard distractors, where there are such families)
    unused = [(k % len(SHAPES), k // len(SHAPES)) for k in range(s.num_classes, MAX_CLASSES)] \
        if s.num_classes > len(SHAPES) else []
    hard: List[Tuple[Box, object]] = []
    for _ in range(s.hard_distractors):
        w, h = _sample_extent(rng, s)
        if unused and rng.random() < 0.5:
            kind = unused[int(rng.integers(0, len(unused)))]  # (shape index, colour family)
        else:
            kind = hard_pool[int(rng.integers(0, len(hard_pool)))]
        for _ in range(_PLACEMENT_TRIES):
            box = _place(rng, w, h, s.image_size)
            others = [b for b, _ in objects] + [b for b, _ in hard]
            if all(_iou_and_cover(box, other)[1] <= _MAX_HARD_COVER for other in others):
                hard.append((box, kind))
                break

    image = _background(rng, s.image_size)
    mean = image[::4, ::4].reshape(-1, 3).mean(axis=0)
    clutter = [("speck", "stripe", "blob")[int(k)] for k in rng.integers(0, 3, size=s.easy_distractors)]
    _add_blobs(rng, image, clutter.count("blob"))
    pil = Image.fromarray(image.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for kind in clutter:
        if kind != "blob":
            _draw_clutter(rng, draw, kind, s.image_size, mean)
    for box, kind in hard:
        if isinstance(kind, tuple):
            _draw_shape(draw, SHAPES[kind[0]], box, _family_colour(rng, kind[1], mean))
        else:
            _draw_shape(draw, kind, box, _random_colour(rng, mean))
    for box, label in objects:
        colour = (_random_colour(rng, mean) if s.num_classes <= len(SHAPES)
                  else _family_colour(rng, label // len(SHAPES), mean))
        _draw_shape(draw, class_shape(label), box, colour)
    noise = rng.standard_normal(size=(s.image_size, s.image_size, 3), dtype=np.float32)
    noisy = np.asarray(pil, dtype=np.float32) + (_PIXEL_NOISE * noise + 0.5)  # + 0.5: astype truncates
    return noisy.clip(0, 255).astype(np.uint8), objects


def _ok_overlap(a: Box, b: Box) -> bool:
    iou, cover = _iou_and_cover(a, b)
    return iou <= _MAX_IOU and cover <= _MAX_COVER


# ----------------------------------------------------------------------------------------------
# writing


def split_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``: independent per split and per image."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SPLITS.index(split), index)))


# Splits of at least this many images are drawn by worker processes (one per CPU, at most 16): each
# image depends only on (seed, split, index), so the files are the same either way. The workers are
# fresh interpreters running this module (``python -m retina.data.synthetic --render ...``), not
# multiprocessing children: those re-import the caller's main script, which breaks a script without an
# ``if __name__ == "__main__":`` guard, a notebook, or a Ray worker.
PARALLEL_MIN_IMAGES = 256
MAX_WORKERS = 16


def _write_image(s: RenderSettings, split: str, index: int, images_dir: Path) -> List[Tuple[Box, int]]:
    """Render image ``index`` of ``split``, write its PNG, return its objects."""
    pixels, objects = render(split_rng(s.seed, split, index), s)
    Image.fromarray(pixels).save(images_dir / f"{index:06d}.png", compress_level=1)
    return objects


def _render_range(s: RenderSettings, split: str, start: int, stop: int, images_dir: Path) -> List[List[Tuple[Box, int]]]:
    return [_write_image(s, split, i, images_dir) for i in range(start, stop)]


def _render_in_workers(s: RenderSettings, split: str, count: int, images_dir: Path, workers: int) -> List[List[Tuple[Box, int]]]:
    """Images 0 .. count-1 of ``split`` by ``workers`` processes, each a contiguous range; their objects."""
    bounds = [count * w // workers for w in range(workers + 1)]
    settings = json.dumps({k: getattr(s, k) for k in GENERATOR_FIELDS})
    procs = []
    for w in range(workers):
        out = images_dir.parent / f".objects-{w}.json"
        args = [sys.executable, "-m", "retina.data.synthetic", "--render", settings, split, str(bounds[w]),
                str(bounds[w + 1]), str(images_dir), str(out)]
        procs.append((subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_worker_env()), out))
    per_image: List[List[Tuple[Box, int]]] = []
    for proc, out in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"synthetic data worker failed (exit {proc.returncode}): "
                               f"{err.decode(errors='replace')[-500:]}")
        per_image += [[(tuple(box), label) for box, label in objects] for objects in json.loads(out.read_text())]
        out.unlink()
    return per_image


def _worker_env() -> Dict[str, str]:
    """The workers import this package as the caller does: its folder's parent on PYTHONPATH."""
    root = str(Path(__file__).resolve().parent.parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


def _write_split(s: RenderSettings, split: str, out: Path) -> None:
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    count = s.num_images(split)
    workers = min(os.cpu_count() or 1, MAX_WORKERS, count)
    if count >= PARALLEL_MIN_IMAGES and workers > 1:
        per_image = _render_in_workers(s, split, count, images_dir, workers)
    else:
        per_image = _render_range(s, split, 0, count, images_dir)
    images, annotations = [], []
    for i, objects in enumerate(per_image):
        image_id = i + 1  # COCO ids start at 1 (COCOeval treats an annotation id 0 as "no match")
        images.append({"id": image_id, "file_name": f"{i:06d}.png", "width": s.image_size, "height": s.image_size})
        for (x0, y0, w, h), label in objects:
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                "bbox": [x0, y0, w, h], "area": w * h, "iscrowd": 0,
            })
    dataset = {
        "info": {"description": f"retina synthetic shapes, {split} split",
                 "generator_version": GENERATOR_VERSION,
                 "settings": {k: getattr(s, k) for k in GENERATOR_FIELDS}},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": class_name(k, s.num_classes), "supercategory": "shape"}
                       for k in range(s.num_classes)],
    }
    (out / "instances.json").write_text(json.dumps(dataset))


def generate(cfg: Any, out_dir: Path) -> None:
    """Write ``out_dir/{train,val}/instances.json`` and ``out_dir/{train,val}/images/*.png``.

    ``cfg`` has the fields of ``retina.config.SyntheticConfig`` (dataclass, DictConfig or dict).
    The same settings always give the same JSON and the same image bytes.
    """
    s = RenderSettings.of(cfg)
    for split in SPLITS:
        _write_split(s, split, Path(out_dir) / split)


def split_paths(root: Path) -> Tuple[Dict[str, str], Dict[str, str]]:
    """The (train, val) ``{"annotations", "images"}`` of a dataset written by ``generate``."""
    return tuple(  # type: ignore[return-value]
        {"annotations": str(root / split / "instances.json"), "images": str(root / split / "images")}
        for split in SPLITS
    )


def ensure_synthetic(cfg: Any, cache_dir: str | Path | None = None) -> Tuple[Dict[str, str], Dict[str, str]]:
    """Generate the dataset of ``cfg`` unless it is cached; return its (train, val) split paths.

    The dataset lives in ``<cache_dir>/<hash of the generator fields>/``; the marker file
    ``COMPLETE`` is written last. Several processes may call this at once: each generates into its
    own temporary sibling folder and renames it into place; a process that loses the race deletes
    its copy and uses the winner's (identical, being deterministic).
    cache_dir: the argument, else ``cfg.cache_dir`` if non-empty, else the user cache folder's
    ``synthetic/`` (retina/paths.py).
    """
    s = RenderSettings.of(cfg)
    if cache_dir is None:
        configured = cfg.get("cache_dir", "") if isinstance(cfg, dict) else getattr(cfg, "cache_dir", "")
        cache_dir = configured or user_cache_dir("synthetic")
    root = Path(cache_dir) / s.digest()
    if (root / COMPLETE_MARKER).is_file():
        return split_paths(root)

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        start = time.perf_counter()
        generate(s, tmp)
        (tmp / COMPLETE_MARKER).write_text(f"generator_version={GENERATOR_VERSION}\n")
        try:
            os.rename(tmp, root)
            logger.info("synthetic data: wrote %d + %d images to %s in %.1f s",
                        s.num_train, s.num_val, root, time.perf_counter() - start)
        except OSError:
            if not (root / COMPLETE_MARKER).is_file():
                # Not a lost race: a folder without the marker is no dataset of ours; replace it.
                shutil.rmtree(root, ignore_errors=True)
                os.rename(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already unless the rename lost the race
    return split_paths(root)


def _render_worker(argv: List[str]) -> int:
    """``--render SETTINGS_JSON SPLIT START STOP IMAGES_DIR OBJECTS_JSON``: one worker's range."""
    settings, split, start, stop, images_dir, out = argv
    s = RenderSettings.of(json.loads(settings))
    objects = _render_range(s, split, int(start), int(stop), Path(images_dir))
    Path(out).write_text(json.dumps(objects))
    return 0


def main(argv: List[str] | None = None) -> int:
    """``python -m retina.data.synthetic OUT_DIR [key=value ...]`` (keys of SyntheticConfig)."""
    from omegaconf import OmegaConf

    from retina.config import SyntheticConfig

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--render"]:
        return _render_worker(argv[1:])
    if not argv or argv[0].startswith("-"):
        print("usage: python -m retina.data.synthetic OUT_DIR [key=value ...]   keys: "
              + ", ".join(GENERATOR_FIELDS), file=sys.stderr)
        return 2
    cfg = OmegaConf.structured(SyntheticConfig)
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(argv[1:]))
        s = RenderSettings.of(cfg)
    except Exception as e:  # an unknown key, a wrong type, a value out of range
        print(f"command line: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    generate(s, Path(argv[0]))
    print(f"wrote {s.num_train} train + {s.num_val} val images to {argv[0]} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
