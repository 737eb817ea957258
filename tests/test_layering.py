"""retina/ is a library usable without Ray or MLflow (design.md): importing it must not pull them in."""
import subprocess
import sys


def test_retina_never_imports_ray_or_mlflow():
    code = ("import sys, retina.train, retina.data.synthetic, retina.evaluate; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
