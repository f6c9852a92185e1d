"""Headless Chromium for report tests: render a page, dump its DOM, take a screenshot.

Started with the flags this machine needs (no sandbox as root, no background networking
on a closed network) and a fresh profile per call.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
                 if p), None)


def run_chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


# Appended to a copy of a page: records whether every image loaded, for --dump-dom.
PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const bad = imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src);
  document.body.setAttribute('data-probe',
    JSON.stringify({count: imgs.length, bad: bad, widths: imgs.map(i => i.naturalWidth)}));
});
</script></body>"""


def image_probe(page: Path, tmp: Path) -> dict:
    """Load a copy of ``page`` with PROBE and return what it saw: count, bad, widths."""
    import json
    import re

    probe = page.parent / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE))
    dom = run_chromium(["--virtual-time-budget=5000", "--dump-dom", probe.as_uri()], tmp / "chrome-dom")
    found = re.search(r"data-probe=\"([^\"]*)\"", dom.stdout)
    assert found, dom.stderr[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"'))


def screenshot_pixels(page: Path, tmp: Path, height: int):
    """A 1200-pixel-wide screenshot of ``page`` as an int16 RGB array."""
    import numpy as np
    from PIL import Image

    shot = tmp / "out.png"
    run_chromium([f"--screenshot={shot}", f"--window-size=1200,{height}", page.as_uri()],
                 tmp / "chrome-shot")
    assert shot.is_file(), "Chromium wrote no screenshot"
    with Image.open(shot) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def colour_share(pixels, rgb) -> float:
    """The fraction of pixels within 25 of ``rgb`` in every channel."""
    import numpy as np

    return float((np.abs(pixels - np.array(rgb)).max(axis=2) < 25).mean())
