"""Open a report in headless Chromium: console messages, every image's rendered size, load time, a screenshot.

A copy of the page gets a probe script at the top of ``<head>`` that records script errors and failed
resources and, on ``load``, writes every image's natural and laid-out size and ``performance.now()`` into a
``<pre id="__probe">`` that ``--dump-dom`` prints. Chromium's own console log (``--enable-logging=stderr``,
``CONSOLE`` lines) is read too. The screenshot is taken of the page itself, not of the probed copy.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_ENV = "FEDINTEREST_CHROMIUM"  # path of the browser binary, when not on PATH under a usual name
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
HEADLESS = ("--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
            "--hide-scrollbars", "--disable-background-networking")
PROBE_ID = "__probe"
PROBE = """<script>
window.__errs = [];
window.addEventListener("error", function (e) {
  __errs.push(String(e.message || ("failed to load " + (e.target && (e.target.src || e.target.href)))));
}, true);
window.addEventListener("load", function () {
  var out = {errors: __errs, load_ms: performance.now(), images: Array.from(document.images).map(function (i) {
    var r = i.getBoundingClientRect();
    return {alt: i.alt, natural_w: i.naturalWidth, natural_h: i.naturalHeight, w: r.width, h: r.height};
  })};
  var pre = document.createElement("pre"); pre.id = "%s"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>""" % PROBE_ID
CONSOLE_LINE = re.compile(r":CONSOLE[:(]")
PROBE_OUT = re.compile(r'<pre id="%s">(.*?)</pre>' % PROBE_ID, re.S)


class BrowserError(RuntimeError):
    """Chromium did not run, or the page never reached its load event."""


@dataclass
class PageCheck:
    console: list[str] = field(default_factory=list)  # console messages and script/resource errors
    images: list[dict] = field(default_factory=list)  # alt, natural_w/h, laid-out w/h per <img>
    load_ms: float = 0.0  # performance.now() at the load event
    browser_s: float = 0.0  # wall time of the Chromium process that loaded it (start-up included)
    screenshot: Path | None = None


def find_chromium() -> str | None:
    given = os.environ.get(CHROMIUM_ENV)
    if given:
        return given if Path(given).is_file() else None
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def check_page(page: Path, *, screenshot: Path | None = None, window: tuple[int, int] = (1200, 3200),
               timeout_s: float = 60.0, chromium: str | None = None) -> PageCheck:
    """Load ``page`` in headless Chromium and report what a reader's browser would hit."""
    binary = chromium or find_chromium()
    if binary is None:
        raise BrowserError(f"no Chromium found (tried {', '.join(CHROMIUM_NAMES)} and ${CHROMIUM_ENV})")
    page = Path(page).resolve()
    with tempfile.TemporaryDirectory(prefix="fedinterest-browser-") as tmp:
        probed = Path(tmp) / page.name
        text = page.read_text(encoding="utf-8")
        probed.write_text(text.replace("<head>", "<head>\n" + PROBE, 1), encoding="utf-8")
        t0 = time.perf_counter()
        run = _chromium(binary, Path(tmp) / "profile", ["--enable-logging=stderr", "--v=0", "--dump-dom",
                                                        probed.as_uri()], timeout_s)
        check = PageCheck(browser_s=time.perf_counter() - t0)
        found = PROBE_OUT.search(run.stdout)
        if found is None:
            raise BrowserError(f"{page}: Chromium printed no probe (load event never ran); stderr tail: "
                               f"{run.stderr[-2000:]}")
        probe = json.loads(html.unescape(found.group(1)))
        check.console = [line for line in run.stderr.splitlines() if CONSOLE_LINE.search(line)] + probe["errors"]
        check.images, check.load_ms = probe["images"], float(probe["load_ms"])
        if screenshot is not None:
            w, h = window
            _chromium(binary, Path(tmp) / "profile-shot", [f"--screenshot={Path(screenshot).resolve()}",
                                                            f"--window-size={w},{h}", page.as_uri()], timeout_s)
            if not Path(screenshot).is_file():
                raise BrowserError(f"{page}: Chromium wrote no screenshot to {screenshot}")
            check.screenshot = Path(screenshot)
    return check


def _chromium(binary: str, profile: Path, args: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    cmd = [binary, *HEADLESS, f"--user-data-dir={profile}", *args]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrowserError(f"{' '.join(cmd)}: {exc}") from None
    if run.returncode != 0:
        raise BrowserError(f"{' '.join(cmd)} exited {run.returncode}: {run.stderr[-2000:]}")
    return run
