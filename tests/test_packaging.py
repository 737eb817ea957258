"""An installed copy works from any folder: ``pip install .`` (not editable) into a fresh virtual
environment, then the main job and its report run from another directory, with the profiles, sweep
files and paper tables read from the installed package and the store and results written there."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, TINY_SETTINGS


@pytest.mark.slow
def test_a_non_editable_install_runs_the_main_job_and_the_report_from_another_folder(tmp_path):
    venv = tmp_path / "venv"
    # --system-site-packages: the dependencies (torch, ray, mlflow...) are this machine's; only the
    # project itself is installed, as a wheel, into the new environment
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              str(PROJECT_ROOT)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    where = subprocess.run([str(python), "-c", "import retina, orchestrator; print(retina.__file__); "
                            "print(orchestrator.__file__)"], cwd=work, env=env, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    assert all(str(venv) in line for line in where.stdout.split()), where.stdout  # the installed copy
    settings = TINY_SETTINGS + [f"data.synthetic.cache_dir={tmp_path / 'synthetic'}"]
    run = subprocess.run([str(python), "-m", "orchestrator", "run", "sweeps/alpha_gamma.yaml", "--set", *settings],
                         cwd=work, env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "33 finished" in run.stdout and (work / "mlflow.db").is_file() and (work / "runs" / "ray").is_dir()
    report = subprocess.run([str(python), "-m", "orchestrator", "report", "alpha_gamma"], cwd=work, env=env,
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-2000:]
    summary = json.loads((work / "results" / "alpha_gamma" / "summary.json").read_text())
    assert set(summary["verdicts"]) == {"1a", "1b"}
    assert (work / "results" / "README.md").is_file()
