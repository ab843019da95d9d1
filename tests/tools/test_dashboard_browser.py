"""The dashboard in a real browser: headless Chromium loads the page from disk, its DOM and a screenshot are checked.

Chromium is a Debian package (`chromium`); .ci/run installs it. Without a browser this test fails,
unless HARDWIRE_NO_BROWSER=1 says on purpose that this desk has none.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser

import pytest
import synthetic_run as synth

from hardwire.dashboard import render
from hardwire.run_results import load_run

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WINDOW = (1200, 1600)


@pytest.fixture(scope="module")
def browser() -> str:
    explicit = os.environ.get("HARDWIRE_BROWSER")
    found = explicit or next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found:
        return found
    if os.environ.get("HARDWIRE_NO_BROWSER") == "1":
        pytest.skip("HARDWIRE_NO_BROWSER=1: no browser on this desk")
    pytest.fail("no headless Chromium: install the Debian package chromium (.ci/run does), point HARDWIRE_BROWSER "
                "at a Chromium binary, or set HARDWIRE_NO_BROWSER=1 on a desk without one")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    run_dir = synth.make_run_dir(tmp_path_factory.mktemp("browser") / "run")
    out = run_dir / "dashboard" / "index.html"
    out.parent.mkdir(parents=True)
    out.write_text(render(load_run(run_dir)), encoding="utf-8")
    return out


def headless(browser: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    # no sandbox: CI runs as root; a profile of its own so that no desk profile is touched
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={WINDOW[0]},{WINDOW[1]}", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


class DomReader(HTMLParser):
    """The text of elements by class, the failure groups' counts, and every tag name seen."""

    def __init__(self):
        super().__init__()
        self.text_by_class: dict[str, list[str]] = {}
        self.group_counts: list[str] = []
        self.tags: set[str] = set()
        self._open: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if "failure-group" in (attrs.get("class") or "").split():
            self.group_counts.append(attrs.get("data-count"))
        if tag not in ("meta", "br", "img", "rect", "circle", "line", "polyline"):
            self._open.append((tag, attrs.get("class")))
            if attrs.get("class"):
                self.text_by_class.setdefault(attrs["class"], []).append("")

    def handle_endtag(self, tag):
        while self._open and self._open.pop()[0] != tag:
            pass

    def handle_data(self, data):
        for _, cls in self._open:
            if cls:
                self.text_by_class[cls][-1] += data


def test_the_dom_in_chromium(browser, page, tmp_path):
    dom = headless(browser, tmp_path, "--dump-dom", page.as_uri()).stdout
    reader = DomReader()
    reader.feed(dom)
    assert reader.group_counts == ["2", "1"]  # two mismatches of one signature, one other failure
    assert reader.text_by_class["count"] == ["2 tests", "1 test"]
    assert reader.text_by_class["reproduce"] == [synth.REPRODUCE_A, synth.REPRODUCE_OTHER]
    assert reader.text_by_class["seeds"] == ["4, 5", "77"]
    script_test = f"tests.tools.test_dashboard::{synth.SCRIPT_NAME}"
    assert script_test in reader.text_by_class["test-id"]  # shown as text, exactly
    assert "script" not in reader.tags and 'data-pwned="1"' not in dom  # and never run
    assert dom.count("<polyline") == 3 and "3 runs (this one last)" in dom  # two runs of history and this one


def test_the_screenshot_is_a_drawn_page(browser, page, tmp_path):
    shot = tmp_path / "dashboard.png"
    headless(browser, tmp_path, f"--screenshot={shot}", page.as_uri())
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == WINDOW
    pixels = zlib.decompress(b"".join(_chunks(png, b"IDAT")))
    # a blank or single-colour page filters down to a handful of byte values; text, bars and the chart do not
    assert len(set(pixels)) > 100, f"the screenshot looks blank ({len(set(pixels))} distinct bytes)"
    assert len(png) > 20_000


def _chunks(png: bytes, kind: bytes):
    at = 8
    while at < len(png):
        length, name = struct.unpack(">I4s", png[at:at + 8])
        if name == kind:
            yield png[at + 8:at + 8 + length]
        at += 12 + length
