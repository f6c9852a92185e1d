"""`tunelab experiment report` on a SQLite database filled with simulated users.

Users are assigned to variants by the weights (seeded); each makes a few requests and
rates most answers; the treatment's thumbs-up probability is 0.15 above the control's,
with a per-user offset so that one user's ratings are correlated (as real ones are).
The report must find the difference with an interval that excludes 0 and say "better";
a 50/50 split must not raise the sample-ratio alarm, and a planted 90/10 split against
50/50 weights must. Bad input (an unknown experiment, no weights) gets a clean message.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy import insert

from tunelab.cli import exits
from tunelab.cli.main import main
from tunelab.db import open_database
from tunelab.db.tables import ExperimentAssignmentRow, FeedbackRow, RequestLogRow

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
UP = {"a": 0.55, "b": 0.70}  # thumbs-up probability per variant: b is better by 0.15
SERVE_YAML = """\
models: [tiny]
experiments:
  - name: greet
    variants:
      - {name: a, model: tiny, weight: 1}
      - {name: b, model: tiny, weight: 1}
"""


def fill(url: str, users: int, share_a: float, seed: int) -> None:
    """Simulated traffic of experiment ``greet`` over 10 days (``share_a`` of users get a)."""
    rng = np.random.default_rng(seed)
    requests, feedback, assigned = [], [], []
    for u in range(users):
        variant = "a" if rng.random() < share_a else "b"
        first = T0 + timedelta(days=float(rng.uniform(0, 10)))
        assigned.append({"experiment": "greet", "unit": f"user-{u}", "variant": variant,
                         "assigned_at": first})
        offset = rng.normal(0, 0.1)  # this user's own leaning: correlated ratings
        for k in range(1 + rng.poisson(2)):
            rid = f"chatcmpl-{u}-{k}"
            at = first + timedelta(minutes=10 * k)
            status = 500 if rng.random() < 0.01 else 200
            requests.append({"request_id": rid, "created_at": at, "endpoint": "chat.completions",
                             "model": "tiny", "user": f"user-{u}", "prompt": None, "answer": None,
                             "prompt_tokens": 5, "completion_tokens": 3,
                             "latency_ms": float(rng.gamma(4, 10 if variant == "a" else 11)),
                             "time_to_first_token_ms": None, "finish_reason": "stop",
                             "status_code": status, "stream": False, "filtered": None,
                             "experiment": "greet", "variant": variant})
            if status == 200 and rng.random() < 0.8:
                up = rng.random() < np.clip(UP[variant] + offset, 0, 1)
                feedback.append({"response_id": rid, "user": f"user-{u}", "idempotency_key": None,
                                 "rating": "up" if up else "down",
                                 "score": int(rng.integers(3, 6) if up else rng.integers(1, 4)),
                                 "correction": None if up or rng.random() < 0.5 else "better",
                                 "comment": None, "created_at": at + timedelta(minutes=1),
                                 "updated_at": at + timedelta(minutes=1)})
    with open_database(url) as db, db.session() as session:
        session.execute(insert(RequestLogRow), requests)
        session.execute(insert(FeedbackRow), feedback)
        session.execute(insert(ExperimentAssignmentRow), assigned)
        session.commit()


def report(capsys, *argv: str) -> tuple[int, dict, str, str]:
    code = main(["experiment", "report", *argv, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out.strip().splitlines()[-1]), out, err


@pytest.fixture(scope="module")
def balanced(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('exp') / 'balanced.db'}"
    fill(url, users=1000, share_a=0.5, seed=1)
    return url


def test_finds_the_better_variant_and_no_srm_alarm(balanced, tmp_path, capsys):
    config = tmp_path / "serve.yaml"
    config.write_text(SERVE_YAML)
    code, rep, out, err = report(capsys, "greet", "--config", str(config), "--db", balanced,
                                 "--html", str(tmp_path / "html"))
    assert code == exits.OK, err
    assert all(isinstance(d["significant"], bool) for d in rep["differences"])
    up = next(d for d in rep["differences"] if d["metric"] == "thumbs_up_rate")
    assert up["method"] == "newcombe, design effect (clustered by unit)"  # users rate several
    assert 0 < up["low"] <= 0.15 <= up["high"]  # excludes 0, covers the planted margin
    assert rep["verdicts"][0]["decision"] == "better" and "b better than a" in out
    seq = rep["sequential"][0]
    assert seq["low"] > 0 and seq["p_value"] < 0.05 and len(seq["looks"]) > 10
    # the always-valid interval is wider than the fixed-horizon one: it pays for peeking
    assert seq["high"] - seq["low"] > up["high"] - up["low"]
    assert not rep["srm"]["alarm"] and rep["srm"]["p_value"] > 0.001
    assert rep["srm"]["units_counted"] == "users in experiment_assignment"
    assert sum(rep["srm"]["observed"].values()) == 1000
    a, b = rep["variants"]
    assert a["variant"] == "a" and a["requests"] > 1000 and 0 < a["errors"] < 0.05 * a["requests"]
    assert a["latency_p50_ms"] < a["latency_p99_ms"] and a["mean_score"] < b["mean_score"]
    assert "sample ratio:" in out and "matches the weights" in out
    page = (tmp_path / "html" / "index.html").read_text()
    assert "b better than a" in page and (tmp_path / "html" / "plots").is_dir()
    assert json.loads((tmp_path / "html" / "report.json").read_text())["experiment"] == "greet"


def test_srm_alarm_on_a_planted_90_10_split(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'skewed.db'}"
    fill(url, users=600, share_a=0.9, seed=2)
    code, rep, out, err = report(capsys, "greet", "--weights", "a=0.5,b=0.5", "--db", url)
    assert code == exits.OK
    assert rep["srm"]["alarm"] and rep["srm"]["p_value"] < 1e-6
    assert "MISMATCH" in out and "sample ratio mismatch" in err


def test_early_data_is_not_yet_known_with_an_estimate(balanced, capsys):
    code, rep, out, _ = report(capsys, "greet", "--weights", "a=1,b=1", "--db", balanced,
                               "--since", "2026-03-10T12:00")
    verdict = rep["verdicts"][0]
    assert code == exits.OK and verdict["decision"] == "not yet known"
    assert verdict["more_requests"] > 0 and "more requests needed" in out


def test_unknown_experiment_and_missing_weights_are_clean_errors(balanced, tmp_path, capsys):
    code = main(["experiment", "report", "nope", "--weights", "a=1,b=1", "--db", balanced])
    err = capsys.readouterr().err
    assert code == exits.DATA and "no requests of experiment 'nope'" in err and "greet" in err
    code = main(["experiment", "report", "greet", "--db", balanced])
    err = capsys.readouterr().err
    assert code == exits.USAGE and "--config serve.yaml" in err and "Traceback" not in err
    config = tmp_path / "serve.yaml"
    config.write_text(SERVE_YAML)
    code = main(["experiment", "report", "other", "--config", str(config), "--db", balanced])
    err = capsys.readouterr().err
    assert code == exits.USAGE and "not in" in err and "greet" in err
    code = main(["experiment", "report", "greet", "--weights", "a=1,c", "--db", balanced])
    assert code == exits.USAGE and "VARIANT=WEIGHT" in capsys.readouterr().err
    code = main(["experiment", "report", "greet", "--weights", "a=1,b=1", "--control", "z",
                 "--db", balanced])
    assert code == exits.USAGE and "'z' is not one of the variants" in capsys.readouterr().err
    code = main(["experiment", "report", "greet", "--weights", "a=1,b=1", "--since", "soon",
                 "--db", balanced])
    assert code == exits.USAGE and "--since" in capsys.readouterr().err
