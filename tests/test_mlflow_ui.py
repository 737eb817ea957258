"""MLflow's UI, checked as a user sees it.

A tiny two-row sweep is run into the session's throwaway SQLite store, `mlflow server` is started
on that store, and headless Chromium (Debian's ``chromium``, driven by Playwright) opens its pages:

- the sweep's experiment, in the "Model training" view, lists the parent run alone until its
  expander is clicked, then each trial's child run under it, linking to that run's page;
- a child run's page shows the run's AP in its metrics table;
- a child run's "Model metrics" tab draws the run's loss curve: one point per logged step, placed
  where the logged values put them.

Every assertion reads what the browser renders (text, links, the chart's SVG path), compared with
what MlflowClient reads from the same store. Without Chromium or Playwright the tests skip, unless
``RETINA_REQUIRE_BROWSER=1`` (set by ``.ci/run``) turns the skip into a failure.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.__main__ import main

pytestmark = pytest.mark.slow

SWEEP_NAME = "ui_tiny"
UI_SWEEP = f"""\
name: {SWEEP_NAME}
tables: [1a]
base: {{loss.kind: focal, loss.gamma: 0.0}}
rows:
  - {{label: "CE alpha=0.25", set: {{loss.alpha: 0.25}}}}
  - {{label: "CE alpha=0.75", set: {{loss.alpha: 0.75}}}}
"""
CHILD_LABEL = "CE alpha=0.25"  # the child run whose page is opened
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
SERVER_START_S = 240  # `mlflow server` takes 20-30 s to answer on 2 idle cores, far more under load
UI_TIMEOUT_MS = 90_000  # the single-page app's first load parses megabytes of JavaScript
EXPECT_TIMEOUT_MS = 30_000  # for what appears once the page it is on has rendered


def _chromium() -> str | None:
    return shutil.which("chromium") or (  # Debian's package; Playwright downloads no browser here
        "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)


@pytest.fixture(scope="module")
def chromium() -> str:
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[test]')")
    executable = _chromium()
    if executable is None:
        missing.append("Debian's chromium (apt-get install chromium)")
    if missing:
        reason = "MLflow UI test needs " + " and ".join(missing)
        # CI must never pass by skipping: .ci/run installs both and sets RETINA_REQUIRE_BROWSER=1.
        if os.environ.get("RETINA_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return executable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (the CLI, uvicorn and its workers), SIGKILL if it lingers."""
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break
        try:
            server.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
    try:  # members of the group that outlived its leader
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait_healthy(server: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited with {server.returncode}; its log:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer {url}/health in {SERVER_START_S} s; its log:\n"
                f"{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def ui_store(chromium, ray_session, orchestrator_dirs):
    """The tiny sweep, written into the session's store, and `mlflow server` on that store.

    The server is started before the sweep runs (its start-up, mostly imports, overlaps the
    training) on a store whose schema already exists, so the two never race to create it."""
    root = orchestrator_dirs["root"] / "mlflow-ui"
    root.mkdir(exist_ok=True)
    uri = orchestrator_dirs["uri"]
    client = MlflowClient(uri)
    client.search_experiments()  # creates the store's schema if no other test has yet
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    # The UI needs neither the server's background job runner (seven more processes) nor telemetry.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
           "DO_NOT_TRACK": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", uri, "--workers", "1"],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        sweep = root / f"{SWEEP_NAME}.yaml"
        sweep.write_text(UI_SWEEP)
        rc = main(["run", str(sweep), "--tracking-uri", uri, "--storage-path", str(orchestrator_dirs["storage"]),
                   "--set", *orchestrator_dirs["settings"]])
        assert rc == 0, f"the tiny sweep exited {rc}"
        experiment = client.get_experiment_by_name(SWEEP_NAME)
        runs = client.search_runs([experiment.experiment_id], max_results=100)
        parent = next(r for r in runs if r.data.tags.get("kind") == "sweep")
        trials = [r for r in runs if r.data.tags.get("kind") == "trial"]
        assert len(trials) == 2 and all(r.data.tags["status"] == "finished" for r in trials)
        _wait_healthy(server, url, log)
        yield {"url": url, "client": client, "experiment_id": experiment.experiment_id, "parent": parent,
               "children": trials}
    finally:
        _stop(server)


@pytest.fixture(scope="module")
def ui_page(chromium, ui_store):
    """One browser tab for the module: the app's JavaScript is loaded once, then routes change."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
            tab.set_default_timeout(UI_TIMEOUT_MS)
            yield tab
        finally:
            browser.close()


def _open(page, ui_store: dict, route: str) -> None:
    page.goto(f"{ui_store['url']}/#{route}", wait_until="load")


def _assert_shown(locator) -> None:
    from playwright.sync_api import expect

    expect(locator).to_be_visible(timeout=EXPECT_TIMEOUT_MS)


def _child(ui_store: dict, label: str = CHILD_LABEL):
    return next(r for r in ui_store["children"] if r.data.tags["label"] == label)


def _run_links(page, experiment_id: str) -> dict:
    """Run name -> run id of every link to a run page that the page shows."""
    pattern = re.compile(rf"#/experiments/{experiment_id}/runs/([0-9a-f]{{32}})$")
    links = {}
    for link in page.locator(f"a[href*='#/experiments/{experiment_id}/runs/']").all():
        match = pattern.search(link.get_attribute("href") or "")
        if match and link.is_visible():
            links[link.inner_text().strip()] = match.group(1)
    return links


def test_the_sweeps_experiment_lists_the_parent_run_with_its_child_runs_nested_under_it(ui_page, ui_store):
    parent = ui_store["parent"]
    experiment_id = ui_store["experiment_id"]
    # what the "Model training" switch (top left) opens: the experiment's runs table
    _open(ui_page, ui_store, f"/experiments/{experiment_id}/runs?workflowType=machine_learning")
    parent_link = ui_page.locator(f"a[href='#/experiments/{experiment_id}/runs/{parent.info.run_id}']")
    parent_link.wait_for()
    # collapsed: the parent alone, its children nested inside it
    assert _run_links(ui_page, experiment_id) == {parent.info.run_name: parent.info.run_id}
    expected = {r.info.run_name: r.info.run_id for r in [parent, *ui_store["children"]]}
    parent_row = ui_page.get_by_role("row").filter(has=parent_link)
    # the [+] left of the parent's name (MLflow's RunNameCellRenderer)
    parent_row.locator("button[data-component-id*='runnamecellrenderer']").click()
    for child in ui_store["children"]:
        ui_page.get_by_role("row").get_by_role("link", name=child.info.run_name, exact=True).wait_for()
    # expanded: each child by its name ("CE alpha=0.25 [<trial key>]"), linking to its own run page
    assert _run_links(ui_page, experiment_id) == expected
    _assert_shown(ui_page.get_by_text(f"{len(expected)} matching runs"))


def test_a_child_runs_page_shows_its_AP(ui_page, ui_store):
    child = _child(ui_store)
    _open(ui_page, ui_store, f"/experiments/{ui_store['experiment_id']}/runs/{child.info.run_id}")
    metrics_row = ui_page.get_by_role("row").filter(has=ui_page.get_by_role("cell", name="AP", exact=True))
    metrics_row.wait_for()
    _assert_shown(ui_page.get_by_role("heading", name=child.info.run_name, exact=True))
    name, value = metrics_row.inner_text().split()
    assert name == "AP" and float(value) == pytest.approx(child.data.metrics["AP"], rel=1e-9, abs=1e-12)
    # A tiny sweep's AP is 0 in every run, so the value alone cannot tell this run from the other:
    # inference_ms, on the same table, differs between them.
    inference = ui_page.get_by_role("row").filter(has=ui_page.get_by_role("cell", name="inference_ms", exact=True))
    assert float(inference.inner_text().split()[1]) == pytest.approx(child.data.metrics["inference_ms"], rel=1e-9)


def _points(path: str) -> list:
    """The vertices of a Plotly line's SVG path ("M x,y L x,y ...")."""
    return [(float(x), float(y)) for x, y in re.findall(r"[ML]\s*(-?[\d.]+)[ ,]\s*(-?[\d.]+)", path)]


def _drawn_to_scale(pixels: list, values: list, increasing: bool, tolerance_px: float = 1.0) -> bool:
    """True when pixels = a + b * values with b of the given sign: the values, drawn on a linear axis."""
    lo, hi = values.index(min(values)), values.index(max(values))
    if values[hi] == values[lo]:
        return max(pixels) - min(pixels) <= tolerance_px
    scale = (pixels[hi] - pixels[lo]) / (values[hi] - values[lo])
    return (scale > 0) == increasing and all(
        abs(pixels[lo] + scale * (v - values[lo]) - p) <= tolerance_px for p, v in zip(pixels, values))


def test_a_child_runs_model_metrics_tab_draws_its_loss_curve(ui_page, ui_store):
    child = _child(ui_store)
    history = sorted(ui_store["client"].get_metric_history(child.info.run_id, "loss"), key=lambda m: m.step)
    assert len(history) >= 3  # a curve, not a point (TINY_SETTINGS: 6 iterations, logged every 2)
    _open(ui_page, ui_store, f"/experiments/{ui_store['experiment_id']}/runs/{child.info.run_id}/model-metrics")
    ui_page.get_by_placeholder("Search metric charts").fill("loss")
    card = ui_page.get_by_test_id("experiment-view-compare-runs-card").filter(
        has=ui_page.locator("h4[title='loss']"))
    line = card.locator("path.js-line").first
    line.wait_for(state="attached")
    _assert_shown(card.get_by_text(f"{child.info.run_name} (loss)", exact=True))  # the legend
    points = _points(line.get_attribute("d"))
    assert len(points) == len(history), (points, history)
    # x grows with the step, y (SVG: downwards) falls as the loss grows, both linearly
    assert _drawn_to_scale([x for x, _ in points], [m.step for m in history], increasing=True), (points, history)
    assert _drawn_to_scale([y for _, y in points], [m.value for m in history], increasing=False), (points, history)
