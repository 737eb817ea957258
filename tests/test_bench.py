"""The benchmark script runs end to end on tiny settings and reports what it promises."""
import json
from pathlib import Path

import pytest

from benchmarks import bench
from tests.conftest import TINY_PRETRAIN

TINY = TINY_PRETRAIN + ["data.synthetic.num_train=16", "data.synthetic.num_val=8", "data.synthetic.image_size=64",
        "data.synthetic.max_object_size=48", "data.min_size=64", "data.max_size=64", "anchors.base_size=8",
        "train.batch_size=2", "eval.batch_size=4", "model.head_convs=1"]


@pytest.mark.slow
def test_bench_runs_ours_and_both_torchvision_formats(tmp_path, capsys):
    cache = f"data.synthetic.cache_dir={tmp_path / 'synthetic'}"
    assert bench.main(["--iterations", "2", "--warmup", "1", "--rounds", "2", *TINY, cache]) == 0
    out = json.loads(capsys.readouterr().out)
    tv = out["torchvision_configurations"]
    assert set(tv) == {"torchvision", "torchvision_channels_last"}
    best = out["torchvision_best_configuration"]
    assert out["train_images_per_s"]["torchvision"] == tv[best]["train_images_per_s"]
    assert out["train_images_per_s"]["torchvision"] == max(c["train_images_per_s"] for c in tv.values())
    assert out["train_speed_ratio_ours_over_torchvision"] == pytest.approx(
        out["train_images_per_s"]["ours"] / out["train_images_per_s"]["torchvision"])
    assert out["settings"]["rounds"] == 2 and out["settings"]["ours_fast_cpu_convs"] is True
    # FLOPs as executed: Winograd does fewer; the direct-convolution count equals torchvision's model
    assert out["flops_per_train_step"]["ours"] < out["ours_direct_flops_per_train_step"]
    assert any("fast_cpu_convs" in note for note in out["not_equal"])
    assert 0 <= out["data_wait_share"]["ours"] < 1 and out["inference_ms_per_image"]["ours"] > 0
    # no torch.compile on CPU unless asked; where the time goes; what the loader alone delivers
    assert set(out["ours_configurations"]) == {"ours"} and out["ours_best_configuration"] == "ours"
    assert set(out["top_ops_per_step"]) == {"ours", best}
    ops = out["top_ops_per_step"]["ours"]
    assert 0 < len(ops) <= 12 and all(o["self_ms_per_step"] > 0 for o in ops)
    assert [o["self_ms_per_step"] for o in ops] == sorted((o["self_ms_per_step"] for o in ops), reverse=True)
    assert any("conv" in o["name"] or "mm" in o["name"] for o in ops[:3])  # convolutions dominate
    assert out["data_loader_images_per_s"] > 0
    assert out["data_loader_headroom"] == pytest.approx(
        out["data_loader_images_per_s"] / out["train_images_per_s"]["ours"])


def test_bench_reports_a_failing_compiled_variant_and_goes_on(tmp_path, capsys, monkeypatch):
    """A compiler failure on the device is a finding: the other contenders are still timed."""
    from retina.modeling.retinanet import RetinaNet

    def broken(self, mode, backend="inductor"):
        def fail(images):
            raise RuntimeError("inductor: no kernel for this\nsecond line")
        self._dense_fn = fail

    monkeypatch.setattr(RetinaNet, "compile_dense", broken)
    cache = f"data.synthetic.cache_dir={tmp_path / 'synthetic'}"
    assert bench.main(["--iterations", "1", "--warmup", "1", "--rounds", "1", "--compile", "default",
                       "--top-ops", "0", *TINY, cache]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ours_configurations_failed"] == {"ours_compiled": "RuntimeError: inductor: no kernel for this "
                                                                  "second line"}
    assert set(out["ours_configurations"]) == {"ours"} and out["top_ops_per_step"] == {}


def test_bench_refuses_a_fpn_width_torchvision_cannot_have(capsys):
    assert bench.main(["model.fpn_channels=128"]) == 2
    assert "fpn_channels" in capsys.readouterr().err


@pytest.mark.slow
def test_the_scale_benchmark_runs_and_reports_every_figure(tmp_path):
    """benchmarks/scale.py --quick (small sizes): every figure is there, OHEM equals the full NMS, and
    a trial's dataset opens no image file."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "benchmarks/scale.py", "--quick"], capture_output=True, text=True,
                         timeout=900, cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("ohem_ms_per_image", "ohem_1to3_ms_per_image", "ohem_graph_build_s", "ohem_equal_to_full",
                "coco_build_s", "coco_files_opened", "worker_rss_mb", "padding_share", "padding_share_ungrouped",
                "step_device_reads"):
        assert key in figures, key
    assert figures["ohem_equal_to_full"] is True and figures["coco_files_opened"] == 0
    assert figures["step_device_reads"] == 0 and figures["padding_share"] < figures["padding_share_ungrouped"]


def test_the_step_profile_splits_the_step_and_measures_the_threads_limits(tmp_path, capsys):
    from benchmarks import step_profile

    cache = f"data.synthetic.cache_dir={tmp_path / 'synthetic'}"
    assert step_profile.main(["--steps", "2", "--warmup", "1", "--eval-images", "4", *TINY, cache]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["threads"] == 1 and out["precision"] == "fp32" and out["steps_timed"] == 2
    assert out["outside_network_ms"] == pytest.approx(out["step_ms"] - out["network_ms"], abs=1e-3)
    assert out["outside_network_fraction"] == pytest.approx(out["outside_network_ms"] / out["step_ms"], abs=1e-3)
    parts = out["outside_network_parts"]
    assert all(parts[k] > 0 for k in ("data_wait_ms", "matching_ms", "loss_ms", "optimizer_ms"))
    assert parts["outside_rest_ms"] == pytest.approx(out["outside_network_ms"] - sum(
        parts[k] for k in ("data_wait_ms", "matching_ms", "loss_ms", "optimizer_ms")), abs=1e-2)
    assert out["network_gflop_per_step"] > 0 and out["eval_ms_per_image"] > 0 and out["eval_images"] == 4
    peak = out["matmul_peak_gflop_per_s"]
    assert peak["fp32"] > 0 and peak["bf16"] > 0
    assert out["network_fraction_of_peak"]["fp32"] == pytest.approx(out["network_gflop_per_s"] / peak["fp32"], rel=1e-2)
    assert isinstance(out["avx512_bf16"], bool) and isinstance(out["amx_bf16"], bool)


def test_the_step_profile_refuses_a_mistyped_key(capsys):
    from benchmarks import step_profile

    assert step_profile.main(["--steps", "1", "train.iteration=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "train.iteration" in err and "\n" not in err
