"""The report and the MLflow UI as a person sees them: rendered by headless Chromium (Debian's package), with
screenshots saved in each test's tmp dir."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
UI_START_TIMEOUT = 180  # s: MLflow's server imports a lot, and CI machines are shared
PAGE_TIMEOUT = 60_000  # ms


def _unavailable(reason: str):
    if os.environ.get("MLPIPE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (required: MLPIPE_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


@pytest.fixture
def browser(tmp_path):
    """A Chromium context with a fresh profile of its own (--user-data-dir, set by Playwright)."""
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing: apt-get install chromium chromium-driver")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed: pip install -e '.[test]'")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=FLAGS,
            viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(PAGE_TIMEOUT)
        try:
            yield context
        finally:
            context.close()


def test_report_renders_with_the_model_table_and_every_image_loaded(run_workspace, browser, tmp_path):
    ws, result = run_workspace
    page = browser.new_page()
    page.goto((ws / "reports" / f"{result['run_id']}.html").as_uri())
    page.wait_for_load_state("load")

    rows = page.locator("#models tbody tr")
    assert rows.count() == len(result["models"])
    names = [rows.nth(i).get_attribute("data-model") for i in range(rows.count())]
    assert names == [m["name"] for m in result["models"]]
    champion = page.locator("#models tr.is-champion")
    assert champion.count() == 1 and champion.get_attribute("data-model") == result["champion"]["name"]
    assert "champion" in champion.inner_text().lower()
    svm = next(m for m in result["models"] if m["kind"] == "svm")
    assert f"{svm['metrics']['f1']:.4f}" in page.locator(f'#models tr[data-model="{svm["name"]}"]').inner_text()

    images = page.evaluate("""() => [...document.images].map(i => ({
        plot: i.dataset.plot, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
        shown: i.getBoundingClientRect().width}))""")
    names = [m["name"] for m in result["models"]]
    searched = [m["name"] for m in result["models"] if m["kind"] != "baseline"]
    expected = ([f"confusion:{n}" for n in names] + ["roc", "pr", "reliability"] + [f"importance:{n}" for n in names]
                + [f"trials:{n}" for n in searched])
    assert [img["plot"] for img in images] == expected
    for img in images:
        assert img["complete"] and img["width"] > 0 and img["height"] > 0 and img["shown"] > 0, img

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    print(f"report screenshot: {shot}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture
def ui_server(run_workspace, tmp_path):
    """``mlpipe ui`` as a user starts it, in its own process group; yields (latest run URL, output)."""
    port = _free_port()
    out, err = tmp_path / "ui.out", tmp_path / "ui.err"
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "mlpipe", "ui", "--port", str(port),
                                 "--workspace", str(run_workspace[0])], stdout=fo, stderr=fe,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + UI_START_TIMEOUT
        while not _answers(f"http://127.0.0.1:{port}/health"):
            assert proc.poll() is None, f"mlpipe ui exited {proc.returncode}:\n{err.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"mlpipe ui did not answer in {UI_START_TIMEOUT} s"
            time.sleep(1)
        printed = out.read_text()
        assert f"http://127.0.0.1:{port}" in printed.splitlines()[0]
        latest = re.search(r"^latest run: (\S+)$", printed, re.M)
        assert latest, printed
        yield latest.group(1), port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # mlpipe ui stops the server's own process group in turn
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not _answers(f"http://127.0.0.1:{port}/health"), "the MLflow server outlived mlpipe ui"


def test_mlflow_ui_shows_the_run_and_its_metrics(run_workspace, ui_server, browser, tmp_path):
    _, result = run_workspace
    latest, port = ui_server
    assert latest.endswith(f"/runs/{result['run_id']}")  # the URL mlpipe ui printed is this run's page
    page = browser.new_page()

    page.goto(latest)
    page.get_by_text(result["run_id"], exact=True).first.wait_for()
    page.get_by_text("turku pipeline", exact=True).first.wait_for()
    page.get_by_text("rows_read", exact=True).first.wait_for()  # the UI fills the page in as data arrives
    for m in result["models"]:  # its child runs, one per model, are linked from it
        page.get_by_role("link", name=m["kind"], exact=True).first.wait_for()
    page.screenshot(path=str(tmp_path / "ui-run.png"))

    page.get_by_role("tab", name="Artifacts").click()  # the run's report is one of its artifacts
    page.get_by_text("report.html", exact=True).first.wait_for()

    champion = next(m for m in result["models"] if m["name"] == result["champion"]["name"])
    page.goto(latest.replace(result["run_id"], champion["run_id"]))
    page.get_by_text(champion["run_id"], exact=True).first.wait_for()
    row = page.get_by_role("row").filter(has=page.get_by_text("f1", exact=True))
    row.first.wait_for()
    assert repr(champion["metrics"]["f1"]) in row.first.inner_text()
    row.first.scroll_into_view_if_needed()  # the screenshot shows the metrics table
    shot = tmp_path / "ui-champion.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 20_000
    print(f"MLflow UI screenshot: {shot}")

    # the model version's page shows the signature its MLmodel declares (mlflow_model)
    import json

    import yaml

    ws = run_workspace[0]
    (mlmodel,) = ws.glob(f"artifacts/**/{champion['run_id']}/artifacts/model/MLmodel")
    signature = yaml.safe_load(mlmodel.read_text())["signature"]
    inputs, outputs = (len(json.loads(signature[k])) for k in ("inputs", "outputs"))
    page.goto(f"http://127.0.0.1:{port}/#/models/{champion['name']}/versions/{result['champion']['version']}")
    page.get_by_text("Schema", exact=True).first.wait_for()
    page.get_by_text(f"Inputs ({inputs})", exact=True).first.wait_for()
    page.get_by_text(f"Outputs ({outputs})", exact=True).first.wait_for()
    page.get_by_text("Schema", exact=True).first.scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "ui-signature.png"))
