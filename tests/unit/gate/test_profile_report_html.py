"""The HTML report: every plot linked and non-empty, values escaped, and the page renders
in headless Chromium with every image loaded (skipped where Chromium is not installed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from browser import CHROMIUM, colour_share, image_probe, screenshot_pixels
from tunelab.gate.check import check_data
from tunelab.gate.report import write_report


def write(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def report(tmp_path, tiny_tokenizer) -> Path:
    chats = [{"messages": [{"role": "user", "content": f"question {i} " + "word " * i},
                           {"role": "assistant", "content": f"answer {i} " * (i + 1)}]}
             for i in range(14)] + ["{broken", {"messages": []}]
    table = tmp_path / "labels <&>.tsv"  # a name that must be escaped in the page
    table.write_text("label\tsentence\n" + "".join(
        f"{'pos' if i % 3 else 'neg'}\treview {i} of a film {'very ' * (i % 7)}good\n"
        for i in range(30)))
    results = [check_data(write(tmp_path / "chat.jsonl", chats), tokenizer=tiny_tokenizer,
                          max_length=60),
               check_data(table, tokenizer=tiny_tokenizer)]
    return write_report(tmp_path / "report", results, model="tiny <model>")


def images(index: Path) -> list[str]:
    return re.findall(r"<img src='([^']+)'", index.read_text())


def test_report_links_every_plot_and_writes_the_numbers(report):
    srcs = images(report)
    assert len(srcs) == 10  # chat: all but labels; table: all but findings
    for src in srcs:
        path = report.parent / src
        assert path.is_file() and path.stat().st_size > 2000
        with Image.open(path) as image:
            image.verify()
    assert sorted(p.relative_to(report.parent).as_posix()
                  for p in report.parent.rglob("*.png")) == sorted(srcs)
    summary = json.loads((report.parent / "profile.json").read_text())
    assert summary["model"] == "tiny <model>"
    assert [f["accepted"] for f in summary["files"]] == [14, 30]
    assert summary["files"][1]["labels"] == {"pos": 20, "neg": 10}


def test_report_escapes_names_and_messages(report):
    page = report.read_text()
    assert "labels &lt;&amp;&gt;.tsv" in page and "labels <&>" not in page
    assert "tiny &lt;model&gt;" in page
    assert "<script" not in page  # a static page
    assert "errors found" in page and "invalid_json" in page






@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make install-dev adds it)")
def test_report_renders_in_headless_chromium_with_every_image_loaded(report, tmp_path):
    # A copy of the page with a probe script beside it (the report itself has no scripts).
    state = image_probe(report, tmp_path)
    assert state["count"] == len(images(report)) and state["bad"] == []
    assert all(w >= 300 for w in state["widths"])

    pixels = screenshot_pixels(report, tmp_path, 2000)
    # The plots' bar colours (accepted green, token-length blue) are on screen: the
    # images were drawn, not left as blank boxes.
    def share(rgb):
        return colour_share(pixels, rgb)

    assert share((0x3B, 0x7D, 0x3B)) > 0.002 and share((0x3B, 0x62, 0xA8)) > 0.002
