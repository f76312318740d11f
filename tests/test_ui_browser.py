"""Drive the web UI in headless Chromium (Playwright): upload, frame mode, results, downloads, errors.

Runs the real UI server with the tiny random emotion2vec (``emotion.model=<tiny dir>``) on a free
port. Set ``EMOFLOW_SCREENSHOTS=1`` to save ``docs/ui_frame_mode.png`` (and the error states).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from tasks.core.records import EMOTIONS

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
DOCS = Path(__file__).resolve().parent.parent / "docs"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ui_url(request: pytest.FixtureRequest):
    from flows.ui import launch_ui
    from tasks.core.config import load_config

    tiny = request.getfixturevalue("tiny_model_dir")
    cfg = load_config(overrides=[f"emotion.model={tiny}", "emotion.device=cpu"])
    port = _free_port()
    demo = launch_ui(host="127.0.0.1", port=port, config=cfg, block=False)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, ui_url):
    """A fresh page per test (an uploaded file replaces the drop zone)."""
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    pg.set_default_timeout(60_000)
    pg.goto(ui_url)
    pg.wait_for_selector("#analyse-button")
    yield pg
    pg.close()


def _shot(page, name: str) -> None:
    if os.environ.get("EMOFLOW_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        page.screenshot(path=str(DOCS / name), full_page=True)


def _upload(page, path: Path) -> None:
    page.locator("#audio-input input[type=file]").set_input_files(str(path))


def test_frame_mode_end_to_end(page, ui_url, shared_data):
    example = shared_data / "ami" / "dev00.flac"
    assert page.locator("#test-model-banner").is_visible()
    assert "TEST MODEL (random weights)" in page.locator("#test-model-banner").inner_text()
    _upload(page, example)
    page.wait_for_selector("#message:has-text('ready')")
    page.locator("#granularity").get_by_text("frame", exact=True).click()
    page.locator("#extract-embedding").get_by_text("Extract embedding").click()
    page.locator("#analyse-button").click()
    page.wait_for_selector("#message:has-text('done')")

    top = page.locator("#top-emotion")
    label = top.locator(".label").inner_text().strip()
    assert label in EMOTIONS
    conf = float(top.locator(".confidence").inner_text().strip().rstrip("%"))
    assert 100 / 9 - 0.01 <= conf <= 100
    assert top.locator(".emoji").inner_text().strip()
    # the scores bars and the frame-score line chart are rendered images
    assert page.locator("#scores-chart img").first.is_visible()
    chart = page.locator("#frame-chart img").first
    chart.wait_for(state="visible")
    assert chart.evaluate("img => img.naturalWidth") > 100

    # result.json downloads and matches what the page shows
    link = page.locator("#result-json a[href]").first
    href = link.get_attribute("href")
    assert href and "result.json" in href
    body = page.request.get(href if href.startswith("http") else ui_url + href).body()
    doc = json.loads(body)
    assert doc["granularity"] == "frame" and doc["emotion"] == label
    assert list(doc["scores"]) == list(EMOTIONS)
    assert doc["confidence"] * 100 == pytest.approx(conf, abs=0.06)
    assert doc["frames"]["hop_s"] == 0.02 and len(doc["frames"]["scores"][0]) == 9
    assert len(doc["frames"]["scores"]) == pytest.approx(30 / 0.02, rel=0.05)
    emb_href = page.locator("#embedding-npy a[href]").first.get_attribute("href")
    assert emb_href and "embedding.npy" in emb_href
    raw = page.request.get(emb_href if emb_href.startswith("http") else ui_url + emb_href).body()
    assert raw[:6] == b"\x93NUMPY"
    _shot(page, "ui_frame_mode.png")


def test_too_big_file_is_refused_in_the_page(page, tmp_path):
    import soundfile as sf

    big = tmp_path / "twelve_mb.wav"
    noise = (np.random.default_rng(1).normal(0, 0.05, 6_300_000)).astype(np.float32)
    sf.write(big, noise, 16000, subtype="PCM_16")
    assert big.stat().st_size > 12 * 1024 * 1024
    _upload(page, big)
    msg = page.locator("#message")
    page.wait_for_selector("#message:has-text('limit is 10 MB')")
    assert "twelve_mb.wav is 12.0 MB" in msg.inner_text()
    page.locator("#analyse-button").click()
    page.wait_for_selector("#message:has-text('limit is 10 MB')")
    assert "Traceback" not in page.content()


def test_random_bytes_are_refused_in_the_page(page, tmp_path):
    junk = tmp_path / "random.wav"
    junk.write_bytes(np.random.default_rng(2).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    _upload(page, junk)
    page.wait_for_selector("#message:has-text('random.wav')")
    page.locator("#analyse-button").click()
    page.wait_for_selector("#message:has-text('not an audio file')")
    text = page.locator("#message").inner_text()
    assert text.count("\n") == 0 and "random.wav: not an audio file" in text
    assert "Traceback" not in page.content() and "/tmp/" not in text
    _shot(page, "ui_error_not_audio.png")


def test_load_example_button(page):
    from flows.ui import example_audio_path

    example = example_audio_path()
    if example is None:
        pytest.skip("no example audio")
    page.locator("#example-button").click()
    page.wait_for_selector(f"#message:has-text('example {example.name} loaded')")
    assert example.name in page.locator("#audio-input").inner_text().replace("\n", "")
    page.locator("#analyse-button").click()  # utterance mode, the default
    page.wait_for_selector("#message:has-text('done')")
    assert page.locator("#top-emotion .label").inner_text().strip() in EMOTIONS
    assert not page.locator("#frame-chart img").count() or not page.locator("#frame-chart").is_visible()
