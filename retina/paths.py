"""Where the project reads its shipped files and writes its caches, whether it runs from a source
checkout or from an installed copy (``pip install .``).

* shipped files (profiles, sweep files, the paper's tables) are package data, found next to the code;
* caches (synthetic datasets, the CPU kernels, pre-trained backbones) go under the user cache folder:
  ``$RETINA_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/focal-ablations``, else
  ``~/.cache/focal-ablations``; never inside the package;
* what a command produces (the MLflow store ``mlflow.db``, checkpoints under ``runs/``, reports under
  ``results/``) goes in the current working directory unless a flag says otherwise.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROFILES_DIR = PACKAGE_DIR / "profiles"


def cache_dir(*parts: str) -> Path:
    """The user cache folder of the project (see the module docstring), joined with ``parts``."""
    root = os.environ.get("RETINA_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(xdg) / "focal-ablations")
    return Path(root).joinpath(*parts)


def working_dir(*parts: str) -> Path:
    """The current working directory (where a command's outputs go), joined with ``parts``."""
    return Path.cwd().joinpath(*parts)
