"""Shared fixtures: where the real datasets are, and tiny configs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RETINA_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


def _shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not (path / "images").is_dir():
        reason = f"real dataset {path} not found (it lives in ../shared/data beside the checkout)"
        # CI must never pass by skipping: .ci/run sets RETINA_REQUIRE_SHARED_DATA=1.
        if os.environ.get("RETINA_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def coco32() -> Path:
    return _shared_dataset("coco32")


@pytest.fixture(scope="session")
def bccd() -> Path:
    return _shared_dataset("bccd")
