"""What code made a run: the project's version, and MLflow's standard source tags."""
from __future__ import annotations

import subprocess

from retina.paths import PACKAGE_DIR


def code_version() -> str:
    """``git describe --always --dirty`` of the project; "unknown" outside a git checkout."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=PACKAGE_DIR,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    version = out.stdout.strip()
    return version if out.returncode == 0 and version else "unknown"
