"""The web page at ``/``: served offline-safe (no external URL, strict CSP), and driven for real.

The browser test starts a REAL ``pneumocxr serve`` process on a free loopback port (tiny generated
checkpoint, --no-auth) and drives Debian's chromium with Playwright: upload a real X-ray, see the
decision, the probability and the overlay, move the opacity slider with the keyboard, upload a text
file renamed .jpg and read the error. A screenshot is saved in the test's tmp dir.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx
from fastapi.testclient import TestClient
from tests.inference.conftest import write_checkpoint

from pneumocxr.explain.geometry import display_size
from pneumocxr.serving.app import create_app
from pneumocxr.serving.page import CONTENT_TYPES, static_files
from pneumocxr.serving.settings import ServeSettings

CHROMIUM = os.environ.get("PNEUMOCXR_CHROMIUM", "/usr/bin/chromium")
CARD = """# Model card: tiny test model

> **Research use only.** Not a medical device.

## Details

| field | value |
|---|---|
| Architecture | custom_cnn <script>window.cardInjected = true</script> |

- first point with `code` and *emphasis*
- second point
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", seed=1)


@pytest.fixture
def card(tmp_path) -> Path:
    path = tmp_path / "card.md"
    path.write_text(CARD, encoding="utf-8")
    return path


# ---- what is served (no browser needed) ---------------------------------------------------------


def test_page_and_assets_have_their_content_types_and_a_strict_csp(checkpoint, card, tmp_path):
    settings = ServeSettings(model=checkpoint, db=str(tmp_path / "audit.db"), auth=False, card=card)
    with TestClient(create_app(settings)) as client:
        for path, name in (("/", "index.html"), ("/static/app.js", "app.js"), ("/static/app.css", "app.css")):
            answer = client.get(path)
            assert answer.status_code == 200
            assert answer.headers["content-type"] == CONTENT_TYPES[name]
            csp = answer.headers["content-security-policy"]
            assert "default-src 'self'" in csp and "img-src 'self' data: blob:" in csp
            assert answer.headers["x-content-type-options"] == "nosniff"
        assert client.get("/static/secrets.txt").status_code == 404
        assert client.get("/static/..%2Fapp.py").status_code == 404


def test_page_uses_no_external_url_and_never_parses_untrusted_html():
    files = {name: data.decode("utf-8") for name, data in static_files().items()}
    for name, text in files.items():
        assert not re.findall(r"https?://", text), f"{name} names an external URL"
        assert "@import" not in text and "url(" not in text.replace("url(#", ""), name
    script = files["app.js"]
    sinks = (".innerHTML", ".outerHTML", ".insertAdjacentHTML", "document.write", "eval(", "new Function")
    for sink in sinks:
        assert sink not in script, f"app.js uses {sink}"
    page = files["index.html"]
    assert "Research use only — not a medical device" in page
    assert '<input id="file" type="file"' in page and '<label for="file">' in page
    assert 'aria-live="polite"' in page and 'role="alert"' in page


# ---- the page in a real browser against a real server -------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(checkpoint, card, tmp_path):
    """A real ``pneumocxr serve`` process on a free loopback port; stopped by its PID afterwards."""
    port = free_port()
    log_path = tmp_path / "server.log"
    log = log_path.open("w")
    command = [sys.executable, "-m", "pneumocxr", "serve", "--model", str(checkpoint), "--port", str(port)]
    command += ["--db", str(tmp_path / "audit.db"), "--no-auth", "--card", str(card), "--threads", "1"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"serve exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"serve not ready in 90 s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        log.close()


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright (Python) is not installed")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.skip(f"no chromium at {CHROMIUM} (apt install chromium, or set PNEUMOCXR_CHROMIUM)")
    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=args, timeout=60_000
        )
        try:
            yield browser
        finally:
            browser.close()


def real_xray(shared_data: Path) -> Path:
    """The first film at its own (non-square) aspect: the overlay must keep that geometry."""
    from PIL import Image

    folder = shared_data / "chest_xray" / "train" / "PNEUMONIA"
    for path in sorted(folder.glob("*.jpeg")):
        with Image.open(path) as image:
            if image.width != image.height:
                return path
    pytest.skip(f"no non-square JPEG film in {folder}")


@pytest.mark.slow
@pytest.mark.realdata
def test_page_shows_a_real_films_decision_and_overlay_and_a_readable_error(
    server, browser, shared_data, tmp_path
):
    from PIL import Image

    film = real_xray(shared_data)
    width, height = Image.open(film).size
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(60_000)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.goto(server + "/")

    assert "Research use only — not a medical device" in page.locator("#notice").inner_text()
    # the model card is rendered as text: its <script> shows, never runs
    page.locator("#card table").wait_for(state="attached")
    assert "<script>" in page.locator("#card").text_content()
    assert page.evaluate("window.cardInjected === undefined")
    assert page.locator("#card script").count() == 0

    page.focus("#file")  # a real, focusable file input
    assert page.evaluate("document.activeElement.id") == "file"
    page.set_input_files("#file", str(film))
    page.locator("#result").wait_for(state="visible")
    assert page.locator("#decision").inner_text() in ("NORMAL", "PNEUMONIA")
    probability = page.locator("#probability-text").inner_text()
    assert re.search(r"P\(PNEUMONIA\) = 0\.\d{3} — threshold 0\.500", probability), probability
    assert page.locator("#bar-threshold").is_visible() and page.locator("#bar-band").is_visible()
    shown_h, shown_w = display_size(height, width, 1024)
    for image in ("#film", "#heatmap"):
        size = page.eval_on_selector(image, "e => [e.naturalWidth, e.naturalHeight, e.complete]")
        assert size == [shown_w, shown_h, True], image
    assert page.locator("#status").inner_text().startswith(f"Analysed {film.name}")

    page.focus("#opacity")  # the slider by keyboard: 45 % → 80 %
    for _ in range(7):
        page.keyboard.press("ArrowRight")
    assert page.locator("#opacity-value").inner_text() == "80 %"
    assert page.eval_on_selector("#heatmap", "e => getComputedStyle(e).opacity") == "0.8"

    screenshot = tmp_path / "page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"screenshot: {screenshot}")

    text_file = tmp_path / "notes.jpg"
    text_file.write_text("this is a text file, not an X-ray\n" * 20)
    page.set_input_files("#file", str(text_file))
    error = page.locator("#error")
    error.wait_for(state="visible")
    message = error.inner_text()
    assert message.startswith("Could not analyse “notes.jpg”:")
    assert "[unsupported_image]" in message
    assert page.locator("#result").is_hidden()
    page.screenshot(path=str(tmp_path / "page-error.png"), full_page=True)
    print(f"error screenshot: {tmp_path / 'page-error.png'}")
    assert not [p for p in problems if "Content Security Policy" in p or "Refused" in p], problems
