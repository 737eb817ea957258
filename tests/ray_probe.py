"""A Ray client in a subprocess that tries to join a cluster: is it let in?"""
from __future__ import annotations

import subprocess
import sys
from typing import Dict


def try_to_connect(address: str, env: Dict[str, str]) -> subprocess.CompletedProcess:
    """``ray.init(address)`` in a fresh Python with ``env``; exit 3 and "refused: <error>" when
    refused (Ray gives up after ~20 s of retries), "connected" otherwise."""
    probe = ("import ray, sys\n"
             f"try:\n    ray.init(address={address!r}, logging_level='ERROR')\n"
             "except Exception as e:\n    print('refused:', type(e).__name__); sys.exit(3)\n"
             "print('connected')\n")
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=180)
