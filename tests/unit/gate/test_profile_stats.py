"""Profiles: counts, lengths, turns, fields and labels, and every PNG plot non-empty."""

from __future__ import annotations

import json

from PIL import Image

from tunelab.gate.check import check_data, length_stats
from tunelab.gate.profile import profile_data, profile_from_check, save_plots


def write(tmp_path, rows, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


def rows_with_turns():
    rows = []
    for i in range(12):
        msgs = [{"role": "user", "content": f"question {i} " + "about things " * i},
                {"role": "assistant", "content": f"answer {i} " * (i + 1)}]
        if i % 3 == 0:
            msgs = [{"role": "system", "content": "Be brief."}] + msgs
        rows.append({"messages": msgs, "label": "billing" if i % 4 else "shipping",
                     **({"id": f"r{i}"} if i % 2 else {"id": ""})})
    return rows


def test_profile_counts_turns_fields_labels_and_lengths(tmp_path, tiny_tokenizer):
    path = write(tmp_path, rows_with_turns() + ["{broken"])
    profile = profile_data(path, tokenizer=tiny_tokenizer, max_length=64)
    assert (profile.rows_read, profile.accepted, profile.rejected) == (13, 12, 1)
    assert profile.format == "chat" and profile.errors == 1
    assert profile.turns == [3 if i % 3 == 0 else 2 for i in range(12)]
    assert profile.roles == {"system": 4, "user": 12, "assistant": 12}
    assert profile.labels == {"billing": 9, "shipping": 3}
    assert profile.columns["id"] == {"present": 12, "missing": 0, "empty": 6}
    assert profile.columns["label"]["present"] == 12
    plain = [n for i, n in enumerate(profile.token_lengths) if i % 3]  # rows without system
    assert len(profile.token_lengths) == 12 and plain == sorted(plain) and plain[0] > 0
    summary = profile.summary()
    assert summary["turns"]["histogram"] == {2: 8, 3: 4}
    assert summary["tokens"]["over_max_length"] == sum(n > 64 for n in profile.token_lengths)
    json.dumps(summary)


def test_free_text_labels_are_not_classes(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": f"a{i}"}], "label": f"note {i}"}
            for i in range(60)]
    assert profile_data(write(tmp_path, rows)).labels is None


def test_length_stats():
    assert length_stats([]) == {"min": 0, "median": 0, "p95": 0, "max": 0, "mean": 0.0, "total": 0}
    stats = length_stats(list(range(1, 101)))
    assert (stats["min"], stats["median"], stats["p95"], stats["max"]) == (1, 51, 96, 100)


def assert_png_has_content(path):
    assert path.stat().st_size > 2000
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        assert width > 300 and height > 100
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colors is not None and len(colors) > 10  # more than a blank canvas


def test_every_plot_is_a_non_empty_png(tmp_path, tiny_tokenizer):
    result = check_data(write(tmp_path, rows_with_turns() + ["{broken"]), tokenizer=tiny_tokenizer)
    paths = save_plots(profile_from_check(result), tmp_path / "plots")
    assert list(paths) == ["rows", "findings", "token_lengths", "turns", "fields", "labels"]
    for path in paths.values():
        assert_png_has_content(path)


def test_plots_without_data_are_left_out(tmp_path):
    rows = [{"text": f"document number {i} " * (i + 1)} for i in range(12)]
    paths = save_plots(profile_data(write(tmp_path, rows)), tmp_path / "plots")
    assert list(paths) == ["rows", "fields"]  # no tokenizer, no turns, no labels, no findings
    for path in paths.values():
        assert_png_has_content(path)
