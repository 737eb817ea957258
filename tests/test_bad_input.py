"""Bad input, tried wholesale: every malformed sweep, dataset or command line is one line on stderr
naming the file, key or value and what is expected, exit code 2, and leaves an existing MLflow
store and the project's results/ exactly as they were."""
from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.__main__ import main
from tests.conftest import PROJECT_ROOT

from .conftest import TINY_SETTINGS

GOOD_SWEEP = """\
name: {name}
tables: [1a]
base: {{loss.kind: focal, loss.gamma: 0.0}}
rows:
  - {{table: 1a, label: "CE alpha=0.25", set: {{loss.alpha: 0.25}}}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def _coco_dataset(tmp: Path, *, annotations=None, image_bytes=None, json_text=None) -> list:
    """A one-image COCO dataset in tmp (a real PNG unless image_bytes), as --set overrides."""
    from PIL import Image

    images = tmp / "images"
    images.mkdir(parents=True, exist_ok=True)
    if image_bytes is None:
        Image.new("RGB", (64, 48), (128, 128, 128)).save(images / "a.png")
    elif image_bytes != "missing":
        (images / "a.png").write_bytes(image_bytes)
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
            "categories": [{"id": 7, "name": "thing"}],
            "annotations": annotations if annotations is not None else
            [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [4, 4, 20, 10], "area": 200, "iscrowd": 0}]}
    ann = tmp / "instances.json"
    ann.write_text(json_text if json_text is not None else json.dumps(data))
    return ["data.source=coco", f"data.train.annotations={ann}", f"data.train.images={images}",
            f"data.val.annotations={ann}", f"data.val.images={images}"]


CASE_NAMES = [
    "yaml syntax error", "unknown top-level key", "unknown config key", "wrong type", "alpha out of range",
    "gamma out of range", "negative lr", "empty grid", "duplicate rows", "unknown profile in file", "row of an undeclared table",
    "unknown claim kind", "claim on a missing row", "missing reference CSV",
    "no rows at all", "missing dataset path", "truncated annotation JSON", "bbox with negative size",
    "unknown category id", "image file missing", "image file corrupt", "unknown --profile", "override without =",
    "unknown --set key", "unreachable --address", "unreachable --tracking-uri", "missing sweep file",
]


def _yaml_case(text: str, expected: str):
    return {"sweep": text, "argv": [], "expected": expected}


def _cases(tmp: Path) -> dict:
    """name -> {sweep (YAML text, None for the good one), argv (extra), expected (substring)}; each
    dataset case is built in ``tmp`` only when asked for (a function of nothing)."""
    good = GOOD_SWEEP.format(name="bad_input")
    cases = {
        # sweep YAML
        "yaml syntax error": _yaml_case("name: x\nrows: [\n", "YAML syntax error"),
        "unknown top-level key": _yaml_case(good + "grdi: []\n", "grdi"),
        "unknown config key": _yaml_case(good.replace("loss.gamma: 0.0", "loss.gama: 0.0"),
                                         "did you mean 'loss.gamma'"),
        "wrong type": _yaml_case(good + "  - {table: 1a, label: b, set: {train.iterations: many}}\n",
                                 "train.iterations"),
        "alpha out of range": _yaml_case(good.replace("loss.alpha: 0.25", "loss.alpha: 1.5"),
                                         "loss.alpha=1.5 is out of range; expected a value in [0, 1]"),
        "gamma out of range": _yaml_case(good.replace("loss.gamma: 0.0", "loss.gamma: -1.0"),
                                         "loss.gamma=-1.0 is out of range"),
        "negative lr": _yaml_case(good.replace("loss.gamma: 0.0}", "loss.gamma: 0.0, train.lr: -0.1}"),
                                  "train.lr=-0.1 is out of range"),
        "empty grid": _yaml_case("name: x\ntables: [1a]\ngrid:\n  - {table: 1a, label: 'a={loss.alpha}', "
                                 "axes: {loss.alpha: []}}\n", "loss.alpha"),
        "duplicate rows": _yaml_case(good + "  - {table: 1a, label: \"CE alpha=0.25\", set: {loss.alpha: 0.5}}\n",
                                     "CE alpha=0.25"),
        "unknown profile in file": _yaml_case(good.replace("tables: [1a]", "tables: [1a]\nprofile: laptop"),
                                              "unknown profile 'laptop'"),
        "row of an undeclared table": _yaml_case(good.replace("tables: [1a]", "tables: [9z]"),
                                                 "table '1a' is not in the sweep's tables [9z]"),
        "unknown claim kind": _yaml_case(good + "claims:\n  - {kind: outperforms, a: \"CE alpha=0.25\", b: x}\n",
                                         "unknown claim kind 'outperforms'"),
        "claim on a missing row": _yaml_case(good + "claims:\n  - {kind: learns, row: \"CE alpha=0.5\", above: 1}\n",
                                             "the sweep has no row 'CE alpha=0.5'"),
        "missing reference CSV": _yaml_case(good.replace("tables: [1a]", "tables: [{name: mine, reference: no.csv}]")
                                            .replace("table: 1a, ", ""), "no.csv"),
        "no rows at all": _yaml_case("name: x\ntables: [1a]\n", "rows"),
        # datasets
        "missing dataset path": {"sweep": None, "argv": ["--set", "data.source=coco",
                                                         "data.train.annotations=/nonexistent/a.json",
                                                         "data.train.images=/nonexistent",
                                                         "data.val.annotations=/nonexistent/a.json",
                                                         "data.val.images=/nonexistent"],
                                 "expected": "/nonexistent"},
        "truncated annotation JSON": {"sweep": None, "argv": ["--set", *_coco_dataset(
            tmp / "trunc", json_text='{"images": [{"id": 1, "file_na')], "expected": "instances.json"},
        "bbox with negative size": {"sweep": None, "argv": ["--set", *_coco_dataset(
            tmp / "neg", annotations=[{"id": 5, "image_id": 1, "category_id": 7, "bbox": [4, 4, -3, 10]}])],
            "expected": "annotation 5"},
        "unknown category id": {"sweep": None, "argv": ["--set", *_coco_dataset(
            tmp / "cat", annotations=[{"id": 6, "image_id": 1, "category_id": 99, "bbox": [4, 4, 3, 10]}])],
            "expected": "category_id=99"},
        "image file missing": {"sweep": None, "argv": ["--set", *_coco_dataset(tmp / "miss", image_bytes="missing")],
                               "expected": "a.png: image file not found"},
        "image file corrupt": {"sweep": None, "argv": ["--set", *_coco_dataset(tmp / "bad", image_bytes=b"garbage" * 9)],
                               "expected": "a.png: cannot read image"},
        # command line
        "unknown --profile": {"sweep": None, "argv": ["--profile", "laptop"], "expected": "unknown profile 'laptop'"},
        "override without =": {"sweep": None, "argv": ["--set", "loss.alpha"], "expected": "loss.alpha"},
        "unknown --set key": {"sweep": None, "argv": ["--set", "loss.alpah=0.5"], "expected": "did you mean 'loss.alpha'"},
        "unreachable --address": {"sweep": None, "argv": ["--address", f"127.0.0.1:{_free_port()}"],
                                  "expected": "cannot reach the Ray cluster"},
        "unreachable --tracking-uri": {"sweep": None, "argv": ["--tracking-uri", f"http://127.0.0.1:{_free_port()}"],
                                       "expected": "cannot reach the MLflow tracking server"},
        "missing sweep file": {"sweep": "MISSING", "argv": [], "expected": "not found"},
    }
    return cases


@pytest.fixture(scope="module")
def existing_store(tmp_path_factory):
    """A store that already holds an experiment and a run: bad input must leave it byte for byte."""
    root = tmp_path_factory.mktemp("existing")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("earlier", artifact_location=str(root / "mlruns"))
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "AP", 1.0)
    client.set_terminated(run.info.run_id)
    return {"uri": uri, "db": root / "mlflow.db", "root": root}


def test_at_least_twenty_bad_inputs_are_tried(tmp_path):
    assert sorted(_cases(tmp_path)) == sorted(CASE_NAMES) and len(CASE_NAMES) >= 20


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(name, tmp_path, existing_store, capsys):
    case = _cases(tmp_path)[name]
    if case["sweep"] == "MISSING":
        path = tmp_path / "no_such_sweep.yaml"
    else:
        path = tmp_path / "sweep.yaml"
        path.write_text(case["sweep"] if case["sweep"] is not None else GOOD_SWEEP.format(name="bad_input"))
    storage = tmp_path / "ray"
    store_before = hashlib.sha256(existing_store["db"].read_bytes()).hexdigest()
    results_before = _tree_digest(PROJECT_ROOT / "results")
    argv = ["run", str(path), "--tracking-uri", existing_store["uri"], "--storage-path", str(storage),
            "--set", *TINY_SETTINGS, f"data.synthetic.cache_dir={tmp_path / 'synthetic'}"]
    if "--tracking-uri" in case["argv"]:
        argv = argv[:2] + argv[4:]
    rc = main(argv + case["argv"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, (name, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), (name, err)
    assert case["expected"] in lines[0], (name, lines[0])
    assert hashlib.sha256(existing_store["db"].read_bytes()).hexdigest() == store_before, name
    assert _tree_digest(PROJECT_ROOT / "results") == results_before, name
    assert not storage.exists(), name


@pytest.mark.parametrize("argv,expected", [
    (["report", "no_such_sweep"], "no_such_sweep"),
    (["report", "--tracking-uri", "http://127.0.0.1:{port}"], "cannot reach the MLflow tracking server"),
])
def test_report_bad_input_exits_2_and_writes_nothing(argv, expected, tmp_path, existing_store, capsys):
    argv = [a.format(port=_free_port()) for a in argv]
    if "--tracking-uri" not in argv:
        argv += ["--tracking-uri", existing_store["uri"]]
    store_before = hashlib.sha256(existing_store["db"].read_bytes()).hexdigest()
    rc = main(argv + ["--out", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "results").exists()
    assert hashlib.sha256(existing_store["db"].read_bytes()).hexdigest() == store_before
