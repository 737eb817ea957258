"""A backbone pre-trained on synthetic data, the small regime's stand-in for ImageNet.

    python -m retina.pretrain [--profile cpu] [key=value ...]      # prints the weights file it made or found

The paper fine-tuned an ImageNet ResNet with frozen BatchNorm. No ImageNet weights can be had offline,
so ``model.backbone_weights=synthetic`` starts the detector from a ResNet trained here first, once, to
classify single synthetic objects: every class the generator can draw (6 shapes x 8 colour families,
48 classes, a superset of any detection task's classes, as ImageNet's 1,000 are of COCO's 80) on the
generator's textured, cluttered backgrounds, at a low resolution (``pretrain.image_size``; ImageNet's
224 px against COCO's 600-800 px is the same kind of gap). BatchNorm trains here, so its statistics
are real and the detector can freeze them (``model.backbone_norm=frozen_bn``).

The result is cached under the user cache folder's ``pretrained/`` (retina/paths.py), named by a hash
of everything that determines it (the ResNet depth, the ``pretrain`` settings, the generator's
version): the first call pays for it (rendering and training, printed with its progress), every
later one reads the file. Several processes asking at once: one trains, the others wait for its file.
Deterministic on the CPU, like training.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from . import config as config_lib
from .paths import cache_dir

PRETRAIN_VERSION = 1  # bump when the procedure below changes what it produces
SPEC = "synthetic"  # model.backbone_weights that asks for this backbone
VALIDATION_IMAGES = 1000  # the first images, held out: the accuracy reported


def settings_of(cfg_pretrain) -> Dict[str, object]:
    """The ``pretrain`` section as a plain dict: everything that decides the weights (num_threads included:
    the CPU kernels' sums split by thread, so the count changes the last bits of every weight)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg_pretrain, resolve=True) if not isinstance(cfg_pretrain, dict) else dict(cfg_pretrain)


def weights_path(depth: int, cfg_pretrain) -> Path:
    """Where the backbone of these settings lives (whether or not it exists yet)."""
    from .data.synthetic import GENERATOR_VERSION

    payload = {"version": PRETRAIN_VERSION, "generator": GENERATOR_VERSION, "depth": depth, **settings_of(cfg_pretrain)}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir("pretrained") / f"resnet{depth}-{digest}.pth"


def _render(cfg_pretrain) -> tuple:
    """(images uint8 (M, 3, S, S), labels int64 (M,)): one object of a random class per image."""
    from .config import SyntheticConfig
    from .data import synthetic

    p = cfg_pretrain
    size = int(p.image_size)
    s = synthetic.RenderSettings.of(replace(
        SyntheticConfig(), seed=int(p.seed), num_train=int(p.num_images), num_val=0, image_size=size,
        num_classes=synthetic.MAX_CLASSES, min_objects=1, max_objects=1,
        min_object_size=max(2.0, float(p.min_object_fraction) * size), max_object_size=float(p.max_object_fraction) * size,
        easy_distractors=int(p.easy_distractors), hard_distractors=0))
    pixels, labels = [], []
    for i in range(s.num_train):
        image, objects = synthetic.render(synthetic.split_rng(s.seed, "train", i), s)
        if objects:  # an object that found no place is left out, as in detection data (rare)
            pixels.append(image)
            labels.append(objects[0][1])
    x = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels, dtype=torch.int64)


def pretrain(depth: int, cfg_pretrain, log=print) -> Dict[str, object]:
    """Train a torchvision ResNet-``depth`` (BatchNorm trainable) to classify the synthetic classes;
    returns {state_dict, accuracy, images, render_s, train_s}."""
    import torchvision

    from .data.coco import IMAGENET_MEAN, IMAGENET_STD, unit_floats
    from .data.synthetic import MAX_CLASSES

    p = cfg_pretrain
    start = time.perf_counter()
    x, y = _render(p)
    render_s = time.perf_counter() - start
    log(f"pretrain: rendered {len(y)} images of {p.image_size} px ({MAX_CLASSES} classes) in {render_s:.0f} s")
    torch.manual_seed(int(p.seed))
    net = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=MAX_CLASSES)
    optimizer = torch.optim.SGD(net.parameters(), lr=float(p.lr), momentum=0.9, weight_decay=float(p.weight_decay),
                                nesterov=True)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    g = torch.Generator().manual_seed(int(p.seed))
    held_out = min(VALIDATION_IMAGES, len(y) // 10)
    iterations, batch = int(p.iterations), int(p.batch_size)
    net.train()
    start = time.perf_counter()
    for it in range(iterations):
        # cosine from lr to 0 after a linear warm-up
        lr = float(p.lr) * min(1.0, (it + 1) / max(1, int(p.warmup_iters))) * 0.5 * (1 + math.cos(math.pi * it / iterations))
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = torch.randint(held_out, len(y), (batch,), generator=g)
        images = (unit_floats(x[idx]) - mean) / std
        flip = torch.rand(batch, generator=g) < 0.5
        images[flip] = images[flip].flip(-1)
        loss = F.cross_entropy(net(images), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (it + 1) % max(1, iterations // 10) == 0 or it + 1 == iterations:
            elapsed = time.perf_counter() - start
            log(f"pretrain: it {it + 1}/{iterations} | loss {loss.item():.3f} | lr {lr:.4f} | "
                f"ETA {elapsed / (it + 1) * (iterations - it - 1):.0f} s")
    train_s = time.perf_counter() - start
    net.eval()
    with torch.no_grad():
        correct = sum(int((net((unit_floats(x[i:i + 256]) - mean) / std).argmax(1) == y[i:i + 256]).sum())
                      for i in range(0, held_out, 256))
    accuracy = correct / max(1, held_out)
    log(f"pretrain: {accuracy:.1%} accuracy on {held_out} held-out images; trained in {train_s:.0f} s")
    return {"state_dict": net.state_dict(), "accuracy": accuracy, "images": len(y), "render_s": render_s,
            "train_s": train_s}


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # one process trains; the others wait here for its file
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure_pretrained(depth: int, cfg_pretrain, log=_to_stderr) -> Path:
    """The weights file of these settings, trained now if it is not cached (atomically written).
    Progress goes to ``log`` (stderr by default: the benchmarks' stdout is their JSON)."""
    path = weights_path(depth, cfg_pretrain)
    if path.is_file():
        return path
    with _lock(path):
        if path.is_file():  # made by another process while this one waited
            return path
        previous = torch.get_num_threads()
        torch.set_num_threads(int(cfg_pretrain.num_threads))  # the caller's count would change the weights
        # the caller's random state is left as it was: a trial that pre-trains must train exactly as
        # one that finds the file cached
        py_state = random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                result = pretrain(depth, cfg_pretrain, log=log)
        finally:
            torch.set_num_threads(previous)
            random.setstate(py_state)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        torch.save(result["state_dict"], tmp)
        os.replace(tmp, path)
        info = {k: v for k, v in result.items() if k != "state_dict"}
        path.with_suffix(".json").write_text(json.dumps({**info, "depth": depth, **settings_of(cfg_pretrain)}, indent=1))
    return path


def info(path: Path) -> Optional[dict]:
    """What the pre-training of a cached file reported (accuracy, images, seconds), if recorded."""
    meta = Path(path).with_suffix(".json")
    return json.loads(meta.read_text()) if meta.is_file() else None


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retina.pretrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="key=value (pretrain.*, model.depth)")
    parser.add_argument("--profile", default=config_lib.DEFAULT_PROFILE, help="cpu (default), gpu or paper")
    args = parser.parse_args(argv)
    try:
        cfg = config_lib.load_config(args.profile, overrides=args.overrides)
    except config_lib.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    path = ensure_pretrained(int(cfg.model.depth), cfg.pretrain)
    print(json.dumps({"weights": str(path), **(info(path) or {}), "seconds": round(time.perf_counter() - start, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
