"""The web page in a real headless Chromium (Debian's `chromium`, driven by playwright over its own pipe; no
browser download): pick a clip, submit, see the upload's bytes and seconds, step progress with an ETA,
then the audio player whose duration must be the clip's, and the muxed video. The cancel button stops a
long job; with --token-file the page asks for the token and sends it. A screenshot goes to
/tmp/foleyscope-page.png for a person to look at."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from test_server_support import Served

pytest_plugins = ["test_server_support"]  # its session fixtures: one server for all these modules

SCREENSHOT = "/tmp/foleyscope-page.png"
TOKEN = "a-token-for-the-page-test-0123456789"


@pytest.fixture(scope="module")
def browser() -> Iterator:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (`make test` installs it as root: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def page(browser, server) -> Iterator:
    page = browser.new_page(viewport={"width": 900, "height": 1000})
    page.goto(server.url + "/")
    page.wait_for_selector("#health.READY, #health.BUSY", timeout=30_000)
    page.click("summary")  # "More settings": the steps field
    yield page
    page.close()


def test_the_page_uploads_a_clip_and_plays_audio_as_long_as_the_video(page, make_clip):
    clip = make_clip(width=320, height=180, seconds=2.0, fps=25)
    page.set_input_files("#video", str(clip))
    page.fill("#prompt", "a ball bouncing off the floor")
    page.fill("#steps", "25")
    page.click("#submit")
    page.wait_for_function("document.getElementById('audio').duration > 0", timeout=60_000)
    assert abs(page.evaluate("document.getElementById('audio').duration") - 2.0) < 0.01
    assert page.inner_text("#upload-text").startswith("Uploaded 0.0")  # bytes and seconds of the upload
    assert page.inner_text("#job-status") == "succeeded"
    assert page.inner_text("#job-text").startswith("Done in ")
    assert page.locator("#stages li").count() == 7 and "denoise:" in page.inner_text("#stages")
    if page.evaluate("document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.42E01E\"')"):
        page.wait_for_function("document.getElementById('player').duration > 0", timeout=30_000)
        assert abs(page.evaluate("document.getElementById('player').duration") - 2.0) < 0.05
        page.evaluate("v => new Promise(done => { v.onseeked = done; v.currentTime = 1.0; })",
                      page.query_selector("#player"))  # a frame with its index bands, for the screenshot
    page.screenshot(path=SCREENSHOT, full_page=True)
    assert page.locator("#error").is_hidden()


def test_the_cancel_button_stops_a_long_job(page, make_clip):
    page.set_input_files("#video", str(make_clip(width=160, height=90, seconds=1.2, fps=25)))
    page.fill("#steps", "1000")
    page.click("#submit")
    page.wait_for_function("/Denoising step \\d+ of 1000.*left/.test(document.getElementById('job-text').textContent)",
                           timeout=30_000)
    page.click("#cancel")
    page.wait_for_selector("#error:has-text('cancelled')", timeout=30_000)
    assert page.inner_text("#job-status") == "canceled" and page.locator("#submit").is_enabled()


def test_with_a_token_the_page_asks_for_it_and_sends_it(browser, make_clip, tmp_path):
    (tmp_path / "token").write_text(TOKEN)
    guarded = Served(tmp_path / "data", "--workers", "0", "--token-file", str(tmp_path / "token"))
    try:
        page = browser.new_page()
        page.goto(guarded.url + "/")
        page.wait_for_selector("#token-row:not([hidden])")
        page.fill("#token", TOKEN)
        page.set_input_files("#video", str(make_clip(width=160, height=90, seconds=1.2, fps=25)))
        page.click("#submit")
        page.wait_for_selector("#job-text:has-text('Next in the queue')", timeout=30_000)  # no workers: it waits
        assert page.inner_text("#job-status") == "queued" and page.locator("#error").is_hidden()
        assert len(guarded.client.get("/v1/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).json()["jobs"]) == 1
        page.close()
    finally:
        guarded.stop()
