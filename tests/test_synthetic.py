"""The synthetic shapes dataset: deterministic, the sizes and shapes it promises, real COCO files,
and a cache that is written once and safe to race for."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retina.config import SyntheticConfig
from retina.data import CocoDetection
from retina.data import synthetic
from retina.data.synthetic import SHAPES, ensure_synthetic, generate

SMALL = SyntheticConfig(seed=3, num_train=12, num_val=4)


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _annotations(root: Path, split: str = "train") -> dict:
    return json.loads((root / split / "instances.json").read_text())


@pytest.fixture(scope="module")
def default_sizes(tmp_path_factory) -> dict:
    """Default object sizes, aspect ratios and classes, over enough images to see their spread."""
    root = tmp_path_factory.mktemp("defaults")
    generate(replace(SyntheticConfig(), num_train=128, num_val=1), root)
    return _annotations(root)


def test_same_seed_gives_identical_json_and_image_bytes(tmp_path):
    generate(SMALL, tmp_path / "a")
    generate(SMALL, tmp_path / "b")
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 2 + SMALL.num_train + SMALL.num_val
    assert a == b


def test_a_pool_of_processes_writes_the_same_files_as_one_process(tmp_path, monkeypatch):
    """Large splits are drawn by worker processes (PARALLEL_MIN_IMAGES); here every split is."""
    generate(SMALL, tmp_path / "serial")
    monkeypatch.setattr(synthetic, "PARALLEL_MIN_IMAGES", 1)
    monkeypatch.setattr(synthetic.os, "cpu_count", lambda: 2)
    generate(SMALL, tmp_path / "pool")
    assert _files(tmp_path / "pool") == _files(tmp_path / "serial")


def test_another_seed_gives_other_images_and_boxes(tmp_path):
    generate(SMALL, tmp_path / "a")
    generate(replace(SMALL, seed=4), tmp_path / "b")
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys()
    assert a["train/images/000000.png"] != b["train/images/000000.png"]
    boxes = lambda root: [x["bbox"] for x in _annotations(root)["annotations"]]  # noqa: E731
    assert boxes(tmp_path / "a") != boxes(tmp_path / "b")


def test_train_and_val_splits_differ(tmp_path):
    generate(SMALL, tmp_path)
    assert (tmp_path / "train/images/000000.png").read_bytes() != (tmp_path / "val/images/000000.png").read_bytes()


def test_default_object_sizes_span_three_octaves(default_sizes):
    cfg = SyntheticConfig()
    sizes = np.array([math.sqrt(a["bbox"][2] * a["bbox"][3]) for a in default_sizes["annotations"]])
    # log-uniform over [12, 96], rounded to whole pixels
    assert sizes.min() >= 0.95 * cfg.min_object_size and sizes.max() <= 1.05 * cfg.max_object_size
    assert math.log2(sizes.max() / sizes.min()) >= 2.9
    octave = np.floor(np.log2(sizes / cfg.min_object_size)).clip(0, 2)
    counts = np.bincount(octave.astype(int), minlength=3)
    assert (counts >= 0.15 * len(sizes)).all(), counts  # every octave well populated


def test_aspect_ratios_lie_within_half_and_two_and_use_the_range(default_sizes):
    ratios = np.array([a["bbox"][3] / a["bbox"][2] for a in default_sizes["annotations"]])
    assert ratios.min() >= 0.5 and ratios.max() <= 2.0
    assert (ratios < 0.7).any() and (ratios > 1.4).any()


def test_every_category_is_used_and_named_by_shape(tmp_path):
    generate(replace(SMALL, num_classes=6, num_train=40), tmp_path)
    data = _annotations(tmp_path)
    assert [(c["id"], c["name"]) for c in data["categories"]] == list(enumerate(SHAPES, start=1))
    assert {a["category_id"] for a in data["annotations"]} == set(range(1, 7))


def test_boxes_lie_inside_the_image_and_object_counts_are_in_range(default_sizes):
    cfg = SyntheticConfig()
    size = {img["id"]: (img["width"], img["height"]) for img in default_sizes["images"]}
    for a in default_sizes["annotations"]:
        x, y, w, h = a["bbox"]
        width, height = size[a["image_id"]]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= width and y + h <= height
        assert a["iscrowd"] == 0 and a["area"] == w * h
    per_image = np.bincount([a["image_id"] for a in default_sizes["annotations"]], minlength=len(size) + 1)[1:]
    assert per_image.min() >= cfg.min_objects and per_image.max() <= cfg.max_objects


def test_generated_data_loads_through_coco_detection(tmp_path):
    generate(SMALL, tmp_path)
    dataset = CocoDetection(tmp_path / "train" / "instances.json", tmp_path / "train" / "images",
                            train=True, min_size=256, max_size=256)
    assert len(dataset) == SMALL.num_train and dataset.num_classes == SMALL.num_classes
    assert dataset.num_degenerate_dropped == 0
    sample = dataset[(0, True)]
    assert sample["image"].shape == (3, 256, 256) and sample["scale"] == 2.0 and sample["flipped"]
    anns = dataset.coco.imgToAnns[sample["image_id"]]
    assert len(sample["boxes"]) == len(anns) >= SMALL.min_objects
    assert sorted(sample["labels"].tolist()) == sorted(a["category_id"] - 1 for a in anns)


def test_ensure_synthetic_generates_once_and_then_reuses_the_cache(tmp_path, monkeypatch):
    calls = []
    real_generate = synthetic.generate
    monkeypatch.setattr(synthetic, "generate", lambda cfg, out: (calls.append(out), real_generate(cfg, out)))
    train, val = ensure_synthetic(SMALL, tmp_path)
    json_mtime = Path(train["annotations"]).stat().st_mtime_ns
    assert Path(train["annotations"]).is_file() and Path(val["images"]).is_dir()
    again = ensure_synthetic(SMALL, tmp_path)
    assert again == (train, val) and len(calls) == 1
    assert Path(train["annotations"]).stat().st_mtime_ns == json_mtime
    assert [p.name for p in tmp_path.iterdir()] == [Path(train["annotations"]).parent.parent.name]  # no leftovers


def test_cache_folder_depends_on_generator_fields_not_on_cache_dir(tmp_path):
    a, _ = ensure_synthetic(replace(SMALL, cache_dir=str(tmp_path)))
    b, _ = ensure_synthetic(SMALL, tmp_path)
    c, _ = ensure_synthetic(replace(SMALL, seed=5), tmp_path)
    assert a == b and Path(c["annotations"]).parent.parent != Path(a["annotations"]).parent.parent
    assert Path(a["annotations"]).is_relative_to(tmp_path)


def test_ensure_synthetic_that_loses_the_race_uses_the_winners_copy(tmp_path, monkeypatch):
    real_generate = synthetic.generate
    winner = {}

    def generate_while_another_process_finishes_first(cfg, out):
        if not winner:  # the other process generates and renames its copy into place meanwhile
            winner["started"] = True
            winner["paths"] = ensure_synthetic(SMALL, tmp_path)
            winner["mtime"] = Path(winner["paths"][0]["annotations"]).stat().st_mtime_ns
        real_generate(cfg, out)

    monkeypatch.setattr(synthetic, "generate", generate_while_another_process_finishes_first)
    paths = ensure_synthetic(SMALL, tmp_path)
    assert paths == winner["paths"]
    assert Path(paths[0]["annotations"]).stat().st_mtime_ns == winner["mtime"]
    assert len(list(tmp_path.iterdir())) == 1  # the loser's temporary copy is gone


def test_command_line_writes_a_dataset_and_refuses_unknown_keys(tmp_path, capsys):
    assert synthetic.main([str(tmp_path), "num_train=2", "num_val=1", "seed=9"]) == 0
    assert len(_annotations(tmp_path, "val")["images"]) == 1
    assert synthetic.main([str(tmp_path / "x"), "num_trian=2"]) == 2
    assert "num_trian" in capsys.readouterr().err


def test_objects_stand_out_from_the_background(tmp_path):
    """A filled rectangle's pixels differ from the background just outside its box."""
    generate(replace(SMALL, num_train=30, min_objects=1, max_objects=1, easy_distractors=0, hard_distractors=0),
             tmp_path)
    data = _annotations(tmp_path)
    files = {img["id"]: img["file_name"] for img in data["images"]}
    checked = 0
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        if a["category_id"] != 1 or min(w, h) < 16:
            continue
        pixels = np.asarray(Image.open(tmp_path / "train" / "images" / files[a["image_id"]]), dtype=np.float32)
        inside = pixels[y + 2:y + h - 2, x + 2:x + w - 2].reshape(-1, 3).mean(0)
        ring = np.concatenate([pixels[max(0, y - 3):y, x:x + w].reshape(-1, 3),
                               pixels[y + h:y + h + 3, x:x + w].reshape(-1, 3)])
        if len(ring) == 0:
            continue
        assert np.linalg.norm(inside - ring.mean(0)) > 30.0
        checked += 1
    assert checked >= 3


def test_a_script_without_a_main_guard_can_generate_a_large_split(tmp_path):
    """retina.train.fit from a user's script with no ``if __name__ == "__main__":`` guard: a split of
    >= PARALLEL_MIN_IMAGES images is drawn by worker processes, which must not re-import the script
    (multiprocessing's spawn did: BrokenProcessPool)."""
    import subprocess
    import sys

    script = tmp_path / "user_script.py"
    script.write_text(f"""
from retina.config import load_config
from retina.train import fit
cfg = load_config("cpu", overrides=[
    "data.synthetic.num_train=300", "data.synthetic.num_val=4", "data.synthetic.image_size=32",
    "data.synthetic.max_object_size=24", "data.min_size=32", "data.max_size=32", "anchors.base_size=4",
    "model.fpn_channels=32", "model.head_convs=1", "train.iterations=1", "train.batch_size=2",
    "model.backbone_weights=", "model.backbone_norm=bn", "model.freeze_at=0",
    "data.synthetic.cache_dir={tmp_path / 'cache'}"])
print("AP", fit(cfg)["AP"])
""")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "AP " in proc.stdout and "bootstrapping phase" not in proc.stderr
    (root,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(list((root / "train" / "images").glob("*.png"))) == 300
