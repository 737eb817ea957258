"""COCO-format detection data: loading, resizing, flipping, batching, and results back to COCO.

Conventions (as in detectron2 / torchvision):

* boxes are ``xyxy`` float32 in pixels of the image the tensor holds (the resized image);
* labels are contiguous ``0..num_classes-1``; label ``i`` is COCO category ``category_ids[i]``;
* an image is resized so that its shorter side is ``min_size``, unless its longer side would
  then exceed ``max_size`` (then the longer side is ``max_size``); one scale for both axes;
* crowd boxes are kept and flagged ``iscrowd`` (the matcher ignores them);
* boxes with zero or negative width or height are dropped (counted and logged once).

Everything a user can get wrong in the files raises a one-line :class:`DataError` naming the file.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import operator
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
import torch
from pycocotools.coco import COCO
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2.functional import resize as resize_image

logger = logging.getLogger("retina.data")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_COCO_KEYS = ("images", "annotations", "categories")


class DataError(ValueError):
    """A problem with a dataset's files; the message is one line and names the file."""


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


# ----------------------------------------------------------------------------------------------
# loading


def _read_json(path: Path) -> dict:
    """The JSON of a COCO instances file, with its top-level structure checked; -> DataError."""
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found; expected a COCO instances JSON")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                        "expected a COCO instances JSON") from None
    except (UnicodeDecodeError, OSError) as e:
        raise DataError(f"{path}: cannot read ({_one_line(e)}); expected a COCO instances JSON") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: top level is a {type(data).__name__}; expected a COCO instances JSON object")
    missing = [k for k in _COCO_KEYS if not isinstance(data.get(k), list)]
    if missing:
        raise DataError(f"{path}: missing or not a list: {', '.join(repr(k) for k in missing)}; expected a COCO "
                        "instances JSON with 'images', 'annotations' and 'categories'")
    return data


def load_coco(path: str | Path, drop_degenerate: bool = False) -> COCO:
    """Read a COCO instances JSON into a pycocotools ``COCO`` (quietly); format errors -> DataError.

    Missing ``area`` / ``iscrowd`` fields of annotations are filled in (box area, 0) so that
    COCOeval can use the object as ground truth; ``drop_degenerate`` leaves out boxes of zero width
    or height (as the training data does).
    """
    path = Path(path)
    data = _read_json(path)
    _check_records(path, data)
    if drop_degenerate:
        data["annotations"] = [a for a in data["annotations"] if a["bbox"][2] > 0 and a["bbox"][3] > 0]
    for ann in data["annotations"]:
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _check_records(path: Path, data: dict) -> None:
    """Every image, category and annotation has what the loader needs; one-line DataErrors."""
    image_ids = set()
    for img in data["images"]:
        if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
            raise DataError(f"{path}: image entry {_one_line(img)[:80]} lacks 'id' or 'file_name'")
        if img["id"] in image_ids:
            raise DataError(f"{path}: image id {img['id']} appears twice; expected unique image ids")
        image_ids.add(img["id"])
    category_ids = set()
    for cat in data["categories"]:
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int):
            raise DataError(f"{path}: category entry {_one_line(cat)[:80]} lacks an integer 'id'")
        category_ids.add(cat["id"])
    if not category_ids:
        raise DataError(f"{path}: 'categories' is empty; expected at least one category")
    for ann in data["annotations"]:
        ann_id = ann.get("id") if isinstance(ann, dict) else None
        if ann_id is None:
            raise DataError(f"{path}: annotation entry {_one_line(ann)[:80]} lacks an 'id'")
        if ann.get("category_id") not in category_ids:
            raise DataError(f"{path}: annotation {ann_id} has category_id={ann.get('category_id')!r}, which is "
                            f"not in 'categories'; expected one of {sorted(category_ids)}")
        if ann.get("image_id") not in image_ids:
            raise DataError(f"{path}: annotation {ann_id} has image_id={ann.get('image_id')!r}, which is not in "
                            "'images'")
        bbox = ann.get("bbox")
        if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)):
            raise DataError(f"{path}: annotation {ann_id} has bbox={bbox!r}; expected [x, y, width, height] "
                            "of 4 finite numbers")
        if bbox[2] < 0 or bbox[3] < 0:
            raise DataError(f"{path}: annotation {ann_id} has bbox={list(bbox)!r} with a negative width or height; "
                            "expected width, height >= 0 (zero-size boxes are dropped with a warning)")


def decode_rgb(path: str | Path) -> torch.Tensor:
    """Read an image file as a uint8 (3, H, W) RGB tensor (grayscale is replicated); -> DataError."""
    try:
        data = torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its decoders in favour of TorchCodec; they still work.
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_image(data, mode=ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as e:
        raise DataError(f"{path}: cannot decode image ({_one_line(e)[:120]}); expected a readable "
                        "JPEG or PNG file") from None


def unit_floats(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1]: the one conversion the loader, collate and normalize share,
    so that bytes normalized on the device equal the floats normalized in the loader to the bit."""
    return pixels.to(torch.float32).div_(255.0)


def resize_scale(height: int, width: int, min_size: int, max_size: int) -> float:
    """The scale that makes the shorter side ``min_size`` unless the longer side would exceed
    ``max_size`` (then the longer side becomes ``max_size``)."""
    scale = min_size / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return scale


INDEX_VERSION = 1  # bump when CocoIndex's arrays change
FILES_OPENED = [0]  # image files this process has opened (header checks and reads): the benchmark counts them


@dataclass
class CocoIndex:
    """A COCO instances JSON as flat arrays, built once and cached: what a training dataset and its
    DataLoader workers hold instead of pycocotools' COCO (whose dicts, segmentations included, every
    forked worker would copy page by page, their reference counts defeating copy-on-write).

    Images (M, sorted by id): ``image_ids`` int64, ``file_names`` fixed-width bytes, ``heights``,
    ``widths`` int32 (from the JSON; 0 where it has none); their boxes are rows ``ann_start[i] ..
    ann_start[i + 1]`` of ``boxes`` (A, 4) float32 xyxy original pixels, ``labels`` (A,) int64
    contiguous, ``iscrowd`` (A,) bool. Degenerate boxes (zero width or height) are left out and counted.
    """
    image_ids: np.ndarray
    file_names: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    ann_start: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray
    category_ids: np.ndarray
    class_names: np.ndarray
    num_degenerate_dropped: int

    @staticmethod
    def from_json(path: Path) -> "CocoIndex":
        data = _read_json(path)
        _check_records(path, data)
        cats = sorted(data["categories"], key=lambda c: c["id"])
        label_of = {c["id"]: i for i, c in enumerate(cats)}
        images = sorted(data["images"], key=lambda im: im["id"])
        row_of = {im["id"]: i for i, im in enumerate(images)}
        anns = [a for a in data["annotations"]]
        kept = [a for a in anns if a["bbox"][2] > 0 and a["bbox"][3] > 0]
        kept.sort(key=lambda a: (row_of[a["image_id"]], a["id"]))
        counts = np.bincount([row_of[a["image_id"]] for a in kept], minlength=len(images))
        xywh = np.asarray([a["bbox"] for a in kept], dtype=np.float64).reshape(-1, 4)
        return CocoIndex(
            image_ids=np.asarray([im["id"] for im in images], dtype=np.int64),
            file_names=np.asarray([im["file_name"].encode() for im in images], dtype=bytes),
            heights=np.asarray([int(im.get("height") or 0) for im in images], dtype=np.int32),
            widths=np.asarray([int(im.get("width") or 0) for im in images], dtype=np.int32),
            ann_start=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            boxes=np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).astype(np.float32),
            labels=np.asarray([label_of[a["category_id"]] for a in kept], dtype=np.int64),
            iscrowd=np.asarray([bool(a.get("iscrowd", 0)) for a in kept], dtype=bool),
            category_ids=np.asarray([c["id"] for c in cats], dtype=np.int64),
            class_names=np.asarray([str(c.get("name", c["id"])) for c in cats]),
            num_degenerate_dropped=len(anns) - len(kept))

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(f".tmp-{os.getpid()}.npz")
        np.savez(tmp, **{k: getattr(self, k) for k in self.__dataclass_fields__ if k != "num_degenerate_dropped"},
                 num_degenerate_dropped=np.asarray(self.num_degenerate_dropped))
        os.replace(tmp, path)

    @staticmethod
    def load(path: Path) -> "CocoIndex":
        with np.load(path, allow_pickle=False) as z:
            fields = {k: z[k] for k in z.files}
        fields["num_degenerate_dropped"] = int(fields["num_degenerate_dropped"])
        return CocoIndex(**fields)


def _index_cache_path(annotations: Path) -> Path:
    """The cached index of an annotation file: named by its absolute path, size and modification time."""
    from ..paths import cache_dir

    st = annotations.stat()
    key = json.dumps([INDEX_VERSION, str(annotations.resolve()), st.st_size, st.st_mtime_ns])
    return cache_dir("coco-index") / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"


def load_index(annotations: str | Path) -> CocoIndex:
    """The flat index of a COCO instances JSON: from the cache, else parsed (and validated) and cached."""
    path = Path(annotations)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found; expected a COCO instances JSON")
    cached = _index_cache_path(path)
    if cached.is_file():
        try:
            return CocoIndex.load(cached)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a cache written by another version or cut short: built again below
    index = CocoIndex.from_json(path)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        index.save(cached)
    except OSError:  # a read-only cache: works, only slower next time
        pass
    return index


def verify_image_files(dataset: "CocoDetection") -> None:
    """Every image the dataset references exists and has a readable header (PIL reads only the header:
    ~70 us a file), so a missing or corrupt file is a one-line DataError before training, not mid-run.
    Done once per annotation file and image folder: a manifest in the cache (named by the index and the
    folder's modification time, which changes when files are added, removed or renamed) skips it next
    time. The orchestrator calls this in the driver; trials and DataLoader workers never do."""
    from ..paths import cache_dir

    folder = Path(dataset.images)
    index_key = _index_cache_path(Path(dataset.annotations)).stem
    key = json.dumps([index_key, str(folder.resolve()), folder.stat().st_mtime_ns])
    manifest = cache_dir("coco-index") / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.verified"
    if manifest.is_file():
        return
    paths = [dataset.path_of(i) for i in range(len(dataset))]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{missing[0]}: image file not found{more}; referenced by {dataset.annotations}, "
                        f"whose file_name values must be relative to {dataset.images}")
    for path in paths:
        FILES_OPENED[0] += 1
        try:
            with Image.open(path) as image:
                image.size
        except (OSError, SyntaxError, ValueError) as e:
            raise DataError(f"{path}: cannot read image ({_one_line(e)[:120]}); expected a readable JPEG "
                            f"or PNG file (referenced by {dataset.annotations})") from None
    try:
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(f"{len(paths)} image files checked\n")
    except OSError:
        pass


class CocoDetection(torch.utils.data.Dataset):
    """A COCO instances JSON and its image folder as a detection dataset.

    ``dataset[i]`` or ``dataset[(i, flip)]`` returns a dict:

    * ``image``: uint8 (3, h, w): the file's pixels, resized (see module docstring; bilinear with
      antialiasing, on the bytes). Bytes travel from the loader's workers to the device at a quarter
      of float32's size and are normalized there (:func:`normalize`);
    * ``boxes``: float32 (G, 4) xyxy, resized-image pixels (mirrored if flipped);
    * ``labels``: int64 (G,) contiguous; ``iscrowd``: bool (G,);
    * ``image_id``: int; ``orig_size``: (H, W) of the file; ``scale``: float, resized / original;
    * ``flipped``: bool, True only when ``flip`` was asked for and ``train`` is True.

    The trainer decides flips (deterministically, e.g. with probability ``flip_prob``) and passes
    ``(i, flip)``; a plain index never flips. Boxes are clipped to the image; a box that lies
    wholly outside it is left out of that item.

    Built from a :class:`CocoIndex` (flat arrays, cached): constructing a dataset of COCO's 118k
    images opens no image file and holds no pycocotools object. ``verify_files=True`` checks the
    image files (:func:`verify_image_files`, once per folder). ``coco`` (pycocotools COCO, the ground
    truth the model is evaluated on, degenerate boxes dropped) is built on first use, by evaluation.

    Attributes: ``category_ids`` (sorted), ``class_names``, ``num_classes``, ``image_ids`` (every
    image, with boxes or not, sorted), ``num_degenerate_dropped``, ``heights``, ``widths`` (from the
    JSON), ``index`` (the CocoIndex).
    """

    def __init__(self, annotations: str | Path, images: str | Path, *, train: bool, min_size: int,
                 max_size: int, flip_prob: float = 0.5, verify_files: bool = False) -> None:
        self.annotations = str(annotations)
        self.images = str(images)
        self.train = train
        self.min_size = min_size
        self.max_size = max_size
        self.flip_prob = flip_prob
        self.index = load_index(annotations)
        if not Path(images).is_dir():
            raise DataError(f"{images}: image folder not found (images of {annotations})")
        self.category_ids: List[int] = self.index.category_ids.tolist()
        self.class_names: List[str] = [str(n) for n in self.index.class_names.tolist()]
        self.num_classes = len(self.category_ids)
        self.image_ids: List[int] = self.index.image_ids.tolist()
        self.heights, self.widths = self.index.heights, self.index.widths
        self.num_degenerate_dropped = self.index.num_degenerate_dropped
        if self.num_degenerate_dropped:
            logger.warning("%s: dropped %d box(es) with zero width or height", annotations, self.num_degenerate_dropped)
        self._coco: Optional[COCO] = None
        if verify_files:
            verify_image_files(self)

    @property
    def coco(self) -> COCO:
        """pycocotools' COCO of the annotation file (degenerate boxes dropped): evaluation's ground truth."""
        if self._coco is None:
            self._coco = load_coco(self.annotations, drop_degenerate=True)
        return self._coco

    def path_of(self, i: int) -> str:
        return os.path.join(self.images, self.index.file_names[i].decode())

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, item: int | Tuple[int, bool]) -> Dict[str, Any]:
        index, flip = (item[0], bool(item[1])) if isinstance(item, tuple) else (item, False)
        i = operator.index(index)
        FILES_OPENED[0] += 1
        raw = decode_rgb(self.path_of(i))  # (3, H, W) uint8
        height, width = int(raw.shape[1]), int(raw.shape[2])
        scale = resize_scale(height, width, self.min_size, self.max_size)
        new_h, new_w = int(height * scale + 0.5), int(width * scale + 0.5)
        image = raw
        if (new_h, new_w) != (height, width):  # on the bytes: a quarter of float32's memory traffic
            image = resize_image(raw, [new_h, new_w], antialias=True)

        lo, hi = int(self.index.ann_start[i]), int(self.index.ann_start[i + 1])
        boxes = torch.from_numpy(self.index.boxes[lo:hi] * np.float32(scale))  # (G, 4) xyxy, resized pixels
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, new_w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, new_h)
        inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        labels = torch.from_numpy(self.index.labels[lo:hi])[inside]
        iscrowd = torch.from_numpy(self.index.iscrowd[lo:hi])[inside]
        boxes = boxes[inside]

        flipped = flip and self.train
        if flipped:
            image = image.flip(-1)
            boxes = torch.stack([new_w - boxes[:, 2], boxes[:, 1], new_w - boxes[:, 0], boxes[:, 3]], dim=1)
        return {
            "image": image.contiguous(),
            "boxes": boxes,
            "labels": labels,
            "iscrowd": iscrowd,
            "image_id": int(self.image_ids[i]),
            "orig_size": (height, width),
            "scale": float(scale),
            "flipped": flipped,
        }

    def __repr__(self) -> str:
        return (f"CocoDetection({self.annotations!r}, {len(self)} images, {self.num_classes} classes, "
                f"train={self.train}, min_size={self.min_size}, max_size={self.max_size})")


# ----------------------------------------------------------------------------------------------
# batching and results


def collate(samples: List[Dict[str, Any]], size_divisibility: int = 32) -> Dict[str, Any]:
    """Pad to a common, divisible size: ``images`` (N, 3, Hp, Wp) (Hp, Wp: the batch's largest image
    rounded up to a multiple of ``size_divisibility``), ``image_sizes`` [(h, w)] before padding, and
    the per-image lists ``boxes``, ``labels``, ``iscrowd``, ``image_ids``, ``orig_sizes``, ``scales``,
    ``flipped``.

    ``images`` is uint8 when every image is at its file's size (the pixels, zero padding), to be
    normalized where it is used (:func:`normalize`, on the device); else float32, normalized here with
    the ImageNet mean/std, padding 0 after normalization. Either way ``normalize(images, sizes)`` is
    the same float32 tensor, to the bit.
    """
    if not samples:
        raise ValueError("collate: empty batch")
    sizes = [(int(s["image"].shape[1]), int(s["image"].shape[2])) for s in samples]
    d = max(1, size_divisibility)
    pad_h = -(-max(h for h, _ in sizes) // d) * d
    pad_w = -(-max(w for _, w in sizes) // d) * d
    if all(s["image"].dtype == torch.uint8 for s in samples):
        images = torch.zeros((len(samples), 3, pad_h, pad_w), dtype=torch.uint8)
        for padded, sample, (h, w) in zip(images, samples, sizes):
            padded[:, :h, :w] = sample["image"]
    else:
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
        images = torch.zeros((len(samples), 3, pad_h, pad_w), dtype=torch.float32)
        for padded, sample, (h, w) in zip(images, samples, sizes):
            image = sample["image"]
            if image.dtype == torch.uint8:
                image = unit_floats(image)
            padded[:, :h, :w] = (image - mean) / std
    return {
        "images": images,
        "image_sizes": sizes,
        "boxes": [s["boxes"] for s in samples],
        "labels": [s["labels"] for s in samples],
        "iscrowd": [s["iscrowd"] for s in samples],
        "image_ids": [s["image_id"] for s in samples],
        "orig_sizes": [s["orig_size"] for s in samples],
        "scales": [s["scale"] for s in samples],
        "flipped": [s["flipped"] for s in samples],
    }


_MEAN_STD: Dict[torch.device, Tuple[torch.Tensor, torch.Tensor]] = {}  # normalize's constants, per device


def normalize(images: torch.Tensor, image_sizes: Sequence[Tuple[int, int]]) -> torch.Tensor:
    """A collated batch's ``images`` as the model takes them, on their device: float32, normalized with
    the ImageNet mean/std, 0 in the padding. A uint8 batch is converted with the very operations
    collate uses for float batches (so the values are the same to the bit); a float batch is
    returned as it is. The padding is cleared by slices (no host-to-device copy, no sync)."""
    if images.dtype != torch.uint8:
        return images
    if images.device not in _MEAN_STD:
        _MEAN_STD[images.device] = tuple(torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1).to(images.device)
                                         for v in (IMAGENET_MEAN, IMAGENET_STD))
    mean, std = _MEAN_STD[images.device]
    out = (unit_floats(images) - mean) / std
    pad_h, pad_w = out.shape[-2:]
    for padded, (h, w) in zip(out, image_sizes):
        if h < pad_h:
            padded[:, h:, :] = 0.0
        if w < pad_w:
            padded[:, :h, w:] = 0.0
    return out


def to_coco_results(outputs: Sequence[Dict[str, Any]], image_ids: Sequence[int], scales: Sequence[float],
                    category_ids: Sequence[int]) -> List[Dict[str, Any]]:
    """Per-image detections -> COCO result dicts.

    ``outputs[k]``: ``boxes`` (D, 4) xyxy in resized pixels, ``scores`` (D,), ``labels`` (D,)
    contiguous. Returns ``{"image_id", "category_id" (the COCO id), "bbox" [x, y, w, h] in
    original-image pixels, "score"}`` with plain Python numbers.
    """
    if not (len(outputs) == len(image_ids) == len(scales)):
        raise ValueError(f"to_coco_results: {len(outputs)} outputs, {len(image_ids)} image_ids and "
                         f"{len(scales)} scales; expected one of each per image")
    results: List[Dict[str, Any]] = []
    for out, image_id, scale in zip(outputs, image_ids, scales):
        boxes = torch.as_tensor(out["boxes"]).detach().to("cpu", torch.float64).reshape(-1, 4) / float(scale)
        scores = torch.as_tensor(out["scores"]).detach().to("cpu", torch.float64).reshape(-1).tolist()
        labels = torch.as_tensor(out["labels"]).detach().to("cpu").reshape(-1).tolist()
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        for bbox, score, label in zip(xywh, scores, labels):
            results.append({"image_id": int(image_id), "category_id": int(category_ids[int(label)]),
                            "bbox": bbox, "score": score})
    return results
