"""`text2video serve` in a real browser: headless Chromium (Debian's package) driven by Playwright's Python package.

The server runs as `text2video serve` in a subprocess on a free local port, with two tiny models. Outside CI
the tests skip when no Chromium is installed (`apt-get install -y chromium chromium-driver`); in CI
(``CI`` set) a missing browser fails them: `.ci/run` installs it.
Set ``TEXT2VIDEO_SCREENSHOT=docs/images/serve.png`` to also write the page's screenshot there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from serve_models import save_tiny_pipeline

CHROMIUM_FLAGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip
TIMEOUT_MS = 60_000


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser tests (.ci/run installs chromium with apt-get)")
    pytest.skip(reason)


def find_chromium() -> str:
    for candidate in (os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    _unavailable("no Chromium installed (apt-get install -y chromium chromium-driver)")
    raise AssertionError  # unreachable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`text2video serve` with two tiny models: (address, output folder)."""
    try:
        import gradio  # noqa: F401
    except ModuleNotFoundError:
        _unavailable('Gradio is not installed (pip install "text2video[serve]")')
    root = tmp_path_factory.mktemp("serve")
    save_tiny_pipeline(root / "tiny")
    save_tiny_pipeline(root / "tiny-fps", fps_model=True)
    out = root / "outputs"
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    log = open(root / "server.log", "w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "text2video.cli", "serve", "--model", str(root / "tiny"), "--model", str(root / "tiny-fps"),
         "--port", str(port), "--output-dir", str(out)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    address = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        text = (root / "server.log").read_text()
        if "text2video serve: http" in text:
            address = text.split("text2video serve: ", 1)[1].split()[0]
            break
        time.sleep(0.2)
    if address is None:
        process.kill()
        pytest.fail(f"text2video serve did not start:\n{(root / 'server.log').read_text()[-3000:]}")
    assert address == f"http://127.0.0.1:{port}/"  # localhost unless --host says otherwise
    yield address, out
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ModuleNotFoundError:
        _unavailable("Playwright's Python package is not installed (pip install playwright)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server[0])
    page.locator("#t-generate").wait_for()
    yield page
    context.close()


def set_number(page, elem_id: str, value) -> None:
    """Type into a number box (a slider's or a Number's) and leave it, as a person does."""
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Tab")


def written_videos(out: Path) -> set[Path]:
    return set(out.rglob("*.mp4")) if out.exists() else set()


def fetch_video(page, selector: str, tmp_path: Path) -> tuple[Path, np.ndarray]:
    """The file behind the page's video element, fetched over HTTP and decoded with PyAV."""
    import av

    video = page.locator(f"{selector} video")
    video.wait_for()
    src = video.get_attribute("src")
    response = page.request.get(src)
    assert response.ok, src
    path = tmp_path / f"fetched_{abs(hash(src))}.mp4"
    path.write_bytes(response.body())
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
    return path, frames


def test_type_a_prompt_set_steps_generate_and_play_the_video(page, server, tmp_path) -> None:
    _, out = server
    before = written_videos(out)
    page.locator("#t-prompt textarea").fill("a red circle moving left")
    set_number(page, "t-steps", 2)
    page.locator("#t-generate").click()
    path, frames = fetch_video(page, "#t-video", tmp_path)
    assert frames.shape == (4, 16, 16, 3)  # the model's 4 frames of 16x16
    new = written_videos(out) - before
    assert len(new) == 1
    written = new.pop()
    settings = json.loads(written.with_suffix(".json").read_text())
    assert settings["prompt"] == "a red circle moving left" and settings["steps"] == 2
    assert written.with_suffix(".gif").is_file() and written.read_bytes() == path.read_bytes()
    # the drawn seed is shown in the seed box; the command and settings are in the page
    seed = page.locator("#t-seed input").input_value()
    assert int(seed) == settings["seed"]
    page.get_by_text("Settings of this result").first.click()
    assert "text2video generate 'a red circle moving left'" in page.locator("#t-command textarea").input_value()
    assert page.get_by_text(".gif").first.is_visible()  # the download links
    shot = tmp_path / "serve.png"
    page.screenshot(path=str(shot), full_page=True)  # the test's output folder
    assert shot.stat().st_size > 10_000
    target = os.environ.get("TEXT2VIDEO_SCREENSHOT")
    if target:  # for the docs: the same picture in 128 colours, to keep the repository small
        from PIL import Image

        with Image.open(shot) as picture:
            picture.convert("RGB").quantize(colors=128).save(target, optimize=True)


def test_generate_from_an_uploaded_first_frame(page, server, tmp_path) -> None:
    from PIL import Image

    _, out = server
    y, x = np.mgrid[0:24, 0:40]
    picture = np.stack([255 * x / 39, 255 * y / 23, np.full_like(x, 128.0)], axis=-1).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "first.png")
    page.locator("#tab-image-button, button[role=tab]:has-text('Image to video')").first.click()
    page.locator("#i-first input[type=file]").set_input_files(str(tmp_path / "first.png"))
    page.locator("#i-prompt textarea").fill("a circle")
    set_number(page, "i-frames", 5)
    before = written_videos(out)
    page.locator("#i-generate").click()
    _, frames = fetch_video(page, "#i-video", tmp_path)
    assert frames.shape == (5, 16, 16, 3)
    written = (written_videos(out) - before).pop()
    settings = json.loads(written.with_suffix(".json").read_text())
    assert settings["mode"] == "image" and settings["frames"] == 5
    given = np.asarray(Image.open(settings["inputs"]["first"])).astype(int)
    assert given.shape == (16, 16, 3)
    assert np.abs(frames[0] - given).mean() < np.abs(frames[-1] - given).mean()  # starts from the picture


def test_a_bad_value_is_refused_with_a_message_in_the_page(page, server) -> None:
    _, out = server
    before = written_videos(out)
    page.locator("#t-prompt textarea").fill("a red circle")
    set_number(page, "t-height", 17)
    page.locator("#t-generate").click()
    message = page.get_by_text("height 17 is not a multiple of 2")
    message.first.wait_for()
    assert "Traceback" not in page.content()
    assert page.locator("#t-video video").count() == 0
    assert written_videos(out) == before


def test_the_model_picker_shows_each_models_controls(page) -> None:
    fps = page.locator("#t-fps")
    assert not fps.is_visible()  # the first model has no fps embedding
    page.locator("#model input").click()
    page.get_by_role("option", name="tiny-fps").click()
    fps.wait_for(state="visible")
    page.get_by_text("About the models").first.click()
    page.locator("#about").get_by_text("UNet3DConditionModel").wait_for()


def test_the_gallery_shows_this_servers_results_with_their_settings(page, server) -> None:
    _, out = server
    if not written_videos(out):  # run alone: make one first
        page.locator("#t-generate").click()
        page.locator("#t-video video").wait_for()
    count = len(written_videos(out))
    page.get_by_role("tab", name="Gallery").click()
    thumbnails = page.locator("#g-gallery .thumbnail-item")
    thumbnails.nth(count - 1).wait_for()
    assert thumbnails.count() == count  # every result since the server started, each once
    thumbnails.first.click()
    page.locator("#g-video video").wait_for()
    assert "text2video " in page.locator("#g-command textarea").input_value()
    assert page.locator("#g-files").get_by_text(".gif").count() == 1


def test_cancel_stops_a_long_generation_and_writes_nothing(page, server) -> None:
    _, out = server
    before = written_videos(out)
    page.locator("#t-prompt textarea").fill("a long one")
    set_number(page, "t-steps", 100)
    set_number(page, "t-frames", 32)
    page.locator("#t-generate").click()
    page.locator("#t-video").get_by_text(re.compile(r"\d+/100 steps")).wait_for()  # the progress bar follows the sampler
    page.locator("#t-cancel").click()
    page.locator("#t-status").get_by_text(re.compile(r"Cancelled after \d+ of 100 steps; nothing was written")).wait_for()
    assert written_videos(out) == before and page.locator("#t-video video").count() == 0


def test_two_browsers_at_once_both_get_their_videos(browser, server, tmp_path) -> None:
    address, out = server
    before = written_videos(out)
    contexts = [browser.new_context() for _ in range(2)]
    pages = []
    try:
        for i, context in enumerate(contexts):
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(address)
            page.locator("#t-prompt textarea").fill(f"a {'red' if i else 'blue'} square moving up")
            set_number(page, "t-frames", 32 if i == 0 else 4)  # the first takes a while: the second waits in the queue
            set_number(page, "t-steps", 24 if i == 0 else 2)
            pages.append(page)
        pages[0].locator("#t-generate").click()
        pages[0].locator("#t-video").get_by_text(re.compile(r"\d+/24 steps")).wait_for()  # the first one runs
        pages[1].locator("#t-generate").click()
        pages[1].locator("#t-video").get_by_text(re.compile(r"queue: 1/1")).wait_for()  # the second shows its place
        results = [fetch_video(page, "#t-video", tmp_path)[1] for page in pages]
    finally:
        for context in contexts:
            context.close()
    assert [r.shape[0] for r in results] == [32, 4]
    assert len(written_videos(out) - before) == 2
