"""benchmarks/amp_parity.py: bf16 and fp32 trainings side by side. On CPU train.amp is ignored, so
both arms must give the same AP for a seed: what the script reports there checks the script. With
train.amp_cpu the bf16 arm computes in bf16 on the CPU."""
import json
import subprocess
import sys
from pathlib import Path

import torch

from retina.config import load_config

from tests.conftest import PROJECT_ROOT

from .conftest import TINY_SETTINGS

SCRIPT = PROJECT_ROOT / "benchmarks" / "amp_parity.py"


def run_script(tmp_path: Path, *args: str, overrides=()):
    cache = f"data.synthetic.cache_dir={tmp_path / 'synthetic'}"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--profile", "cpu", "--out", str(tmp_path / "runs"), *args,
                           *TINY_SETTINGS, cache, "train.device=cpu", *overrides],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600)
    return proc, json.loads(proc.stdout)


def final_weights(tmp_path: Path, run: str) -> dict:
    return torch.load(tmp_path / "runs" / run / "checkpoint.pt", weights_only=True)["model"]


def test_both_precisions_and_seeds_are_trained_and_compared(tmp_path):
    proc, out = run_script(tmp_path, "--seeds", "0,1", "--parallel", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert set(out["runs"]) == {"bf16", "fp32"} and all(set(r) == {"0", "1"} for r in out["runs"].values())
    for precision, seeds in out["runs"].items():
        for seed, run in seeds.items():
            assert run["status"] == "finished" and run["device"] == "cpu" and run["precision"] == "fp32"
            config = (tmp_path / "runs" / f"{precision}-s{seed}" / "config.yaml").read_text()
            assert f"amp: {'true' if precision == 'bf16' else 'false'}" in config and f"seed: {seed}" in config
    ap = {p: [out["runs"][p][s]["AP"] for s in ("0", "1")] for p in ("bf16", "fp32")}
    assert ap["bf16"] == ap["fp32"]  # amp is ignored on CPU: the same computation
    assert out["difference_bf16_minus_fp32"] == 0.0 and out["within_noise"] is True
    assert out["noise"] == abs(ap["fp32"][0] - ap["fp32"][1])
    assert out["paired_differences"] == {"0": 0.0, "1": 0.0} and out["added_overrides"] == []
    bf16, fp32 = final_weights(tmp_path, "bf16-s0"), final_weights(tmp_path, "fp32-s0")
    assert all(torch.equal(bf16[name], fp32[name]) for name in fp32)


def test_with_amp_cpu_the_bf16_arm_trains_in_bf16_on_the_cpu(tmp_path):
    proc, out = run_script(tmp_path, "--seeds", "0", overrides=["train.amp_cpu=true"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out["runs"]["bf16"]["0"]["precision"] == "bf16-autocast"
    assert out["runs"]["fp32"]["0"]["precision"] == "fp32"
    # the fast CPU convolutions step aside under autocast: off in both arms, the same algorithms in both
    assert out["added_overrides"] == ["model.fast_cpu_convs=false"]
    for run in ("bf16-s0", "fp32-s0"):
        assert "fast_cpu_convs: false" in (tmp_path / "runs" / run / "config.yaml").read_text()
    assert out["paired_differences"]["0"] == out["runs"]["bf16"]["0"]["AP"] - out["runs"]["fp32"]["0"]["AP"]
    bf16, fp32 = final_weights(tmp_path, "bf16-s0"), final_weights(tmp_path, "fp32-s0")
    differing = [name for name in fp32 if not torch.equal(bf16[name], fp32[name])]
    # the heads and the first trainable stage (layer<freeze_at>) differ; the frozen stages (the stem and
    # layer1..layer<freeze_at - 1>) are the pre-trained weights in both
    freeze_at = load_config("cpu").model.freeze_at
    assert freeze_at >= 2
    assert "cls_subnet.predictor.weight" in differing and f"backbone.layer{freeze_at}.0.conv1.weight" in differing
    assert "backbone.stem.0.weight" not in differing and "backbone.layer1.0.conv1.weight" not in differing


def test_a_failing_run_is_reported_with_its_log_and_exit_code_1(tmp_path):
    proc, out = run_script(tmp_path, "--seeds", "0", overrides=["loss.alpha=7"])
    assert proc.returncode == 1
    run = out["runs"]["bf16"]["0"]
    assert run["error"] == "exit code 2" and "loss.alpha" in run["log_tail"]
    assert out["within_noise"] is None and out["mean_AP"] is None
