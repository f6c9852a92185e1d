"""The server's drift and feedback gauges: a real `tunelab serve` of a tiny SST-2 classifier,
asked GSM8K questions, sets ``tunelab_drift_alert`` and the PSI per feature on /metrics."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest
from drift_runs import gsm8k_prompts, train_sst2_run, write_sst2_subset
from serve_server import metric, start_server

from shared_data import shared_file
from tunelab.db import open_database
from tunelab.db.tables import FeedbackRow

pytestmark = pytest.mark.slow

ASKED = 30  # above min_prompts (20 here), a few seconds of the tiny model


def _wait_for(server, name: str, want, timeout: float = 60.0, **labels: str) -> float | None:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = metric(server, name, **labels)
        if value is not None and want(value):
            return value
        time.sleep(0.3)
    raise AssertionError(f"{name}{labels} is {value} after {timeout} s:\n{server.output()[-3000:]}")


def test_gsm8k_questions_to_an_sst2_classifier_raise_the_drift_gauges(tmp_path, tiny_model_dir):
    train = write_sst2_subset(shared_file("sst2/train.tsv"), tmp_path / "sst2_train.tsv", 400)
    questions = gsm8k_prompts(shared_file("gsm8k/gsm_8k_train.json"), ASKED, seed=5)
    run = train_sst2_run(tmp_path, tiny_model_dir, train)
    server = start_server(tmp_path / "server", [str(run)],
                          {"monitor": {"interval": 0.5, "min_prompts": 20}})
    try:
        name = run.name
        # before any request: too few prompts, no alarm, no PSI yet
        assert _wait_for(server, "tunelab_drift_prompts", lambda v: v == 0, model=name) == 0
        assert metric(server, "tunelab_drift_alert", model=name) == 0
        assert metric(server, "tunelab_drift_psi", model=name, feature="length") is None
        client = server.client()
        ids = [client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": q}], max_tokens=1,
            temperature=0).id for q, _ in questions]
        _wait_for(server, "tunelab_drift_prompts", lambda v: v == ASKED, model=name)
        assert _wait_for(server, "tunelab_drift_alert", lambda v: v == 1, model=name) == 1
        assert metric(server, "tunelab_drift_psi", model=name, feature="length") > 0.2
        assert metric(server, "tunelab_drift_p_value", model=name, feature="length") < 0.01
        assert metric(server, "tunelab_feedback_up_rate", model=name) is None  # no ratings yet
        db = open_database(server.db_url)
        now = datetime.now(timezone.utc)
        with db.session() as s:
            for rid, rating in zip(ids[:4], ["up", "up", "up", "down"], strict=True):
                s.add(FeedbackRow(response_id=rid, user="", rating=rating, created_at=now,
                                  updated_at=now))
        db.close()
        assert _wait_for(server, "tunelab_feedback_up_rate", lambda v: v == 0.75, model=name)
        assert metric(server, "tunelab_feedback_ratings", model=name) == 4
        log = server.output()
        assert all(q[:40] not in log for q, _ in questions)  # no prompt text in the server log
        assert "drift watch: sst2-run drifted from its training data" in log
    finally:
        assert server.stop() == 0
