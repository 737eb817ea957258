"""The synthetic pre-training (retina/pretrain.py): cached by its settings, deterministic, and what
``model.backbone_weights=synthetic`` loads."""
from __future__ import annotations

import torch

from retina.config import load_config
from retina.build import build_model, resolve_backbone
from retina.pretrain import ensure_pretrained, info, weights_path

TINY = ["pretrain.image_size=24", "pretrain.num_images=120", "pretrain.iterations=3", "pretrain.batch_size=8",
        "pretrain.warmup_iters=1", "model.depth=18"]


def test_pretraining_is_cached_by_its_settings_and_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("RETINA_CACHE_DIR", str(tmp_path / "a"))
    cfg = load_config("cpu", overrides=TINY)
    path = ensure_pretrained(18, cfg.pretrain, log=lambda m: None)
    assert path == weights_path(18, cfg.pretrain) and path.is_file()
    assert info(path)["images"] > 100 and 0.0 <= info(path)["accuracy"] <= 1.0
    mtime = path.stat().st_mtime_ns
    assert ensure_pretrained(18, cfg.pretrain, log=lambda m: None) == path and path.stat().st_mtime_ns == mtime
    other = load_config("cpu", overrides=TINY + ["pretrain.seed=1"])
    assert weights_path(18, other.pretrain) != path
    # the thread count changes the weights' last bits, so it is one of the settings
    assert weights_path(18, load_config("cpu", overrides=TINY + ["pretrain.num_threads=1"]).pretrain) != path


def test_the_same_settings_give_the_same_file_whatever_the_callers_thread_count(tmp_path, monkeypatch):
    """A driver (every core) and a one-thread trial that pre-train must make the same backbone, to the
    byte: the file's sha256 is what runs record."""
    import hashlib

    cfg = load_config("cpu", overrides=TINY + ["pretrain.num_threads=2"])
    previous = torch.get_num_threads()
    files = []
    try:
        for folder, threads in (("a", 1), ("b", 3)):
            monkeypatch.setenv("RETINA_CACHE_DIR", str(tmp_path / folder))
            torch.set_num_threads(threads)
            files.append(ensure_pretrained(18, cfg.pretrain, log=lambda m: None))
            assert torch.get_num_threads() == threads  # the caller's count, restored
    finally:
        torch.set_num_threads(previous)
    a, b = (torch.load(f, weights_only=True) for f in files)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == hashlib.sha256(files[1].read_bytes()).hexdigest()


def test_a_synthetic_backbone_is_loaded_into_the_detector(tmp_path, monkeypatch):
    monkeypatch.setenv("RETINA_CACHE_DIR", str(tmp_path))
    cfg = load_config("cpu", overrides=TINY + ["model.backbone_weights=synthetic", "model.backbone_norm=frozen_bn",
                                               "model.freeze_at=2"])
    model = build_model(cfg, 3, resolve_backbone(cfg))
    weights = torch.load(weights_path(18, cfg.pretrain), weights_only=True)
    assert model.backbone_source.kind == "synthetic"
    assert torch.equal(model.backbone.layer3[0].conv1.weight, weights["layer3.0.conv1.weight"])
    assert torch.equal(model.backbone.stem[1].running_var, weights["bn1.running_var"])  # frozen BN holds its statistics


def test_pretraining_leaves_the_callers_random_state_as_it_was(tmp_path, monkeypatch):
    """A trial that pre-trains must train exactly as one that finds the file cached."""
    import random

    monkeypatch.setenv("RETINA_CACHE_DIR", str(tmp_path))
    cfg = load_config("cpu", overrides=TINY)
    torch.manual_seed(5), random.seed(5)
    ensure_pretrained(18, cfg.pretrain, log=lambda *a: None)
    after_training = (torch.rand(3), random.random(), torch.get_num_threads())
    torch.manual_seed(5), random.seed(5)
    ensure_pretrained(18, cfg.pretrain, log=lambda *a: None)  # cached now
    after_cached = (torch.rand(3), random.random(), torch.get_num_threads())
    assert torch.equal(after_training[0], after_cached[0]) and after_training[1:] == after_cached[1:]
