"""The HTML viewer in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by selenium. Nothing is downloaded: the browser and the driver are
the system's (selenium's `Service` gets the driver's path, so selenium-manager never runs).

Skipped when Chromium, its driver or selenium is missing, unless the environment variable
CI is set: then a missing browser fails the test (`.ci/run` installs both packages).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from helpers import write_video
from tallformer.viewer import write_viewer

CHROMIUM = Path("/usr/bin/chromium")
DRIVER = Path("/usr/bin/chromedriver")
CLASSES = ["High Jump", "Long Jump", "Pole Vault"]
# (start, end, label, score): no two blocks of a lane overlap, so a click hits the one aimed at
DETECTIONS = [
    (0.5, 1.8, "High Jump", 0.92), (2.4, 3.9, "High Jump", 0.41), (5.0, 5.6, "High Jump", 0.07),
    (7.1, 8.8, "High Jump", 0.66), (1.0, 2.2, "Long Jump", 0.55), (3.0, 4.4, "Long Jump", 0.18),
    (6.2, 7.5, "Long Jump", 0.83), (8.9, 9.6, "Long Jump", 0.30), (0.2, 0.9, "Pole Vault", 0.12),
    (4.1, 6.0, "Pole Vault", 0.74), (6.6, 7.0, "Pole Vault", 0.5), (8.0, 9.9, "Pole Vault", 0.25),
    (7.16, 7.9, "Pole Vault", 0.45),  # starts within one decoded frame (1/15 s) of High Jump's 7.1
]
TRUTH = [(0.6, 1.7, "High Jump", 1.0), (6.0, 7.6, "Long Jump", 1.0), (4.0, 6.1, "Pole Vault", 1.0)]


def _browser_ready() -> str | None:
    """Why the browser test cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e .[dev])"
    for path, package in ((CHROMIUM, "chromium"), (DRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} is missing (apt-get install -y {package})"
    return None


@pytest.fixture(scope="module")
def driver():
    reason = _browser_ready()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the browser test cannot run: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="tallformer-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1400,1000", "--mute-audio"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=str(DRIVER)), options=options)
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def page(driver, tmp_path_factory):
    root = tmp_path_factory.mktemp("viewer")
    (root / "media").mkdir()
    video = write_video(root / "media" / "race day.mp4", 250, fps=25, size=(64, 64))  # 10 s, H.264
    # detected at 15 fps (the config's rate) in a 25 fps file
    html = write_viewer(root / "out" / "race day.html", video=video, title="race day", classes=CLASSES,
                        detections=DETECTIONS, duration=10.0, fps=15.0, ground_truth=TRUTH,
                        source="epoch_0600", source_fps=25.0)
    driver.get(html.resolve().as_uri())
    _wait(driver, "return document.readyState === 'complete' && document.getElementById('video').readyState >= 1")
    return driver


def _wait(driver, script: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not driver.execute_script(script):
        assert time.monotonic() < deadline, f"timed out waiting for: {script}"
        time.sleep(0.05)


def _set_slider(driver, value: float) -> None:
    driver.execute_script(
        "var s = document.getElementById('score-slider'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('input', {bubbles: true}));", str(value))


def _visible(driver) -> list:
    return [b for b in driver.find_elements("css selector", ".detection") if b.is_displayed()]


def test_no_console_errors_and_the_video_plays(page) -> None:
    errors = [e for e in page.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    assert page.execute_script("return document.getElementById('video').error") is None
    assert page.execute_script("return document.getElementById('video').duration") == pytest.approx(10.0, abs=0.1)
    assert len(page.find_elements("css selector", ".detection")) == len(DETECTIONS)
    blocks = page.find_elements("css selector", ".detection")
    attrs = sorted((float(b.get_attribute("data-start")), float(b.get_attribute("data-end")),
                    b.get_attribute("data-label"), float(b.get_attribute("data-score"))) for b in blocks)
    assert attrs == sorted(DETECTIONS)


@pytest.mark.parametrize("value", [0.0, 0.25, 0.5, 0.8, 0.95])
def test_visible_blocks_are_those_at_or_above_the_slider(page, value) -> None:
    _set_slider(page, value)
    visible = _visible(page)
    assert len(visible) == sum(1 for d in DETECTIONS if d[3] >= value)
    assert all(float(b.get_attribute("data-score")) >= value for b in visible)
    assert f"showing {len(visible)} of {len(DETECTIONS)}" in page.find_element("id", "count").text


def test_clicking_a_block_seeks_the_video_and_moves_the_playhead(page) -> None:
    _set_slider(page, 0.0)
    for start, label in ((6.2, "Long Jump"), (0.5, "High Jump"), (8, "Pole Vault")):
        block = page.find_element("css selector", f'.detection[data-start="{start}"]')
        block.click()
        _wait(page, f"var v = document.getElementById('video'); return !v.seeking && "
                    f"Math.abs(v.currentTime - {start}) < 0.05")
        assert page.execute_script("return document.getElementById('video').currentTime") == pytest.approx(start, abs=0.05)
        left = page.execute_script("return parseFloat(document.getElementById('playhead').style.left)")
        assert left == pytest.approx(100 * start / 10.0, abs=0.6)
        active = [li.get_attribute("data-label") for li in page.find_elements("css selector", "#active-list .active-item")]
        assert label in active
        assert "selected" in block.get_attribute("class")


def test_the_active_list_follows_the_time_and_the_slider(page) -> None:
    _set_slider(page, 0.0)
    page.execute_script("window.tallformerViewer.seek(4.2)")
    _wait(page, "return Math.abs(document.getElementById('video').currentTime - 4.2) < 0.05")
    labels = sorted(li.get_attribute("data-label") for li in page.find_elements("css selector", "#active-list .active-item"))
    assert labels == ["Long Jump", "Pole Vault"]  # [3.0, 4.4] and [4.1, 6.0]
    _set_slider(page, 0.5)  # the Long Jump block scores 0.18
    labels = [li.get_attribute("data-label") for li in page.find_elements("css selector", "#active-list .active-item")]
    assert labels == ["Pole Vault"]
    assert [e for e in page.get_log("browser") if e["level"] == "SEVERE"] == []


def test_the_header_says_the_decode_rate_and_the_files_rate(page) -> None:
    chips = [c.text for c in page.find_elements("css selector", "#chips .chip")]
    assert "decoded at 15 fps" in chips
    assert "source 25 fps" in chips


def _ticks_in_view(driver) -> list[tuple[float, str]]:
    """(x in px from the scroller's left edge, label) of the ruler ticks the scroller shows."""
    return driver.execute_script(
        "var sc = document.getElementById('scroller'), r = sc.getBoundingClientRect(), out = [];"
        "document.querySelectorAll('#rows .tick').forEach(function (t) {"
        "  var x = t.getBoundingClientRect().left - r.left;"
        "  if (x >= 0 && x <= r.width - 40) { out.push([x, t.textContent]); } });"
        "return out;")


def _set_zoom(driver, z: int) -> None:
    driver.execute_script(
        "var s = document.getElementById('zoom-slider'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('input', {bubbles: true}));", str(z))


@pytest.mark.parametrize("z", [1, 2, 5, 9, 16, 24, 31, 32])
def test_the_ruler_has_readable_ticks_at_every_zoom(page, z) -> None:
    _set_zoom(page, z)
    for where in (0.0, 5.0, 9.9):  # the view follows the playhead
        page.execute_script("window.tallformerViewer.seek(arguments[0])", where)
        _wait(page, f"return Math.abs(window.tallformerViewer.now() - {where}) < 0.05")
        ticks = _ticks_in_view(page)
        assert len(ticks) >= 2, (z, where, ticks)
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(ticks)]
        assert min(gaps) >= 79, (z, gaps)  # labels of about 45 px never collide
        assert max(gaps) <= 200, (z, gaps)  # and the ruler is never bare
        labels = [label for _, label in ticks]
        assert len(set(labels)) == len(labels), labels
    _set_zoom(page, 1)


def test_next_and_prev_skip_detections_within_one_frame(page) -> None:
    _set_slider(page, 0.0)
    starts = []
    page.execute_script("window.tallformerViewer.seek(6.6)")
    _wait(page, "return Math.abs(window.tallformerViewer.now() - 6.6) < 0.05")
    for _ in range(2):
        page.find_element("id", "next-btn").click()
        _wait(page, "var v = document.getElementById('video'); return !v.seeking")
        starts.append(round(page.execute_script("return window.tallformerViewer.now()"), 2))
    assert starts == [7.1, 8.0]  # 7.16 is the same moment as 7.1 (less than one 15 fps frame apart)
    page.find_element("id", "prev-btn").click()  # back from 8.0: 7.16 is the nearest earlier start
    _wait(page, "var v = document.getElementById('video'); return !v.seeking && "
                "Math.abs(v.currentTime - 7.16) < 0.03")
    page.find_element("id", "prev-btn").click()  # and 7.1 is within one frame of it
    _wait(page, "var v = document.getElementById('video'); return !v.seeking && "
                "Math.abs(v.currentTime - 6.6) < 0.05")
