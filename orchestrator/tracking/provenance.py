"""What code made a run: the project's version, and MLflow's standard source tags.

In a git checkout the version is ``git describe --always --dirty --tags`` (a tree with uncommitted
changes ends in ``-dirty``); an installed copy without git is ``focal-ablations <version>`` (its
package version). :func:`source_tags` are MLflow's standard context tags (``mlflow.source.*``,
``mlflow.user``), which the UI shows in its Source / Version / User columns, plus the project's own
``code_version`` and ``code_dirty``. Read once per process (:func:`provenance`).
"""
from __future__ import annotations

import functools
import getpass
import subprocess
import sys
from dataclasses import dataclass
from typing import Dict, Optional

from retina.paths import PACKAGE_DIR

PACKAGE_NAME = "focal-ablations"


@dataclass(frozen=True)
class Provenance:
    version: str  # git describe (with -dirty), or "focal-ablations <version>", or "unknown"
    commit: Optional[str]  # full git commit, None outside a checkout
    branch: Optional[str]
    repo_url: Optional[str]
    dirty: Optional[bool]  # None: cannot tell (no git)


def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout.strip()
    return text if out.returncode == 0 and text else None


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return f"{PACKAGE_NAME} {version(PACKAGE_NAME)}"
    except Exception:  # noqa: BLE001 - not installed (a bare source tree)
        return "unknown"


@functools.lru_cache(maxsize=1)
def provenance() -> Provenance:
    """This process's code, looked up once (the driver's: it is what tags every run)."""
    inside = _git("rev-parse", "--is-inside-work-tree") == "true" and \
        _git("rev-parse", "--show-toplevel") is not None and \
        (PACKAGE_DIR.parent / ".git").exists()  # the checkout that holds this package, not an enclosing one
    if not inside:
        return Provenance(_package_version(), None, None, None, None)
    describe = _git("describe", "--always", "--dirty", "--tags") or "unknown"
    remote = _git("config", "--get", "remote.origin.url")
    return Provenance(describe, _git("rev-parse", "HEAD"), _git("rev-parse", "--abbrev-ref", "HEAD"), remote,
                      describe.endswith("-dirty"))


def code_version() -> str:
    """The version string of :func:`provenance` (e.g. ``3cabd57-dirty``)."""
    return provenance().version


def source_tags(entry_point: str) -> Dict[str, str]:
    """MLflow's standard source tags and the project's code tags for a run made by ``entry_point``
    (what the UI's Source column shows, e.g. ``python -m orchestrator run sweeps/alpha_gamma.yaml``)."""
    p = provenance()
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in this environment
        user = "unknown"
    tags = {"mlflow.source.name": entry_point, "mlflow.source.type": "LOCAL", "mlflow.user": user,
            "code_version": p.version, "code_dirty": "unknown" if p.dirty is None else str(p.dirty).lower(),
            "python": sys.version.split()[0]}
    if p.commit:
        tags["mlflow.source.git.commit"] = p.commit
    if p.branch:
        tags["mlflow.source.git.branch"] = p.branch
    if p.repo_url:
        tags["mlflow.source.git.repoURL"] = p.repo_url
    return tags
