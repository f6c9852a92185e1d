"""The evaluation report's plots (matplotlib's object API, no pyplot).

Each function takes JSON-ready numbers (or per-row records) and returns a ``Figure``
drawn on ``tunelab.tracking.plots``' figure size and palette; ``tunelab.eval.report``
writes them as PNGs and lays them out. This module knows nothing of HTML or of models.
"""

from __future__ import annotations

from tunelab.tracking.plots import COLORS, WIDTH, new_figure


def confusion_plot(metrics: dict, model: str):
    """Counts of true labels (rows) against predictions (columns, unparseable last)."""
    import numpy as np

    matrix = np.array(metrics["confusion_matrix"])
    rows, cols = metrics["labels"], metrics["confusion_columns"]
    words = metrics.get("label_words") or {}
    figure, ax = new_figure(height=1.6 + 0.45 * len(rows), width=min(WIDTH, 3 + 0.9 * len(cols)))
    ax.imshow(matrix, cmap="Blues", aspect="auto")
    peak = matrix.max() if matrix.size else 0
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, f"{v:,}", ha="center", va="center",
                color="white" if peak and v > peak / 2 else "#222")
    ax.set_xticks(range(len(cols)), [words.get(c, c) for c in cols], rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), [words.get(r, r) for r in rows])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix: {model} (accuracy {metrics['accuracy']:.1%})")
    return figure


def reliability_plot(calibration: dict, model: str):
    """Accuracy against mean confidence per confidence bin, with the diagonal of perfect
    calibration; each point is sized by its rows."""
    bins = calibration["bins"]
    figure, ax = new_figure(height=4.0, width=4.8)
    ax.plot([0, 1], [0, 1], color="#b23b3b", linestyle="--", linewidth=1, label="calibrated")
    if bins:
        n = max(b["n"] for b in bins)
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], color=COLORS[0],
                linewidth=1)
        ax.scatter([b["confidence"] for b in bins], [b["accuracy"] for b in bins],
                   s=[12 + 120 * b["n"] / n for b in bins], color=COLORS[0], label="bins")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("mean top-label probability")
    ax.set_ylabel("accuracy")
    ece = calibration.get("ece")
    ax.set_title(f"Reliability: {model}" + ("" if ece is None else f" (ECE {ece:.3f})"))
    ax.legend(loc="upper left", frameon=False)
    return figure


def scatter_plot(records: list[dict], model: str):
    """Predicted against true numbers, with the identity line."""
    pairs = [(r["reference"], r["predicted"]) for r in records if r["predicted"] is not None]
    figure, ax = new_figure(height=4.0, width=4.8)
    if pairs:
        t, p = zip(*pairs, strict=True)
        ax.scatter(t, p, s=14, color=COLORS[0], alpha=0.7)
        low, high = min(min(t), min(p)), max(max(t), max(p))
        ax.plot([low, high], [low, high], color="#b23b3b", linestyle="--", linewidth=1)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(f"{model}: {len(pairs)} parsed of {len(records)}")
    return figure


def slices_plot(field: str, per_model: dict[str, dict], primary: str):
    """The primary statistic per slice value, one bar per model."""
    values = sorted({v for rec in per_model.values() for v in rec["slices"]})
    figure, ax = new_figure(height=1.2 + 0.35 * len(values) * max(1, len(per_model)) ** 0.5)
    height = 0.8 / max(1, len(per_model))
    for k, (model, rec) in enumerate(per_model.items()):
        ys = [i + k * height for i in range(len(values))]
        xs = [(rec["slices"].get(v) or {}).get(primary) or 0.0 for v in values]
        ax.barh(ys, xs, height=height, color=COLORS[k % len(COLORS)], label=model)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(values))],
                  [f"{v} (n={next(iter(per_model.values()))['slices'].get(v, {}).get('n', 0)})"
                   for v in values])
    ax.invert_yaxis()
    ax.set_xlabel(primary)
    ax.set_title(f"{primary} by {field}")
    if len(per_model) > 1:
        ax.legend(fontsize="small")
    return figure


def compare_plot(comparison: dict):
    """Each statistic's difference from the baseline, with its confidence interval."""
    entries = [(f"{m}: {s}", r) for m, per in comparison["differences"].items()
               for s, r in per.items() if r["diff"] is not None]
    figure, ax = new_figure(height=1.0 + 0.4 * max(1, len(entries)))
    for i, (_, r) in enumerate(entries):
        low = r["ci_low"] if r["ci_low"] is not None else r["diff"]
        high = r["ci_high"] if r["ci_high"] is not None else r["diff"]
        color = COLORS[1] if r["better"] else COLORS[5]
        ax.plot([low, high], [i, i], color=color, linewidth=3)
        ax.plot([r["diff"]], [i], "o", color=color)
    ax.axvline(0, color="#555", linewidth=1)
    ax.set_yticks(range(len(entries)), [name for name, _ in entries])
    ax.invert_yaxis()
    pct = int(round(comparison["confidence"] * 100))
    ax.set_xlabel(f"difference from {comparison['baseline']} ({pct}% CI)")
    ax.set_title("Differences against the baseline (green: better)")
    return figure


def counterfactual_plot(per_model: dict[str, dict]):
    """Flip rate per category, one bar per model."""
    cats = sorted({c for rec in per_model.values() for c, v in rec.items() if v["probe_rows"]})
    figure, ax = new_figure(height=1.2 + 0.4 * max(1, len(cats)))
    height = 0.8 / max(1, len(per_model))
    for k, (model, rec) in enumerate(per_model.items()):
        xs = [rec.get(c, {}).get("flip_rate") or 0.0 for c in cats]
        ax.barh([i + k * height for i in range(len(cats))], xs, height=height,
                color=COLORS[(k + 2) % len(COLORS)], label=model)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(cats))], cats)
    ax.invert_yaxis()
    ax.set_xlabel("share of rewritten prompts whose prediction changed")
    ax.set_title("Counterfactual flip rate by category")
    if len(per_model) > 1:
        ax.legend(fontsize="small")
    return figure


def bbq_plot(per_model: dict[str, dict]):
    """Accuracy in ambiguous and disambiguated contexts, and the two bias scores."""
    keys = ["accuracy_ambig", "accuracy_disambig", "bias_ambig", "bias_disambig"]
    figure, ax = new_figure(height=3.0)
    width = 0.8 / max(1, len(per_model))
    for k, (model, m) in enumerate(per_model.items()):
        ax.bar([i + k * width for i in range(len(keys))], [m.get(x) or 0.0 for x in keys],
               width=width, color=COLORS[k % len(COLORS)], label=model)
    ax.axhline(0, color="#555", linewidth=1)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))], keys)
    ax.set_ylim(-1, 1)
    ax.set_title("BBQ: accuracy and bias score (bias in [-1, 1], 0 = none)")
    ax.legend(fontsize="small")
    return figure
