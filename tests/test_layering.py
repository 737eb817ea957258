"""retina/ is a library usable without Ray or MLflow (design.md): importing it must not pull them in."""
import subprocess
import sys


def test_retina_never_imports_ray_or_mlflow():
    code = ("import sys, retina.train, retina.data.synthetic, retina.evaluate; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _imports():
    """retina module -> the retina modules it imports (every import statement, lazy ones included; a
    ``from . import sub`` counts as importing ``sub``, not its package)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    files = {}
    for path in (root / "retina").rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    edges = {m: set() for m in files}
    for module, path in files.items():
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in files]
                found = subs or ([target] if target in files else [])
            elif isinstance(node, ast.Import):
                found = [a.name for a in node.names if a.name in files]
            else:
                continue
            edges[module] |= {t for t in found if t != module}
    return edges


def _cycle(edges):
    """One cycle of the graph as a list of nodes, or None."""
    state, stack = {}, []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in edges.get(v, ()):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        stack.pop()
        state[v] = 2
        return None

    for v in list(edges):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def test_no_import_cycle_between_the_files_of_retina():
    assert _cycle(_imports()) is None, " -> ".join(_cycle(_imports()))


def test_no_import_cycle_between_the_packages_of_retina():
    def package(module):
        parts = module.split(".")
        return ".".join(parts[:2])

    edges = {}
    for a, targets in _imports().items():
        for b in targets:
            if package(a) != package(b):
                edges.setdefault(package(a), set()).add(package(b))
    assert _cycle(edges) is None, " -> ".join(_cycle(edges))


def test_building_the_model_never_trains_or_downloads(tmp_path, monkeypatch):
    """retinanet.from_config / build.build_model with model.backbone_weights=synthetic and nothing
    cached: a network with a random backbone, no pre-training run, nothing written to the cache (the
    pre-training is the explicit step build.resolve_backbone)."""
    monkeypatch.setenv("RETINA_CACHE_DIR", str(tmp_path / "cache"))
    from retina.build import build_model
    from retina.config import load_config

    cfg = load_config("cpu", overrides=["model.fpn_channels=32", "model.head_convs=1"])
    assert cfg.model.backbone_weights == "synthetic"
    model = build_model(cfg, 3)
    assert model.backbone_source is None
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.pth"))


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
