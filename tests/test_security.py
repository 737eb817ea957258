"""What the project starts is not open to whoever can reach the machine.

Ray 2.60's gRPC servers bind every interface whatever --node-ip-address says (measured: gcs_server and
raylet listen on *:port), so the local Ray's protection is token authentication, which Ray turns on
for a new cluster: this checks it stays on for the Ray the orchestrator starts. (The multi-node
cluster test checks the same for a `ray start` cluster; tests/test_config.py that YAML builds no
objects; tests/test_train.py that checkpoints load with weights_only=True.)
"""
from __future__ import annotations

import os

import pytest

from tests.ray_probe import try_to_connect


@pytest.mark.slow
def test_the_local_ray_refuses_a_client_without_its_token(ray_session, tmp_path):
    import ray

    address = ray.get_runtime_context().gcs_address
    # a client with no token at all: no RAY_AUTH_* variables, and a home without ~/.ray/auth_token
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(tmp_path)
    out = try_to_connect(address, env)
    assert out.returncode == 3 and "refused" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "InvalidAuthToken" in out.stderr or "Unauthenticated" in out.stderr
