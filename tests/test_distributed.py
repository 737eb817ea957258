"""Data-parallel training (retina/distributed.py, retina.train.fit in a process group) computes the
gradient one process computes on the same total batch.

Two processes with torch.distributed's gloo backend on 127.0.0.1 (torch.multiprocessing) run
``fit`` on a batch of 5 images (shares of 2 and 3) and a single process runs it on the same batch;
a global optimizer pre-step hook records every parameter's gradient at each iteration (after DDP's
all-reduce: what the optimizer applies). The images have different sizes, so the two shares pad to
different sizes unless padded like the whole batch, and the loss normalizer is the moving average of
the foreground count (``loss.normalizer_momentum``), so it must be the global count at every step.

Equal does not cover the backbone's BatchNorm in training mode: torch's SyncBatchNorm does not run
on the CPU, so with gloo each process would normalize with its own share's statistics. The test
therefore replaces the backbone's BatchNorm layers by ones that always use their running statistics
(as in eval mode; weight and bias still train), which is what makes the gradients comparable. On
CUDA, ``model.backbone_norm=sync_bn`` converts them to SyncBatchNorm instead (not run here: no GPU).
"""
from __future__ import annotations

import json
import random
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from retina.config import load_config
from tests.conftest import SCRATCH_BACKBONE
from retina.engine.distributed import ShardedBatchSampler, shard_bounds
from retina.data.samplers import StreamBatchSampler

BATCH, ITERATIONS, WORLD = 5, 3, 2
SIZES = [(48, 96), (96, 48), (64, 64), (48, 64), (64, 48), (96, 64), (48, 48), (64, 96), (80, 48), (48, 80)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def varied_size_dataset(root: Path, seed: int = 0) -> dict:
    """A small COCO dataset of images of different sizes, each with 1-3 filled boxes of 2 classes."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    images, annotations = [], []
    for i, (w, h) in enumerate(SIZES):
        image = Image.new("RGB", (w, h), tuple(rng.randrange(60, 120) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(1, 3)):
            bw, bh = rng.randint(16, min(40, w - 2)), rng.randint(16, min(40, h - 2))
            x, y = rng.randint(0, w - bw - 1), rng.randint(0, h - bh - 1)
            category = rng.randint(1, 2)
            draw.rectangle([x, y, x + bw - 1, y + bh - 1], fill=(230, 40, 40) if category == 1 else (40, 40, 230))
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": category,
                                "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0})
        image.save(images_dir / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": w, "height": h})
    ann = root / "instances.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]}))
    return {"annotations": str(ann), "images": str(images_dir)}


def overrides(data: dict) -> list:
    return [
        "data.source=coco", f"data.train.annotations={data['annotations']}", f"data.train.images={data['images']}",
        f"data.val.annotations={data['annotations']}", f"data.val.images={data['images']}",
        "data.min_size=48", "data.max_size=96", "data.max_val_images=4",
        "model.fpn_channels=32", "model.head_convs=1", "eval.batch_size=4",
        f"train.batch_size={BATCH}", f"train.iterations={ITERATIONS}", "train.log_every=1", "train.warmup_iters=1",
        "train.lr=0.01", "train.grad_clip_norm=null", "train.checkpoint_every=0", "train.num_threads=1",
        "loss.normalizer_momentum=0.9", *SCRATCH_BACKBONE,
    ]


class BatchIndependentBatchNorm(torch.nn.BatchNorm2d):
    """BatchNorm that always normalizes with its running statistics (as in eval mode), so that an
    image's output does not depend on the images beside it; weight and bias still train."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def freeze_batchnorm_statistics(model: torch.nn.Module) -> None:
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.BatchNorm2d:
                frozen = BatchIndependentBatchNorm(child.num_features, eps=child.eps, momentum=child.momentum)
                frozen.load_state_dict(child.state_dict())
                setattr(parent, name, frozen)


def fit_and_record(cfg_overrides: list, checkpoint_dir: Path) -> dict:
    """fit (BatchNorm statistics frozen) with a recorder of the gradients the optimizer applies."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    import retina.engine.trainer as train

    build, names, grads, history = train.build_model, [], [], []

    def build_with_frozen_batchnorm(cfg, num_classes, *args, **kwargs):
        model = build(cfg, num_classes, *args, **kwargs)
        freeze_batchnorm_statistics(model)
        names[:] = [n for n, _ in model.named_parameters()]
        return model

    def record(optimizer, args, kwargs):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grads.append({n: p.grad.detach().clone() for n, p in zip(names, params, strict=True)})

    train.build_model = build_with_frozen_batchnorm
    hook = register_optimizer_step_pre_hook(record)
    threads = torch.get_num_threads()
    try:
        result = train.fit(load_config("cpu", overrides=cfg_overrides), on_metrics=history.append,
                           checkpoint_dir=str(checkpoint_dir))
    finally:
        hook.remove()
        train.build_model = build
        torch.set_num_threads(threads)
    return {"grads": grads, "history": history, "status": result["status"], "AP50": result.get("AP50")}


def data_parallel_worker(rank: int, world: int, port: int, cfg_overrides: list, out: str) -> None:
    """One of ``world`` processes (torch.multiprocessing): gloo on 127.0.0.1, then fit_and_record."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        record = fit_and_record(cfg_overrides, Path(out) / f"checkpoints-{world}-{rank}")
        torch.save(record, Path(out) / f"record-{world}-{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_each_process_takes_a_contiguous_share_and_the_shares_make_up_the_batch():
    stream = StreamBatchSampler(num_images=7, batch_size=5, iterations=4, seed=3, flip_prob=0.5)
    shares = [list(ShardedBatchSampler(stream, r, 2)) for r in range(2)]
    for it, batch in enumerate(stream):
        assert shares[0][it] + shares[1][it] == batch
        assert [len(s[it]) for s in shares] == [2, 3]
    assert [shard_bounds(16, r, 8) for r in (0, 7)] == [(0, 2), (14, 16)]


@pytest.mark.slow
def test_two_gloo_processes_compute_the_gradients_of_one_process_on_the_same_batch(tmp_path):
    import torch.multiprocessing as mp

    from retina.data import CocoDetection, resize_scale

    data = varied_size_dataset(tmp_path / "data")
    cfg_overrides = overrides(data)
    # the test means something only if the two shares of some batch pad to different sizes
    dataset = CocoDetection(data["annotations"], data["images"], train=True, min_size=48, max_size=96)
    padded = []
    for batch in StreamBatchSampler(len(dataset), BATCH, ITERATIONS, seed=0, flip_prob=0.5):
        sizes = []
        for index, _ in batch:
            info = dataset.coco.imgs[dataset.image_ids[index]]
            s = resize_scale(info["height"], info["width"], 48, 96)
            sizes.append((int(info["height"] * s + 0.5), int(info["width"] * s + 0.5)))
        lo, hi = shard_bounds(BATCH, 1, WORLD)
        pad = lambda part: tuple(-(-max(x[d] for x in part) // 32) * 32 for d in (0, 1))  # noqa: E731
        padded.append((pad(sizes[:lo]), pad(sizes[lo:hi])))
    assert any(a != b for a, b in padded), padded

    # the single process: this one; the data-parallel processes: spawned
    single = fit_and_record(cfg_overrides, tmp_path / "checkpoints-1-0")
    mp.spawn(data_parallel_worker, args=(WORLD, free_port(), cfg_overrides, str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"record-{WORLD}-{r}.pt", weights_only=False) for r in range(WORLD)]
    assert single["status"] == "finished" and all(r["status"] == "finished" for r in ranks)
    assert len(single["grads"]) == ITERATIONS and all(len(r["grads"]) == ITERATIONS for r in ranks)
    # Float rounding only: sums over images run in another order (measured: the difference's norm is
    # 2e-6 of the gradient's, gradients reach 0.5; a missing all-reduce of the normalizer, padding
    # like the whole batch or x N before DDP's averaging each make some differ by 0.02-0.1).
    for it in range(ITERATIONS):
        reference = single["grads"][it]
        for r, record in enumerate(ranks):
            assert record["grads"][it].keys() == reference.keys()
            for name, grad in reference.items():
                torch.testing.assert_close(record["grads"][it][name], grad, rtol=1e-4, atol=1e-5,
                                           msg=lambda m: f"iteration {it + 1}, rank {r}, {name}: {m}")
            difference = torch.cat([(record["grads"][it][n] - g).flatten() for n, g in reference.items()])
            norm = torch.cat([g.flatten() for g in reference.values()]).norm()
            assert difference.norm() <= 1e-5 * norm, (it + 1, r, float(difference.norm() / norm))

    # every process reports the whole batch's metrics, as the single process does
    progress = lambda record: [m for m in record["history"] if "loss" in m]  # noqa: E731
    for record in ranks:
        for a, b in zip(progress(record), progress(single), strict=True):
            assert a["iteration"] == b["iteration"] and a["num_foreground"] == b["num_foreground"]
            for k in ("loss", "loss_cls", "loss_box"):
                assert a[k] == pytest.approx(b[k], rel=1e-5), (k, a["iteration"])
    assert all(m["num_foreground"] > 0 for m in progress(single))

    # rank 0 alone writes the checkpoint and evaluates; its weights are the single process's
    assert not (tmp_path / f"checkpoints-{WORLD}-1" / "checkpoint.pt").exists()
    assert ranks[1]["AP50"] is None and ranks[0]["AP50"] is not None
    final_single = torch.load(tmp_path / "checkpoints-1-0" / "checkpoint.pt", weights_only=True)
    final_rank0 = torch.load(tmp_path / f"checkpoints-{WORLD}-0" / "checkpoint.pt", weights_only=True)
    assert final_rank0["iteration"] == ITERATIONS
    for name, value in final_single["model"].items():
        torch.testing.assert_close(final_rank0["model"][name], value, rtol=1e-5, atol=1e-7)
    assert final_rank0["loss"]["normalizer_ema"] == pytest.approx(final_single["loss"]["normalizer_ema"])


# ----------------------------------------------------------------------------------------------
# the orchestrator's side, unit by unit: resources, and the checkpoint event of a data-parallel trial


def test_a_trial_asking_for_several_gpus_is_data_parallel_with_one_gpu_per_worker():
    from orchestrator.resource_plan import Cluster, RunnerError, plan_resources

    configs = [load_config("cpu", overrides=["train.batch_size=16"])]
    two_nodes = Cluster(address="head:6379", started_here=False, cpus=128, gpus=16, node_cpus=[64, 64],
                        node_gpus=[8, 8])
    paper = plan_resources(configs, two_nodes, cpus_per_trial=4, gpus_per_trial=8, max_concurrent=None, num_trials=13)
    assert (paper.workers_per_trial, paper.cpus_per_trial, paper.gpus_per_trial, paper.slots) == (8, 4, 8, 2)
    shared = plan_resources(configs, two_nodes, cpus_per_trial=1, gpus_per_trial=0.25, max_concurrent=None,
                            num_trials=100)
    assert (shared.workers_per_trial, shared.slots) == (1, 64)  # fractions: one process, as before
    one_node = Cluster(address=None, started_here=True, cpus=2, gpus=0, node_cpus=[2], node_gpus=[0])
    cpu = plan_resources(configs, one_node, cpus_per_trial=None, gpus_per_trial=None, max_concurrent=None,
                         num_trials=3, workers_per_trial=2)
    assert (cpu.workers_per_trial, cpu.cpus_per_trial, cpu.gpus_per_trial, cpu.slots) == (2, 1, 0, 1)
    with pytest.raises(RunnerError, match="each worker of a data-parallel trial takes one whole GPU"):
        plan_resources(configs, two_nodes, cpus_per_trial=1, gpus_per_trial=1, max_concurrent=None, num_trials=1,
                       workers_per_trial=2)
    with pytest.raises(RunnerError, match="needs 4 workers of 1 CPU and 0 GPU but the Ray cluster holds only 2"):
        plan_resources(configs, one_node, cpus_per_trial=1, gpus_per_trial=0, max_concurrent=None, num_trials=1,
                       workers_per_trial=4)
    small_batch = [load_config("cpu", overrides=["train.batch_size=2"])]
    with pytest.raises(RunnerError, match="train.batch_size=2 is smaller than the 8 workers"):
        plan_resources(small_batch, two_nodes, cpus_per_trial=1, gpus_per_trial=8, max_concurrent=None,
                       num_trials=1)


def test_the_checkpoint_of_a_data_parallel_trial_reaches_the_listeners_from_its_event():
    from types import SimpleNamespace

    from orchestrator.runner import _Forward

    calls = []

    class Listener:
        def __getattr__(self, method):
            return lambda *args: calls.append((method, *args))

    forward = _Forward([Listener()])
    trial = SimpleNamespace(config={"trial_key": "k"})
    forward.on_trial_result(0, [], trial, {"event": "checkpoint", "iteration": 4,
                                           "checkpoint_uri": "s3://bucket/runs/train/k/checkpoint_1"})
    forward.on_trial_result(0, [], trial, {"event": "checkpoint", "iteration": 8})  # one process: Tune's
    assert calls == [("trial_checkpoint", "k", "s3://bucket/runs/train/k/checkpoint_1", 4)]


# ----------------------------------------------------------------------------------------------
# a sweep trial on 2 gloo workers through the real CLI: Ray Tune -> Ray Train TorchTrainer -> fit

PARALLEL_SWEEP = """\
name: parallel
tables: [1a]
base: {loss.kind: focal, loss.gamma: 0.0}
rows:
  - {label: "CE alpha=0.25 on 2 workers", set: {loss.alpha: 0.25}}
"""


@pytest.mark.slow
def test_a_trial_on_two_gloo_workers_reaches_mlflow_like_a_one_process_trial(ray_session, orchestrator_dirs,
                                                                             capsys):
    """Local Ray with 2 CPUs: the Tune trial (no CPU) runs a TorchTrainer of 2 workers of 1 CPU;
    rank 0's progress, checkpoints and final result reach the driver's MLflow tracker and live view
    as a one-process trial's do (tests/test_orchestrator_e2e.py checks the same for those)."""
    from mlflow.tracking import MlflowClient

    from orchestrator import runner
    from orchestrator.__main__ import main

    if ray_session.cpus < 2:
        pytest.skip(f"needs a local Ray with 2 CPUs, has {ray_session.cpus:g}")
    path = orchestrator_dirs["root"] / "parallel.yaml"
    path.write_text(PARALLEL_SWEEP)
    capsys.readouterr()
    rc = main(["run", str(path), "--workers-per-trial", "2", "--tracking-uri", orchestrator_dirs["uri"],
               "--storage-path", str(orchestrator_dirs["storage"]), "--set", *orchestrator_dirs["settings"]])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "1 finished, 0 skipped, 0 diverged, 0 failed" in out

    client = MlflowClient(orchestrator_dirs["uri"])
    experiment = client.get_experiment_by_name("parallel")
    trials = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("kind") == "trial"]
    assert len(trials) == 1
    run = trials[0]
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["status"] == "finished" and tags["device"] == "2 x cpu (gloo)"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [2, 4, 6]
    assert {"loss_cls", "loss_box", "lr", "images_per_s", "num_foreground", "AP", "AP50", "AP75",
            "inference_ms"} <= set(metrics)
    assert "eval_summary.txt" in {a.path for a in client.list_artifacts(run.info.run_id)}
    # the checkpoint Ray Train stored (rank 0's), recorded where a new driver resumes from it
    assert tags["checkpoint_iteration"] == "6" and runner.checkpoint_exists(tags["checkpoint"])
    state = torch.load(Path(tags["checkpoint"]) / "checkpoint.pt", weights_only=True)
    assert state["iteration"] == 6 and not any(k.startswith("module.") for k in state["model"])
