"""Shared fixtures: where the real datasets are, and tiny configs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing in the tests may download (retina/backbone_weights.py: torchvision weights come from the cache
# or not at all); the subprocesses the tests start inherit this.
os.environ["RETINA_OFFLINE"] = "1"
# Caches (synthetic data, COCO indexes, pre-trained backbones, CPU kernels) in a folder of the test
# session's own, not the user's: every session starts cold, as CI does.
if "RETINA_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["RETINA_CACHE_DIR"] = tempfile.mkdtemp(prefix="retina-test-cache-")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RETINA_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


def _shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not (path / "images").is_dir():
        reason = f"real dataset {path} not found (it lives in ../shared/data beside the checkout)"
        # CI must never pass by skipping: .ci/run sets RETINA_REQUIRE_SHARED_DATA=1.
        if os.environ.get("RETINA_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def coco32() -> Path:
    return _shared_dataset("coco32")


@pytest.fixture(scope="session")
def bccd() -> Path:
    return _shared_dataset("bccd")


# ----------------------------------------------------------------------------------------------
# orchestrator: one Ray for the whole test session, and tiny settings for end-to-end sweeps

# The cpu profile's backbone comes from a synthetic pre-training (retina/pretrain.py): in tests a tiny
# one (seconds, cached once per session), so the pre-trained path runs for real but cheaply.
TINY_PRETRAIN = ["pretrain.image_size=24", "pretrain.num_images=120", "pretrain.iterations=2", "pretrain.batch_size=8",
                 "pretrain.warmup_iters=1"]
# A backbone trained from scratch, where a test needs the detector to learn fast on its own.
SCRATCH_BACKBONE = ["model.backbone_weights=", "model.backbone_norm=bn", "model.freeze_at=0"]

# A sweep small enough for CI: 64 px synthetic images, a 1-conv FPN-32 head, a few iterations.
TINY_SETTINGS = TINY_PRETRAIN + [
    "train.iterations=6", "train.log_every=2", "train.checkpoint_every=3", "train.batch_size=4",
    "data.synthetic.num_train=16", "data.synthetic.num_val=8", "data.synthetic.image_size=64",
    "data.synthetic.max_object_size=48", "data.min_size=64", "data.max_size=64", "anchors.base_size=4",
    "model.fpn_channels=32", "model.head_convs=1", "eval.batch_size=8",
]


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray started once per session (~5 s), shared by every in-process sweep run."""
    import ray

    from orchestrator.runner import start_ray

    cluster = start_ray(None)
    yield cluster
    ray.shutdown()


@pytest.fixture(scope="session")
def orchestrator_dirs(tmp_path_factory):
    """A tracking store, a storage path and a synthetic-data cache for the session's sweeps."""
    root = tmp_path_factory.mktemp("orchestrator")
    dirs = {"root": root, "uri": f"sqlite:///{root / 'mlflow.db'}", "db": root / "mlflow.db",
            "storage": root / "ray", "cache": root / "synthetic"}
    dirs["settings"] = TINY_SETTINGS + [f"data.synthetic.cache_dir={dirs['cache']}"]
    return dirs


def artifacts_beside(uri: str) -> str:
    """An artifact folder beside a test's SQLite store (MLflow's default, ./mlruns, would land in the
    folder the tests run from)."""
    return str(Path(uri[len("sqlite:///"):]).parent / "mlruns")


def single_seed(path: Path) -> Path:
    """A copy of a shipped sweep file without its per-row and file seeds: for tests whose numbers are
    one per row (what a row's several seeds do is tested on its own)."""
    import re
    import tempfile

    text = re.sub(r",\s*seeds:\s*\[[^\]]*\]", "", path.read_text())
    text = re.sub(r"(?m)^\s*seeds:\s*\[[^\]]*\].*\n", "", text)
    out = Path(tempfile.mkdtemp(prefix="single-seed-")) / path.name
    out.write_text(text)
    return out


def fill_freed_memory_with_nan() -> None:
    """Allocate NaN-filled buffers and free them: a kernel that reads memory it never wrote (oneDNN's
    bf16 weight gradient on maps one position wide, retina/modeling/autocast_conv.py) then reads NaN."""
    import torch

    garbage = [torch.full((n,), float("nan")) for n in (1000, 5000, 9216, 20000, 100000)]
    del garbage
