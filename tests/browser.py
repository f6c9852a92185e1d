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
