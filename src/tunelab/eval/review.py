"""Human review sheets: answers side by side for raters, and their ratings read back.

``write_review_sheet`` picks N rows (seeded), and writes ``review.csv`` (one line per
row: prompt, reference, each model's answer, empty ``rater``/``preferred``/``score_*``
columns) and ``review.html`` (the same, readable). Answers are blinded: each row shows
them as A, B, ... in a seeded random order, and ``review_key.json`` says which letter
is which model, so raters cannot favour a name.

``import_reviews`` reads filled sheets (one per rater, or one with a ``rater`` column),
un-blinds them with the key and reports per model the win rate (a tie counts half),
the mean score, and agreement between raters on the preferred model (Cohen's kappa for
two raters, Fleiss' for more: ``tunelab.gate.labels.agreement``).

This module knows nothing of models.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tunelab.data.table import read_table
from tunelab.errors import DataError
from tunelab.eval.rows import EvalRow
from tunelab.eval.tasks import TaskResult
from tunelab.files import make_dir, write_json_atomic, write_text_atomic
from tunelab.gate.labels import agreement
from tunelab.tracking.html import page

TIE = "tie"
SCORE_RANGE = (1, 5)


def _letters(k: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(k)]


def _prompt_text(row: EvalRow) -> str:
    return "\n\n".join(f"[{m.role}] {m.content}" for m in row.prompt)


def write_review_sheet(out_dir: str | Path, rows: Sequence[EvalRow], results: Sequence[TaskResult],
                       n: int, seed: int = 0) -> dict[str, Path]:
    """Write ``review.csv``, ``review.html`` and ``review_key.json`` for ``n`` rows.

    Args:
        out_dir: the folder (created if needed).
        rows: the evaluated rows.
        results: one result per model, over ``rows`` in order.
        n: rows on the sheet (all rows when there are fewer).
        seed: picks the rows and the answer order.

    Returns:
        The paths written, by kind (``csv``, ``html``, ``key``).
    """
    out = make_dir(out_dir, error=DataError)
    rng = np.random.default_rng(seed)
    chosen = sorted(int(i) for i in rng.choice(len(rows), size=min(n, len(rows)), replace=False))
    letters = _letters(len(results))
    header = ["item", "id", "prompt", "reference", *[f"answer_{x}" for x in letters],
              "rater", "preferred", *[f"score_{x}" for x in letters], "comment"]
    lines, key = [], {}
    for item, i in enumerate(chosen, start=1):
        order = [int(m) for m in rng.permutation(len(results))]
        key[str(item)] = {x: results[m].model for x, m in zip(letters, order, strict=True)}
        answers = [str(results[m].rows[i].get("answer") or "") for m in order]
        lines.append([item, rows[i].id, _prompt_text(rows[i]), rows[i].reference or "", *answers,
                      "", "", *[""] * len(letters), ""])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(lines)
    paths = {"csv": out / "review.csv", "html": out / "review.html", "key": out / "review_key.json"}
    write_text_atomic(paths["csv"], buf.getvalue(), error=DataError)
    write_text_atomic(paths["html"], _sheet_html(header, lines, len(letters)), error=DataError)
    write_json_atomic(paths["key"], {"models": [r.model for r in results], "letters": letters,
                                     "seed": seed, "items": key}, error=DataError)
    return paths


# Answers side by side at half the width each; prompts keep their line breaks.
_SHEET_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:24px auto} "
                "pre{white-space:pre-wrap} td{vertical-align:top;border:1px solid #ddd;"
                "padding:6px;width:50%} table{border-collapse:collapse;width:100%} "
                ".prompt{background:#f6f6f6;padding:8px}")


def _sheet_html(header: list[str], lines: list[list], k: int) -> str:
    blocks = []
    for line in lines:
        item, ident, prompt, ref = line[:4]
        answers = line[4:4 + k]
        cells = "".join(f"<td><b>{x}</b><pre>{html.escape(a)}</pre></td>"
                        for x, a in zip(_letters(k), answers, strict=True))
        blocks.append(f"<h2>Item {item} <small>({html.escape(str(ident))})</small></h2>"
                      f"<pre class='prompt'>{html.escape(prompt)}</pre>"
                      f"<p><b>Reference:</b> {html.escape(str(ref))}</p>"
                      f"<table><tr>{cells}</tr></table>")
    intro = ("<h1>Review sheet</h1><p>For each item, fill <code>rater</code>, <code>preferred</code>"
             f" (a letter or <code>{TIE}</code>) and <code>score_*</code> ({SCORE_RANGE[0]}-"
             f"{SCORE_RANGE[1]}) in <code>review.csv</code>; then run <code>tunelab review import "
             "review.csv</code>.</p>")
    return page("tunelab review sheet", [intro, *blocks], style=_SHEET_STYLE)


def _cell(row: dict, key: str) -> str:
    value = row.get(key)
    return "" if value is None else str(value).strip()


def import_reviews(paths: Sequence[str | Path], key_path: str | Path | None = None) -> dict:
    """Read filled review sheets and report win rates, mean scores and rater agreement.

    Args:
        paths: one or more filled sheets (CSV, TSV, JSONL ...); a blank ``rater`` cell
            takes the file's name.
        key_path: the ``review_key.json``; default: beside the first sheet.

    Returns:
        ``models``, ``ratings`` (rows read), ``per_model`` (``wins``, ``losses``, ``ties``,
        ``win_rate``, ``mean_score``, ``scores``), ``raters`` and ``agreement`` (None with
        fewer than two raters).

    Raises:
        DataError: the key is missing, or a row has an unknown item, letter or score;
            every such row is listed.
    """
    key_file = Path(key_path) if key_path else Path(paths[0]).parent / "review_key.json"
    if not key_file.is_file():
        raise DataError(f"no review key at {key_file}",
                        hint="pass --key path/to/review_key.json (written with the sheet)")
    key = json.loads(key_file.read_text(encoding="utf-8"))
    models = key["models"]
    problems: list[str] = []
    prefs: dict[tuple[str, str], str] = {}  # (item, rater) -> model or tie
    scores: dict[str, list[float]] = {m: [] for m in models}
    ratings = 0
    for path in paths:
        table = read_table(path)
        for row, line in zip(table.rows, table.lines, strict=True):
            item = _cell(row, "item")
            where = f"{table.source}:{line}"
            if item not in key["items"]:
                problems.append(f"{where}: item {item!r} is not on the sheet")
                continue
            letters = key["items"][item]
            rater = _cell(row, "rater") or Path(path).stem
            pref = _cell(row, "preferred")
            if pref:
                choice = TIE if pref.casefold() == TIE else letters.get(pref.upper())
                if choice is None:
                    problems.append(f"{where}: preferred {pref!r} is not one of "
                                    f"{', '.join(letters)} or {TIE}")
                else:
                    prefs[(item, rater)] = choice
                    ratings += 1
            for letter, model in letters.items():
                raw = _cell(row, f"score_{letter}")
                if not raw:
                    continue
                try:
                    value = float(raw)
                except ValueError:
                    value = float("nan")
                if not SCORE_RANGE[0] <= value <= SCORE_RANGE[1]:
                    problems.append(f"{where}: score_{letter} {raw!r} is not a number from "
                                    f"{SCORE_RANGE[0]} to {SCORE_RANGE[1]}")
                else:
                    scores[model].append(value)
    if problems:
        raise DataError(f"{len(problems)} problem(s) in the review sheets", findings=problems,
                        hint="fix the cells above and import again")
    return _summarize(models, prefs, scores, ratings)


def _summarize(models: list[str], prefs: dict[tuple[str, str], str],
               scores: dict[str, list[float]], ratings: int) -> dict:
    per_model = {}
    for m in models:
        wins = sum(v == m for v in prefs.values())
        ties = sum(v == TIE for v in prefs.values())
        judged = len(prefs)
        per_model[m] = {"wins": wins, "losses": judged - wins - ties, "ties": ties,
                        "win_rate": (wins + 0.5 * ties) / judged if judged else None,
                        "mean_score": sum(scores[m]) / len(scores[m]) if scores[m] else None,
                        "scores": len(scores[m])}
    raters = sorted({r for _, r in prefs})
    agree = None
    if len(raters) >= 2:
        items = sorted({i for i, _ in prefs}, key=lambda x: int(x) if x.isdigit() else x)
        agree = agreement([[prefs.get((i, r)) for r in raters] for i in items], raters)
    return {"models": models, "ratings": ratings, "per_model": per_model, "raters": raters,
            "agreement": agree}


def format_reviews(report: dict) -> str:
    """The review summary as a small table."""
    lines = [f"{report['ratings']} preference rating(s) from {len(report['raters'])} rater(s)",
             f"{'model':<32}{'wins':>6}{'losses':>8}{'ties':>6}{'win rate':>10}{'mean score':>12}"]
    for m, r in report["per_model"].items():
        wr = "n/a" if r["win_rate"] is None else f"{r['win_rate']:.1%}"
        ms = "n/a" if r["mean_score"] is None else f"{r['mean_score']:.2f}"
        lines.append(f"{m[:31]:<32}{r['wins']:>6}{r['losses']:>8}{r['ties']:>6}{wr:>10}{ms:>12}")
    a = report["agreement"]
    if a is not None:
        kappa = "n/a" if a["kappa"] is None else f"{a['kappa']:.3f}"
        lines.append(f"agreement on the preferred answer: {a['method']} kappa {kappa} over "
                     f"{a['items']} item(s) ({a['items_left_out']} left out: not rated by all)")
    return "\n".join(lines)
