"""The training loop for real: exact resume, divergence, learning on synthetic and real data."""
import math
import shutil

import pytest
import torch

from retina.config import load_config
from retina.train import fit, learning_rate, load_checkpoint

TINY = [
    "data.synthetic.num_train=16", "data.synthetic.num_val=8", "data.synthetic.image_size=64",
    "data.synthetic.min_object_size=8", "data.synthetic.max_object_size=48",
    "data.min_size=64", "data.max_size=64", "anchors.base_size=4",
    "model.fpn_channels=32", "model.head_convs=1", "train.batch_size=4", "train.log_every=1",
    "train.warmup_iters=2", "eval.batch_size=8",
]


def tiny_config(tmp_path, *overrides):
    return load_config("cpu", overrides=TINY + [f"data.synthetic.cache_dir={tmp_path / 'synthetic'}", *overrides])


def test_learning_rate_warms_up_linearly_then_steps():
    cfg = load_config(None)  # the paper's schedule: 500 warm-up iterations from 1/3, x0.1 at 60k and 80k
    t = cfg.train
    assert learning_rate(t, 0) == pytest.approx(0.01 / 3)
    assert learning_rate(t, 250) == pytest.approx(0.01 * (1 / 3 + (2 / 3) * 0.5))
    assert learning_rate(t, 500) == pytest.approx(0.01)
    assert learning_rate(t, 59999) == pytest.approx(0.01)
    assert learning_rate(t, 60000) == pytest.approx(0.001)
    assert learning_rate(t, 80000) == pytest.approx(0.0001)


def test_resume_from_checkpoint_continues_exactly(tmp_path):
    cfg = tiny_config(tmp_path, "train.iterations=6", "train.checkpoint_every=3")
    history, saved = [], {}

    def keep_mid_checkpoint(path, iteration):
        if iteration == 3:
            saved["path"] = shutil.copy(path, tmp_path / "at3.pt")

    fit(cfg, on_metrics=lambda m: history.append(m), on_checkpoint=keep_mid_checkpoint,
        checkpoint_dir=str(tmp_path / "a"))
    uninterrupted = {int(m["iteration"]): m["loss"] for m in history if "loss" in m}
    assert load_checkpoint(saved["path"])["iteration"] == 3

    resumed_history = []
    fit(cfg, on_metrics=lambda m: resumed_history.append(m), checkpoint_dir=str(tmp_path / "b"),
        resume_from=saved["path"])
    resumed = {int(m["iteration"]): m["loss"] for m in resumed_history if "loss" in m}
    assert sorted(resumed) == [4, 5, 6]
    for it in (4, 5, 6):
        assert resumed[it] == pytest.approx(uninterrupted[it], rel=1e-6, abs=1e-9)
    final_a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["model"]
    final_b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["model"]
    for name in final_a:
        torch.testing.assert_close(final_a[name], final_b[name], rtol=1e-5, atol=1e-7)


def test_checkpoint_loads_with_weights_only_and_holds_everything(tmp_path):
    cfg = tiny_config(tmp_path, "train.iterations=2", "train.checkpoint_every=0")
    fit(cfg, checkpoint_dir=str(tmp_path))
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["iteration"] == 2
    assert {"model", "optimizer", "loss", "rng", "config", "num_classes"} <= set(state)
    assert state["config"]["loss"]["gamma"] == cfg.loss.gamma


def test_non_finite_loss_stops_with_status_diverged_and_a_result(tmp_path):
    cfg = tiny_config(tmp_path, "train.iterations=30", "train.lr=1e6", "train.warmup_iters=0",
                      "train.grad_clip_norm=null", "model.prior_init=false")
    result = fit(cfg)
    assert result["status"] == "diverged"
    assert 1 <= result["diverged_at"] < 30 and result["iterations"] == result["diverged_at"] - 1
    assert result["AP"] == 0.0 and result["AP50"] == 0.0
