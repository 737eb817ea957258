"""Paper-scale options that the small profiles do not exercise: prefetch sized by bytes, fp16 with a
GradScaler, batch-1 timing (Table 1e), GPU-hours by GPU share, Figure 4 on a sample of negatives."""
from __future__ import annotations

import torch

from orchestrator.report.build import gpus_of
from retina.config import load_config
from retina.data.loaders import prefetch_factor
from retina.engine.step import apply_gradients, grad_scaler, precision

from .conftest import SCRATCH_BACKBONE


def test_prefetch_is_sized_by_the_bytes_of_a_batch():
    paper = load_config("paper")  # 8 workers x 16 images of up to 1000 x 1000 x 3 bytes: 48 MB a batch
    assert prefetch_factor(paper, 16) == 1
    cpu = load_config("cpu", overrides=["data.num_workers=2"])  # 96 px batches: tiny
    assert prefetch_factor(cpu, 8) == 4
    assert prefetch_factor(load_config("paper", overrides=["data.prefetch_mb=1200"]), 16) == 3  # 1200 MiB / 8 / 48 MB
    assert prefetch_factor(load_config("paper", overrides=["data.prefetch_mb=8000"]), 16) == 4  # at most 4


def test_float16_autocast_scales_the_loss_and_skips_a_step_that_overflows():
    cfg = load_config("cpu", overrides=["train.amp=true", "train.amp_cpu=true", "train.amp_dtype=float16"])
    device = torch.device("cpu")
    assert precision(cfg, device) == "fp16-autocast"
    scaler = grad_scaler(cfg, device)
    assert scaler is not None and grad_scaler(load_config("cpu"), device) is None  # bf16 / fp32: no scaler
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    apply_gradients((w * 2).sum(), opt, [w], grad_clip_norm=5.0, scaler=scaler)
    assert torch.allclose(w.detach(), torch.full((3,), 0.8))  # the unscaled gradient 2, lr 0.1
    before = w.detach().clone()
    apply_gradients((w * float("inf")).sum(), opt, [w], grad_clip_norm=None, scaler=scaler)
    assert torch.equal(w.detach(), before)  # an overflowing step is skipped, the scale backs off


def test_gpu_hours_count_the_share_of_a_gpu_and_every_worker():
    assert gpus_of({"gpus": "0.25", "device": "cuda (H200)"}) == 0.25
    assert gpus_of({"device": "8 x cuda (NVIDIA H200) (nccl)"}) == 8
    assert gpus_of({"device": "cuda (NVIDIA H200)"}) == 1 and gpus_of({"device": "cpu"}) == 0


def test_figure4_samples_negatives_down_to_its_cap(tmp_path):
    from retina.analysis.loss_distribution import collect_logits
    from retina.train import fit

    cfg = load_config("cpu", overrides=[
        "data.synthetic.num_train=8", "data.synthetic.num_val=4", "data.synthetic.image_size=64",
        "data.synthetic.max_object_size=48", "data.min_size=64", "data.max_size=64", "anchors.base_size=8",
        "model.fpn_channels=32", "model.head_convs=1", "train.iterations=1", "train.batch_size=2",
        *SCRATCH_BACKBONE, "eval.batch_size=2",
        f"data.synthetic.cache_dir={tmp_path}"])
    fit(cfg, checkpoint_dir=str(tmp_path / "run"))
    everything = collect_logits(tmp_path / "run" / "checkpoint.pt", max_images=4)
    sampled = collect_logits(tmp_path / "run" / "checkpoint.pt", max_images=4, max_negatives=1000)
    assert torch.equal(sampled["positives"], everything["positives"])
    assert 800 < len(sampled["negatives"]) < 1200 < len(everything["negatives"])


def test_batch1_timing_is_reported_where_asked(tmp_path):
    from retina.train import fit

    tiny = ["data.synthetic.num_train=8", "data.synthetic.num_val=4", "data.synthetic.image_size=64",
            "data.synthetic.max_object_size=48", "data.min_size=64", "data.max_size=64", "anchors.base_size=8",
            "model.fpn_channels=64", "model.head_convs=1", "train.iterations=1", "train.batch_size=2",
            *SCRATCH_BACKBONE, f"data.synthetic.cache_dir={tmp_path}"]
    timed = fit(load_config("cpu", overrides=tiny + ["eval.timing_images=3"]))
    assert timed["inference_ms_batch1"] > 0
    assert "inference_ms_batch1" not in fit(load_config("cpu", overrides=tiny))
