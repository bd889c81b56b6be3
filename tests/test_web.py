"""The web page at `/` in a real headless browser: Debian's chromium driven by Playwright's Python client (nothing is
downloaded: `playwright install` is never run), against a server on a free loopback port."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

sync_api = pytest.importorskip("playwright.sync_api")
from test_server import ANSWER, KEY, engine, model_dir, root, running, scripted  # noqa: E402,F401

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 120_000

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None,
                                reason="Debian's chromium is not installed (make install installs it with apt)")


@pytest.fixture()
def page(engine, root):  # noqa: F811
    with running(engine, media_root=str(root), api_key=KEY) as (base, _), sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            tab = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
            tab.set_default_timeout(WAIT_MS)
            tab.goto(base)
            yield tab
        finally:
            browser.close()


def test_upload_ask_and_see_labels_aus_and_the_timeline_plot(page, engine, root, tmp_path):  # noqa: F811
    page.wait_for_selector("#key-form:not([hidden])")  # the server answered 401: the page asks for the key once
    page.fill("#api-key", KEY)
    page.click("#key-form button")
    page.wait_for_function("document.querySelector('#model-name').textContent === 'tiny-emo'")
    page.wait_for_function("document.querySelectorAll('#clip-select option').length > 1")  # the media root's clips
    page.set_input_files("#clip-file", str(root / "video" / "ew00000.mp4"))
    page.fill("#transcript", "Honestly, I feel fine.")
    page.fill("#question", "How does this person feel?")
    with scripted(engine):
        page.click("#ask-button")
        page.wait_for_selector("body[data-answered=true]")
    labels = page.locator("#labels li.label .name").all_text_contents()
    assert labels == ["happy", "joy"]
    assert page.locator("#labels li.label .value").first.text_content() == "80%"
    aus = page.locator("#aus li").all_text_contents()
    assert aus[0].startswith("AU6") and "cheek" in aus[0].lower() and aus[1].startswith("AU12")
    assert "lip corners pull up" in page.locator("#explanation").text_content()
    assert page.locator("#timeline-plot path.au-line").count() >= 1  # AU curves drawn from the decoded clip
    assert page.locator("#error").is_hidden()
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.std() > 10 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # not a blank page


def test_a_media_root_clip_errors_shown_and_the_key_asked_only_once(page, engine, tmp_path):  # noqa: F811
    page.fill("#api-key", KEY)
    page.click("#key-form button")
    page.wait_for_function("document.querySelector('#model-name').textContent === 'tiny-emo'")
    page.reload()
    page.wait_for_function("document.querySelector('#model-name').textContent === 'tiny-emo'")
    assert page.locator("#key-form").is_hidden()  # remembered
    page.wait_for_function("document.querySelectorAll('#clip-select option').length > 1")
    page.select_option("#clip-select", index=1)  # a clip from the server's media root, sent as its file URL
    with scripted(engine):
        page.click("#ask-button")
        page.wait_for_selector("body[data-answered=true]")
    assert page.locator("#labels li.label .name").all_text_contents() == ["happy", "joy"]
    page.select_option("#clip-select", index=0)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    page.set_input_files("#clip-file", str(junk))
    page.click("#ask-button")
    page.wait_for_selector("#error:not([hidden])")
    assert page.locator("#error").text_content().startswith("415")
