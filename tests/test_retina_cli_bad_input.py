"""The trainer's own command lines (``retina.train``, ``retina.evaluate``, ``retina.pretrain``) turn
bad input into one line on stderr and exit 2, writing nothing; run as a user runs them (a process
of its own, in an empty folder, offline: nothing downloads)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RETINA_OFFLINE": "1", "TORCH_HOME": str(tmp_path / "torch"),
           "RETINA_CACHE_DIR": str(tmp_path / "cache")}
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", *argv], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("argv,expected", [
    (["retina.train", "model.backbone_weights=IMAGENET1K_V1"], "ResNet-18 weights are not in torch hub's cache"),
    (["retina.train", "model.backbone_weights=/nonexistent/resnet18.pth"], "file not found"),
    (["retina.train", "loss.alpha=7"], "loss.alpha=7.0 is out of range"),
    (["retina.train", "--profile", "laptop"], "unknown profile 'laptop'"),
    (["retina.train", "--resume", "BAD", "train.iterations=1"], "cannot be read as a checkpoint"),
    (["retina.evaluate", "BAD"], "cannot be read as a checkpoint"),
    (["retina.evaluate", "missing.pt"], "checkpoint not found"),
    (["retina.pretrain", "--profile", "laptop"], "unknown profile 'laptop'"),
    (["retina.pretrain", "pretrain.iterations=-1"], "pretrain.iterations=-1 is out of range"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, argv, expected):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    argv = [str(bad) if a == "BAD" else a for a in argv]
    proc = run(tmp_path, *argv)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr[-2000:]
    assert list((tmp_path / "work").iterdir()) == []  # no runs/ folder, no config.yaml
