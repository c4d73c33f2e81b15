"""Notebook 02 in a real browser: JupyterLab on localhost, headless Debian Chromium via playwright.

Runs every cell, moves the explorer's layer slider and checks that the figure changed, then presses
the live panel's start / pause / stop and checks that training ran in the background of the kernel
(and held still while paused). Screenshots land in ``tests/_artifacts/`` (gitignored).

Needs ``/usr/bin/chromium`` (Debian: ``apt-get install -y chromium``) and the ``playwright`` Python
package; ``playwright install`` is never needed, the system Chromium is used.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "02_relation_visualisation.ipynb"
ARTIFACTS = ROOT / "tests" / "_artifacts"
TOKEN = "ckdlab-browser-test"
# Lab settings for the test: attach every cell to the DOM (the widgets must be findable without
# scrolling) and never reach out for news.
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api(port: int, path: str, method: str = "GET"):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read()
    return json.loads(body) if body else None


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 whose root holds a copy of notebook 02; yields its port."""
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, root / NOTEBOOK)
    settings = tmp_path / "lab-settings"
    for name, values in SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    port = free_port()
    env = {
        **os.environ,  # CKDLAB_RUNS / _RESULTS / _FIGURES point into tmp_path (conftest)
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "MPLBACKEND": "Agg",
    }
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
        f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
        "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False",
        "--allow-root",  # CI containers often run as root; the server only listens on 127.0.0.1 with a token
    ]
    log = (tmp_path / "jupyterlab.log").open("w")
    server = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                api(port, "/api/status")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start; see {tmp_path / 'jupyterlab.log'}") from None
                time.sleep(0.5)
        yield port
    finally:
        if server.poll() is None:
            for kernel in api(port, "/api/kernels"):
                api(port, f"/api/kernels/{kernel['id']}", method="DELETE")
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        log.close()


NOTEBOOK_JS = "window.jupyterapp.shell.currentWidget"
KERNEL_JS = f"{NOTEBOOK_JS}.sessionContext.session?.kernel"


def status_step(page) -> int:
    text = page.locator(".ckdlab-live-status").inner_text()
    return int(text.split("step ")[1].split()[0])


def test_notebook_02_runs_in_jupyterlab_and_its_widgets_respond(lab):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package (pip install playwright)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(f"http://127.0.0.1:{lab}/lab/tree/{NOTEBOOK}?token={TOKEN}")
            page.wait_for_function(f"window.jupyterapp && {NOTEBOOK_JS}?.sessionContext && {KERNEL_JS}?.status === 'idle'", timeout=60_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_function(
                f"""() => {{
                    const cells = {NOTEBOOK_JS}.content.widgets.filter(c => c.model.type === 'code');
                    const failed = cells.some(c => c.model.outputs.toJSON().some(o => o.output_type === 'error'));
                    return failed || (cells.every(c => c.model.executionCount !== null) && {KERNEL_JS}.status === 'idle');
                }}""",
                timeout=100_000,
            )
            errors = page.evaluate(
                f"{NOTEBOOK_JS}.content.widgets.flatMap(c => c.model.type === 'code' ? c.model.outputs.toJSON() : [])"
                ".filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue)"
            )
            assert errors == [], f"notebook 02 failed in JupyterLab: {errors}"

            # The explorer: drag the layer slider from the top layer to the embeddings.
            figure = page.locator("img.ckdlab-explorer-figure")
            figure.wait_for(state="visible", timeout=30_000)
            figure.scroll_into_view_if_needed()
            before_src, before_png = figure.get_attribute("src"), figure.screenshot()
            slider = page.locator(".ckdlab-explorer-layer .noUi-handle")
            track = page.locator(".ckdlab-explorer-layer .noUi-target").bounding_box()
            handle = slider.bounding_box()
            page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
            page.mouse.down()
            page.mouse.move(track["x"] - 20, handle["y"] + handle["height"] / 2, steps=8)
            page.mouse.up()
            page.wait_for_function(
                "src => document.querySelector('img.ckdlab-explorer-figure').getAttribute('src') !== src", arg=before_src, timeout=30_000
            )
            assert page.locator(".ckdlab-explorer-layer .widget-readout").inner_text().strip() == "emb"
            page.wait_for_timeout(300)  # let the new image finish decoding before the screenshot
            assert figure.screenshot() != before_png, "the explorer's figure did not change after moving the layer slider"
            page.locator(".ckdlab-explorer").screenshot(path=str(ARTIFACTS / "notebook02_explorer.png"))

            # The live panel: training runs in the background, pause holds it, stop ends it.
            status = page.locator(".ckdlab-live-status")
            status.scroll_into_view_if_needed()
            first = status_step(page)
            page.locator(".ckdlab-live-start button, button.ckdlab-live-start").first.click()
            page.wait_for_function(
                f"() => parseInt(document.querySelector('.ckdlab-live-status').innerText.split('step ')[1]) >= {first + 2}",
                timeout=60_000,
            )
            page.locator(".ckdlab-live-pause button, button.ckdlab-live-pause").first.click()
            page.wait_for_function("() => document.querySelector('.ckdlab-live-status').innerText.startsWith('paused')", timeout=20_000)
            paused_at = status_step(page)
            page.wait_for_timeout(1500)
            assert status_step(page) == paused_at, "the live panel kept training while paused"
            page.locator(".ckdlab-live").screenshot(path=str(ARTIFACTS / "notebook02_live_panel.png"))
            page.locator(".ckdlab-live-stop button, button.ckdlab-live-stop").first.click()
            page.wait_for_function("() => document.querySelector('.ckdlab-live-status').innerText.startsWith('stopped')", timeout=20_000)
            assert paused_at > first
        finally:
            browser.close()
    assert time.monotonic() - started < 120
