"""The READMEs name files and folders that exist: every relative markdown link, and every path in
backticks under one of the repository's top-level folders (``results/`` aside: the report writes
there), resolves from the repository root or from the README's own folder."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
READMES = ["README.md", "orchestrator/README.md", "results/README.md", "docs/small_regime.md"]
TOP = {p.name for p in ROOT.iterdir() if not p.name.startswith(".") or p.name == ".ci"}
SKIP = ("results/<", "mlruns/", "runs/", ".cache/", "~/", "s3://", "http")


def named_paths(text: str):
    for m in re.finditer(r"`([^`\s]+)`|\]\(([^)\s#]+)\)", text):
        path = (m.group(1) or m.group(2)).rstrip(".,:;")
        if any(c in path for c in "<>*{}=$") or path.startswith(SKIP) or "://" in path:
            continue
        head = path.split("/", 1)[0]
        if m.group(2) or ("/" in path and head in TOP - {"results"}):
            yield path


@pytest.mark.parametrize("readme", READMES)
def test_every_path_a_readme_names_exists(readme):
    doc = ROOT / readme
    if not doc.is_file():
        pytest.skip(f"{readme} is not in this checkout")
    missing = []
    for path in set(named_paths(doc.read_text())):
        if not ((ROOT / path).exists() or (doc.parent / path).exists()):
            missing.append(path)
    assert not missing, f"{readme} names paths that do not exist: {sorted(missing)}"
