"""End to end in a real browser: ``bench serve`` on a tiny run, driven by Playwright in headless Chromium (the system's
``/usr/bin/chromium``; Playwright's own browser download is never used). Draw a stroke on the canvas, see every
method's prediction, flag the example, find its row in ``dadc.sqlite``.

Skipped when Chromium, Playwright or Gradio is missing, unless ``BENCH_REQUIRE_BROWSER`` is set (CI sets it, so a
missing browser fails CI instead of skipping). ``BENCH_DADC_SCREENSHOT=PATH`` saves the page after the flag there
(docs/dadc-screenshot.png is made that way, see docs/dadc.md).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from _dadc import make_run

CHROMIUM = Path(os.environ.get("BENCH_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
MISSING = [what for what, ok in [(str(CHROMIUM), CHROMIUM.exists()),
                                 ("playwright", importlib.util.find_spec("playwright") is not None),
                                 ("gradio", importlib.util.find_spec("gradio") is not None)] if not ok]
if MISSING and os.environ.get("BENCH_REQUIRE_BROWSER"):
    pytest.fail(f"BENCH_REQUIRE_BROWSER is set but {', '.join(MISSING)} is missing", pytrace=False)
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(bool(MISSING), reason=f"browser test needs {', '.join(MISSING)} "
                                                       "(apt-get install chromium; pip install -e '.[browser]')")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("dadc-browser"), tmp_path_factory.getbasetemp() / "dadc-cache")
    port = _free_port()
    log = open(run.parent / "serve.log", "w")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "bench", "serve", "--run", str(run), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"bench serve did not come up: {(run.parent / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield run, url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_draw_predict_flag_in_headless_chromium(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    run, url = server
    keys = {e["method"]: e["key"] for e in json.loads((run / "checkpoints.json").read_text()).values()}
    shot = Path(os.environ.get("BENCH_DADC_SCREENSHOT", tmp_path / "dadc.png"))
    requested: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.on("request", lambda r: requested.append(r.url))
            page.goto(url)
            canvas = page.locator("#dadc-canvas")
            canvas.wait_for(timeout=30_000)
            status = page.locator("#dadc-status")
            # a blank canvas is refused with a clear message
            page.click("#dadc-predict")
            expect(status).to_contain_text("draw a digit first", timeout=30_000)
            # one stroke, top to bottom: a "1"
            box = canvas.bounding_box()
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.15
            page.mouse.move(x, y)
            page.mouse.down()
            for i in range(1, 21):
                page.mouse.move(x + i * 0.5, y + i * box["height"] * 0.035)
            page.mouse.up()
            page.click("#dadc-predict")
            expect(status).to_contain_text("Predicted", timeout=30_000)
            table = page.locator("#dadc-predictions")
            for method, key in keys.items():
                expect(table).to_contain_text(method)
                expect(table).to_contain_text(key)
            expect(page.locator("#dadc-processed img")).to_be_visible()
            # flagging without a true digit is refused; with one it is stored
            page.click("#dadc-flag")
            expect(status).to_contain_text("choose the true digit", timeout=30_000)
            page.locator("#dadc-label").get_by_text("7", exact=True).click()
            page.click("#dadc-flag")
            expect(status).to_contain_text("Saved example #1 (true digit 7)", timeout=30_000)
            expect(page.locator("#dadc-stats")).to_contain_text("msp")
            page.wait_for_load_state("networkidle")  # let the outputs' loading overlays fade before the screenshot
            page.wait_for_timeout(1000)
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    con = sqlite3.connect(run / "dadc.sqlite")
    (ex_id, label, png), = con.execute("SELECT id, label, image_png FROM examples").fetchall()
    assert (ex_id, label) == (1, 7) and png.startswith(b"\x89PNG")
    preds = dict(con.execute("SELECT method, model_key FROM predictions WHERE example_id = 1").fetchall())
    assert preds == keys
    from bench.dadc.preprocess import from_png

    img = from_png(png)
    assert img.shape == (28, 28) and img.max() == 255 and (img > 0).sum() > 20  # the stroke, not a blank
    assert shot.exists() and shot.stat().st_size > 10_000
    outside = [u for u in requested if not u.startswith((url, "data:", "blob:"))]
    assert requested and not outside, outside  # the page loads nothing from outside the server
