"""`tunelab experiment report`: read an experiment from the database, compare its variants.

The workflow: open the database, read the experiment's requests, feedback and
assignments (``tunelab.db.experiment_rows``), turn them into per-variant samples, and
compute with ``tunelab.eval.abtest``: per variant the requests, errors (any status other
than 2xx: the user got no answer), latency p50/p99 (answered requests), thumbs-up rate
(among rated responses), mean score (among scored ones) and correction rate (among
responses with feedback); each treatment's difference from the control; the
sample-ratio check of units against the weights; and the sequential decision on the
primary metric, the thumbs-up rate. The result is one JSON-ready dict; ``--html`` also
writes it as a report page (``tunelab.eval.abtest_report``).

Units: observations of one user form one cluster (a request with no user is a cluster
of its own). The sample-ratio check counts, for ``unit: request``, the logged requests
per variant; for ``unit: user``, the users in ``experiment_assignment`` (or, when that
holds none for this experiment, the distinct users of the log plus each request with no
user, which the server randomises on its own).

With more than one treatment the sequential rule runs at alpha / (number of
treatments) per treatment (Bonferroni), so the chance of any false verdict stays at
alpha; the fixed-horizon intervals are each at alpha.

This module knows nothing of the command line: it returns the report and raises
``TunelabError``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.config.serve import ExperimentSettings
from tunelab.db import open_database
from tunelab.db.experiment_rows import ExperimentRows, experiment_names, experiment_rows
from tunelab.errors import DataError
from tunelab.eval import abtest
from tunelab.eval.abtest import Sample, compare, sample_ratio_check, sequential_test, unit_ids

PRIMARY = "thumbs_up_rate"


@dataclass
class ExperimentReport:
    """The report as a JSON-ready dict, and the HTML page's path when one was written."""

    report: dict[str, Any]
    html: Path | None


def run_experiment_report(experiment: ExperimentSettings, db_url: str,
                          since: datetime | None = None, alpha: float = abtest.ALPHA,
                          html_dir: str | Path | None = None,
                          progress: Callable[[str], None] | None = None) -> ExperimentReport:
    """Read one experiment from the database and report on it.

    Args:
        experiment: its variants, weights, control and unit.
        db_url: the database holding the request log.
        since: only requests from this time on.
        alpha: 1 - the intervals' coverage; the sequential rule's error rate.
        html_dir: write the report page here too.
        progress: told what is being done (the CLI prints it on stderr).

    Raises:
        DataError: the log holds no requests of the experiment (since ``since``).
        DatabaseError: the database cannot be opened or read.
    """
    say = progress or (lambda _: None)
    with open_database(db_url) as db:
        say(f"reading experiment {experiment.name!r} from {db.safe_url}")
        rows = experiment_rows(db, experiment.name, since)
        if not rows.requests:
            known = experiment_names(db)
            where = f" since {since.isoformat()}" if since else ""
            listing = f"the log holds: {', '.join(known)}" if known else \
                "the log holds no experiment requests at all"
            raise DataError(f"no requests of experiment {experiment.name!r} in {db.safe_url}{where}",
                            hint=f"check the name and --db ({listing}); requests join an "
                                 f"experiment when they name it as their model"
                                 + (", or use an earlier --since" if since else ""))
        safe = db.safe_url
    report = analyse(rows, experiment, alpha)
    report.update(db=safe, since=since.isoformat() if since else None)
    html = None
    if html_dir is not None:
        from tunelab.eval.abtest_report import write_experiment_report

        html = write_experiment_report(html_dir, report)
    return ExperimentReport(report, html)


def _samples(rows: ExperimentRows) -> dict[str, dict[str, Sample]]:
    """Per metric, per variant: the observations, with unit ids shared across variants."""
    def unit(user: str | None, row_id: int) -> str:
        return user if user is not None else f"\0request {row_id}"  # no user: its own cluster

    req, fb = rows.requests, rows.feedback
    req_units = unit_ids([unit(r.user, r.row_id) for r in req])
    fb_units = unit_ids([unit(f.request_user, f.row_id) for f in fb])
    fb_times = np.array([f.created_at.timestamp() for f in fb], dtype=float)
    ok = np.array([200 <= r.status_code < 300 for r in req], dtype=bool)
    latency = np.array([r.latency_ms for r in req], dtype=float)
    req_variant = np.array([r.variant for r in req], dtype=object)
    fb_variant = np.array([f.variant for f in fb], dtype=object)
    up = np.array([np.nan if f.rating not in ("up", "down") else float(f.rating == "up")
                   for f in fb], dtype=float)
    score = np.array([np.nan if f.score is None else float(f.score) for f in fb], dtype=float)
    corrected = np.array([float(f.corrected) for f in fb], dtype=float)

    def pick(values: np.ndarray, units: np.ndarray, mask: np.ndarray,
             times: np.ndarray | None = None) -> Sample:
        return Sample(values[mask], units[mask], None if times is None else times[mask])

    out: dict[str, dict[str, Sample]] = {k: {} for k in
                                         ("error_rate", "latency_ms", PRIMARY, "mean_score",
                                          "correction_rate")}
    for v in sorted({r.variant for r in req} | {f.variant for f in fb}):
        rv, fv = req_variant == v, fb_variant == v
        out["error_rate"][v] = pick((~ok).astype(float), req_units, rv)
        out["latency_ms"][v] = pick(latency, req_units, rv & ok)
        out[PRIMARY][v] = pick(up, fb_units, fv & ~np.isnan(up), fb_times)
        out["mean_score"][v] = pick(score, fb_units, fv & ~np.isnan(score))
        out["correction_rate"][v] = pick(corrected, fb_units, fv)
    return out


def _units(rows: ExperimentRows, experiment: ExperimentSettings) -> tuple[dict[str, int], str]:
    """Units per variant for the sample-ratio check, and where they were counted."""
    counts: dict[str, int] = {}
    if experiment.unit == "request":
        for r in rows.requests:
            counts[r.variant] = counts.get(r.variant, 0) + 1
        return counts, "requests in the log"
    if rows.assigned:
        return dict(rows.assigned), "users in experiment_assignment"
    users: dict[str, set[str]] = {}
    for r in rows.requests:
        if r.user is None:
            counts[r.variant] = counts.get(r.variant, 0) + 1
        else:
            users.setdefault(r.variant, set()).add(r.user)
    for v, names in users.items():
        counts[v] = counts.get(v, 0) + len(names)
    return counts, "distinct users in the log, plus requests without a user"


def _percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _variant_summary(name: str, experiment: ExperimentSettings,
                     s: dict[str, dict[str, Sample]]) -> dict[str, Any]:
    def mean(metric: str) -> float | None:
        x = s[metric].get(name)
        return float(x.values.mean()) if x is not None and len(x) else None

    def count(metric: str, value: float | None = None) -> int:
        x = s[metric].get(name)
        if x is None:
            return 0
        return len(x) if value is None else int((x.values == value).sum())

    lat = s["latency_ms"][name].values if name in s["latency_ms"] else np.array([])
    weights = {v.name: v for v in experiment.variants}
    return {"variant": name, "model": weights[name].model if name in weights else None,
            "weight": weights[name].weight if name in weights else None,
            "requests": count("error_rate"), "errors": count("error_rate", 1.0),
            "error_rate": mean("error_rate"),
            "latency_p50_ms": _percentile(lat, 50), "latency_p99_ms": _percentile(lat, 99),
            "latency_mean_ms": float(lat.mean()) if len(lat) else None,
            "rated": count(PRIMARY), "thumbs_up": count(PRIMARY, 1.0),
            "thumbs_up_rate": mean(PRIMARY), "scored": count("mean_score"),
            "mean_score": mean("mean_score"), "feedback": count("correction_rate"),
            "corrections": count("correction_rate", 1.0),
            "correction_rate": mean("correction_rate")}


_KINDS: dict[str, abtest.Kind] = {PRIMARY: "proportion", "mean_score": "mean",
                                  "correction_rate": "proportion", "error_rate": "proportion",
                                  "latency_ms": "mean"}


def analyse(rows: ExperimentRows, experiment: ExperimentSettings,
            alpha: float = abtest.ALPHA) -> dict[str, Any]:
    """The report's numbers from the experiment's rows (no database, no files).

    Args:
        rows: what ``experiment_rows`` read.
        experiment: the configured variants, weights, control and unit.
        alpha: 1 - the intervals' coverage; the sequential rule's error rate in all.

    Returns:
        A JSON-ready dict: ``variants``, ``differences``, ``srm``, ``sequential``,
        ``verdicts`` (see README, "Experiment report").
    """
    s = _samples(rows)
    control = experiment.control_variant
    logged = sorted({r.variant for r in rows.requests})
    names = [v.name for v in experiment.variants] + [v for v in logged
                                                     if v not in {x.name for x in experiment.variants}]
    present = [v for v in names if v in logged]
    treatments = [v for v in present if v != control]
    empty = Sample(np.array([]), np.array([], dtype=np.int64), np.array([]))
    differences, sequential, verdicts = [], [], []
    alpha_each = alpha / max(1, len(treatments))
    for t in treatments:
        for metric, kind in _KINDS.items():
            d = compare(metric, kind, control, t, s[metric].get(control, empty),
                        s[metric].get(t, empty), alpha)
            differences.append(asdict(d) | {"significant": d.significant})
        seq = sequential_test(PRIMARY, control, t, s[PRIMARY].get(control, empty),
                              s[PRIMARY].get(t, empty), alpha_each)
        sequential.append(_sequential_dict(seq))
        verdicts.append(_verdict(seq, s, control, t))
    units, counted = _units(rows, experiment)
    srm = sample_ratio_check(units, {v.name: v.weight for v in experiment.variants})
    if srm.alarm:  # a broken split biases every comparison: say so where the verdict is read
        for v in verdicts:
            v["text"] = f"untrustworthy (sample ratio mismatch): {v['text']}"
    return {"experiment": experiment.name, "control": control, "unit": experiment.unit,
            "alpha": alpha, "primary_metric": PRIMARY,
            "variants": [_variant_summary(v, experiment, s) for v in present],
            "differences": differences,
            "srm": {**asdict(srm), "alarm": srm.alarm, "units_counted": counted},
            "sequential": sequential, "verdicts": verdicts}


def _sequential_dict(seq: abtest.Sequential) -> dict[str, Any]:
    out = asdict(seq)
    out["looks"] = [asdict(x) for x in seq.looks]
    return out


def _verdict(seq: abtest.Sequential, s: dict[str, dict[str, Sample]], control: str,
             treatment: str) -> dict[str, Any]:
    """The plain verdict on one treatment, and how many more requests it may take."""
    more = None
    if seq.needed is not None:
        requests = sum(len(s["error_rate"].get(v, ())) for v in (control, treatment))
        rated = sum(len(s[PRIMARY].get(v, ())) for v in (control, treatment))
        if rated:  # rated responses per request, as seen so far
            more = math.ceil((seq.needed - seq.n) / (rated / requests))
    coverage = f"{1 - seq.alpha:.1%}".replace(".0%", "%")
    if seq.decision != "not yet known":
        assert seq.estimate is not None and seq.low is not None and seq.high is not None
        text = (f"{treatment} {seq.decision} than {control}: thumbs-up rate "
                f"{seq.estimate * 100:+.1f} points (always-valid {coverage} interval "
                f"{seq.low * 100:+.1f} to {seq.high * 100:+.1f})")
    elif more is not None:
        text = (f"{treatment} vs {control}: not yet known, about {more:,} more requests needed "
                f"(if the observed difference of {(seq.estimate or 0) * 100:+.1f} points is real)")
    elif seq.estimate is None:
        text = f"{treatment} vs {control}: not yet known, no rated responses in one of them yet"
    else:
        text = (f"{treatment} vs {control}: not yet known; no difference observed, so no "
                "number of requests can be estimated")
    return {"treatment": treatment, "control": control, "decision": seq.decision,
            "more_requests": more, "text": text}
