"""Paper-scale costs on the CPU, one JSON line (a script, not a test).

    python benchmarks/scale.py [--sizes-from COCO_ANNOTATIONS.json] [--images 118287] [--quick]

* ``ohem_ms_per_image``: retina.modeling.losses.ohem_select on 16 images of 600x1000 (padded to
  608x1024: 116,712 anchors), random losses, 50 positives, batch 128, NMS 0.7, one thread; also the
  paper's 1:3 variant at NMS 0.5 (``ohem_1to3_ms_per_image``, 4 images: with random losses the
  positives lie anywhere in the order, the worst case, where the scan must reach the last positive;
  it finishes through the anchors' overlap graph, whose one-time build is ``ohem_graph_build_s``).
* ``ohem_equal_to_full``: the same kept masks as NMS over all anchors, on 160x224 inputs, for the
  paper's settings and 1:3.
* ``coco_index_build_s``: parsing a COCO-sized annotation file it generates (``--images`` images,
  ~7.3 boxes each with polygon segmentations, like train2017) into the cached flat index, once, as
  the driver's preflight does; ``coco_build_s`` and ``coco_files_opened``: building the training
  dataset from it in a fresh process, as a trial does (the cache read).
* ``worker_rss_mb``: the private memory (smaps Private_Clean + Private_Dirty) of one DataLoader
  worker after 1,000 items of that dataset (1,000 distinct 640x480 JPEGs behind the file names).
* ``padding_share``: padded pixels / all pixels over 100 batches of 16 (600/1000 px, divisible by
  32), with and without aspect-ratio grouping; image sizes from ``--sizes-from`` (e.g. coco32's real
  COCO images) or a stated COCO-like mixture.
* ``step_device_reads``: host reads of device values (item, float, int, bool, tolist, nonzero)
  during one training step of a tiny model (a log step excluded), counted with a TorchFunctionMode.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

READS = ("item", "__bool__", "__float__", "__int__", "tolist", "nonzero", "__index__")


# ----------------------------------------------------------------------------------------------
# OHEM


def _ohem_case(h: int, w: int, n: int, positives: int, seed: int):
    from retina.modeling.anchors import AnchorGenerator, feature_shapes
    from retina.modeling.matcher import BACKGROUND

    anchors = AnchorGenerator()(feature_shapes(h, w), device=torch.device("cpu"))
    g = torch.Generator().manual_seed(seed)
    losses = torch.rand(n, len(anchors), generator=g)
    labels = torch.full((n, len(anchors)), BACKGROUND)
    for i in range(n):
        labels[i, torch.randperm(len(anchors), generator=g)[:positives]] = 0
    return losses, anchors, labels


def ohem_figures(quick: bool) -> dict:
    """The OHEM figures, on one thread."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _ohem_figures(quick)
    finally:  # the caller's thread count (in-process callers, the tests, go on with it)
        torch.set_num_threads(previous_threads)


def _ohem_figures(quick: bool) -> dict:
    from torchvision.ops import nms

    from retina.modeling import nms_graph
    from retina.modeling.matcher import IGNORE
    from retina.modeling.sampling import loss_order_keys, ohem_select

    n = 4 if quick else 16
    losses, anchors, labels = _ohem_case(*((320, 480) if quick else (608, 1024)), n, 50, 0)
    ohem_select(losses[:1], anchors, labels[:1], 128, 0.7, None)  # warm-up
    start = time.perf_counter()
    ohem_select(losses, anchors, labels, 128, 0.7, None)
    per_image = (time.perf_counter() - start) * 1000 / n
    m = 1 if quick else 4
    # the 1:3 scan reaches the last positive: through the anchors' overlap graph, built once per anchor set
    nms_graph._cache.clear()
    start = time.perf_counter()
    nms_graph.overlap_graph(anchors, 0.5)
    graph_build_s = time.perf_counter() - start
    start = time.perf_counter()
    ohem_select(losses[:m], anchors, labels[:m], 128, 0.5, 0.25)
    per_image_1to3 = (time.perf_counter() - start) * 1000 / m

    def full(loss, lab, batch, thr, ratio):
        cand = (lab != IGNORE).nonzero(as_tuple=True)[0]
        order = cand[loss_order_keys(loss)[cand].sort(descending=True).indices]
        keep = order[nms(anchors_small[order].float(), torch.arange(len(order), 0, -1, dtype=torch.float32), thr)]
        mask = torch.zeros_like(lab, dtype=torch.bool)
        if ratio is None:
            mask[keep[:batch]] = True
            return mask
        pos, neg = keep[lab[keep] >= 0], keep[lab[keep] < 0]
        num_pos = min(len(pos), int(batch * ratio))
        mask[pos[:num_pos]] = True
        mask[neg[:min(len(neg), int(round(num_pos * (1 - ratio) / ratio)), batch - num_pos)]] = True
        return mask

    equal = True
    for seed in range(3):
        small_losses, anchors_small, small_labels = _ohem_case(160, 224, 3, 25, seed)
        for batch, thr, ratio in ((128, 0.7, None), (256, 0.5, None), (128, 0.5, 0.25), (512, 0.5, 0.25)):
            fast = ohem_select(small_losses, anchors_small, small_labels, batch, thr, ratio)
            equal &= all(torch.equal(fast[i], full(small_losses[i], small_labels[i], batch, thr, ratio)) for i in range(3))
    return {"ohem_anchors_per_image": int(anchors.shape[0]), "ohem_ms_per_image": round(per_image, 2),
            "ohem_1to3_ms_per_image": round(per_image_1to3, 1), "ohem_graph_build_s": round(graph_build_s, 2),
            "ohem_equal_to_full": bool(equal)}


# ----------------------------------------------------------------------------------------------
# the COCO loader at 118k images


def write_coco_like(folder: Path, num_images: int, distinct_files: int = 1000) -> Path:
    """A train2017-sized instances JSON (polygons included) whose file names point at ``distinct_files``
    real 640x480 JPEGs."""
    from PIL import Image

    images_dir = folder / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(distinct_files):
        pixels = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images_dir / f"{i:06d}.jpg", quality=80)
    images, annotations = [], []
    for i in range(num_images):
        images.append({"id": i + 1, "file_name": f"{i % distinct_files:06d}.jpg", "width": 640, "height": 480})
        for _ in range(int(rng.poisson(7.3))):
            x, y = float(rng.uniform(0, 500)), float(rng.uniform(0, 380))
            w, h = float(rng.uniform(4, 140)), float(rng.uniform(4, 100))
            poly = [float(v) for v in rng.uniform(0, 400, size=24)]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(rng.integers(1, 81)),
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0, "segmentation": [poly]})
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": k, "name": f"c{k}"} for k in range(1, 81)]}
    path = folder / "instances_train.json"
    path.write_text(json.dumps(data))
    return path


WORKER_PROBE = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
from retina.data import coco
start = time.perf_counter()
dataset = coco.CocoDetection(sys.argv[2], sys.argv[3], train=True, min_size=600, max_size=1000)
build = time.perf_counter() - start
opened = coco.FILES_OPENED[0]

def private_kb():
    fields = {}
    for line in open("/proc/self/smaps_rollup"):
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":"):
            fields[parts[0][:-1]] = parts[1]
    return int(fields.get("Private_Clean", 0)) + int(fields.get("Private_Dirty", 0))

class Probe(torch.utils.data.Dataset):
    def __len__(self):
        return 1000
    def __getitem__(self, i):
        item = dataset[i]
        return {"private_kb": private_kb(), "n": int(item["boxes"].shape[0])}

loader = torch.utils.data.DataLoader(Probe(), batch_size=None, num_workers=1)
first = last = None
for sample in loader:
    first = sample["private_kb"] if first is None else first
    last = sample["private_kb"]
print(json.dumps({"build_s": build, "opened": opened, "worker_private_mb": last / 1024,
                  "worker_private_first_mb": first / 1024, "images": len(dataset)}))
"""


def coco_figures(num_images: int, workdir: Path) -> dict:
    from retina.data.coco import load_index

    start = time.perf_counter()
    ann = write_coco_like(workdir, num_images)
    written = time.perf_counter() - start
    start = time.perf_counter()
    index = load_index(ann)  # the driver's preflight: parse, validate, cache
    index_s = time.perf_counter() - start
    probe = workdir / "probe.py"
    probe.write_text(WORKER_PROBE)
    out = subprocess.run([sys.executable, str(probe), str(ROOT), str(ann), str(workdir / "images")],
                         capture_output=True, text=True, env=dict(os.environ), timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    trial = json.loads(out.stdout.strip().splitlines()[-1])
    return {"coco_images": int(len(index.image_ids)), "coco_boxes": int(len(index.boxes)),
            "coco_json_mb": round(ann.stat().st_size / 2**20, 1), "coco_json_written_s": round(written, 1),
            "coco_index_build_s": round(index_s, 1), "coco_build_s": round(trial["build_s"], 2),
            "coco_files_opened": trial["opened"], "worker_rss_mb": round(trial["worker_private_mb"], 1),
            "worker_rss_first_item_mb": round(trial["worker_private_first_mb"], 1)}


# ----------------------------------------------------------------------------------------------
# padding with and without aspect-ratio grouping


COCO_LIKE_MIX = [((480, 640), 0.62), ((427, 640), 0.14), ((640, 480), 0.11), ((640, 427), 0.05), (None, 0.08)]


def image_sizes(sizes_from: str, count: int, rng: random.Random):
    if sizes_from:
        data = json.loads(Path(sizes_from).read_text())
        pool = [(im["height"], im["width"]) for im in data["images"]]
        return [rng.choice(pool) for _ in range(count)], f"resampled from the {len(pool)} images of {sizes_from}"
    out = []
    for _ in range(count):
        r, acc = rng.random(), 0.0
        for size, p in COCO_LIKE_MIX:
            acc += p
            if r <= acc:
                break
        if size is None:
            aspect = 2 ** rng.uniform(-1, 1)
            size = (int(640 / max(aspect, 1)), int(640 * min(aspect, 1)))
        out.append(size)
    return out, "COCO-like mixture: 62% 480x640, 14% 427x640, 11% 640x480, 5% 640x427, 8% other aspects"


def padding_figures(sizes_from: str) -> dict:
    from retina.data.coco import resize_scale
    from retina.data.samplers import StreamBatchSampler, aspect_ratio_groups

    rng = random.Random(0)
    sizes, source = image_sizes(sizes_from, 4000, rng)
    resized = []
    for h, w in sizes:
        s = resize_scale(h, w, 600, 1000)
        resized.append((int(h * s + 0.5), int(w * s + 0.5)))

    def share(groups):
        used = padded = 0
        for batch in StreamBatchSampler(len(sizes), 16, 100, seed=0, flip_prob=0.0, groups=groups):
            hs = [resized[i][0] for i, _ in batch]
            ws = [resized[i][1] for i, _ in batch]
            ph, pw = -(-max(hs) // 32) * 32, -(-max(ws) // 32) * 32
            used += sum(h * w for h, w in zip(hs, ws))
            padded += len(batch) * ph * pw
        return 1 - used / padded

    groups = aspect_ratio_groups([h for h, _ in sizes], [w for _, w in sizes])
    return {"padding_share": round(share(groups), 4), "padding_share_ungrouped": round(share(None), 4),
            "padding_sizes": source}


# ----------------------------------------------------------------------------------------------
# device reads in the training step


def step_reads() -> dict:
    from torch.overrides import TorchFunctionMode

    from retina.config import load_config
    from retina.data.loaders import build_datasets, make_loader
    from retina.data.samplers import StreamBatchSampler
    from retina.engine.step import apply_gradients, losses as batch_losses
    from retina.modeling.losses import from_config as loss_from_config
    from retina.build import build_model, resolve_backbone

    cache = tempfile.mkdtemp(prefix="scale-synthetic-")
    cfg = load_config("cpu", overrides=[
        "data.synthetic.num_train=8", "data.synthetic.num_val=2", "data.synthetic.image_size=64",
        "data.synthetic.max_object_size=48", "data.min_size=64", "data.max_size=64", "anchors.base_size=8",
        "model.fpn_channels=32", "model.head_convs=1", "train.batch_size=4", "model.backbone_weights=",
        "model.backbone_norm=bn", "model.freeze_at=0", f"data.synthetic.cache_dir={cache}"])
    train, _ = build_datasets(cfg)
    model = build_model(cfg, train.num_classes, resolve_backbone(cfg))
    loss_fn = loss_from_config(cfg.loss)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batch = next(iter(make_loader(train, StreamBatchSampler(len(train), 4, 1, 0, 0.5), cfg, torch.device("cpu"), 4)))
    calls = []

    class Count(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if name in READS:
                calls.append(name)
            return func(*args, **(kwargs or {}))

    with Count():
        losses = batch_losses(model, loss_fn, batch, cfg, torch.device("cpu"))
        apply_gradients(losses.total, opt, list(model.parameters()), 5.0)
    return {"step_device_reads": len(calls), "step_device_read_calls": sorted(set(calls))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/scale.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-from", default="", help="a COCO annotation file whose image sizes padding_share uses")
    parser.add_argument("--images", type=int, default=118287, help="images in the generated annotation file")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test of the script, not its figures")
    args = parser.parse_args(argv)
    out = {}
    out.update(ohem_figures(args.quick))
    out.update(padding_figures(args.sizes_from))
    out.update(step_reads())
    with tempfile.TemporaryDirectory(prefix="scale-coco-") as tmp:
        os.environ.setdefault("RETINA_CACHE_DIR", str(Path(tmp) / "cache"))
        out.update(coco_figures(2000 if args.quick else args.images, Path(tmp)))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
