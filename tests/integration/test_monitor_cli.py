"""`tunelab monitor` through the real CLI: a tiny classifier trained on SST-2 rows, production
prompts written to the request log, and the verdicts, tables, alerts and exit codes.

Prompts drawn from the run's own training file raise no alarm, even with
``--fail-on-drift``; GSM8K questions sent to the same model do (exit 1, ALERT lines).
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone

import pytest
import yaml
from drift_runs import (
    gsm8k_prompts,
    log_prompts,
    sst2_prompts,
    train_sst2_run,
    write_sst2_subset,
)

from shared_data import shared_file
from tunelab.cli import exits
from tunelab.cli.main import main
from tunelab.db import open_database
from tunelab.db.tables import FeedbackRow

PROMPTS = 300


def GSM8K():  # noqa: N802 - reads as the data set's name
    return shared_file("gsm8k/gsm_8k_train.json")


@pytest.fixture(scope="module")
def sst2_run(tmp_path_factory, tiny_model_dir):
    source = shared_file("sst2/train.tsv")
    tmp = tmp_path_factory.mktemp("monitor")
    train = write_sst2_subset(source, tmp / "sst2_train.tsv")
    return train_sst2_run(tmp, tiny_model_dir, train), train


def _monitor(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["monitor", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_prompts_from_the_training_file_raise_no_alarm(sst2_run, tmp_path, capsys):
    run, train = sst2_run
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log_prompts(url, run.name, sst2_prompts(train, PROMPTS, seed=1))
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"models": [str(run)], "db": url}))
    code, out, err = _monitor(capsys, "--config", str(config), "--fail-on-drift", "--json")
    assert code == exits.OK, err
    assert "ALERT" not in err
    report = json.loads(out.strip().splitlines()[-1])
    [m] = report["models"]
    assert m["model"] == run.name and m["run"] == str(run)
    assert sum(b["requests"] for b in m["traffic"]) == PROMPTS
    drift = m["drift"]
    assert drift["verdict"] == "ok" and drift["production_prompts"] == PROMPTS
    features = {f["feature"]: f for f in drift["features"]}
    assert set(features) == {"length", "vocabulary", "labels"}
    assert all(f["psi"] < 0.1 and not f["drifted"] for f in features.values()), features
    assert "embeddings not compared" in " ".join(drift["notes"])  # the extra is not installed
    assert f"model {run.name} (run {run})" in out and "drift of 300 prompts" in out


def test_prompts_from_another_data_set_raise_an_alert(sst2_run, tmp_path, capsys):
    run, _ = sst2_run
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log_prompts(url, run.name, gsm8k_prompts(GSM8K(), PROMPTS, 2))
    runs = str(run.parent)
    code, out, err = _monitor(capsys, "--db", url, "--runs-dir", runs, "--json")
    assert code == exits.OK  # without --fail-on-drift the alert is reported, not an exit
    alerts = [x for x in err.splitlines() if x.startswith("ALERT:")]
    assert any(f"ALERT: {run.name}: length drifted" in x for x in alerts), err
    report = json.loads(out.strip().splitlines()[-1])
    drift = report["models"][0]["drift"]
    assert drift["verdict"] == "drift" and report["alerts"] == alerts
    length = next(f for f in drift["features"] if f["feature"] == "length")
    assert length["psi"] > 0.2 and length["p_value"] < 0.01
    code, out, err = _monitor(capsys, "--db", url, "--runs-dir", runs, "--fail-on-drift",
                              "--html", str(tmp_path / "report"))
    assert code == exits.PROBLEMS and "ALERT:" in err
    page = (tmp_path / "report" / "index.html").read_text()
    assert "DRIFT" in page and "ALERT" in page and run.name in page
    assert sorted(p.name for p in (tmp_path / "report" / "plots").iterdir()) == [
        f"00_{run.name}_psi.png", f"00_{run.name}_traffic.png"]


def test_a_store_model_has_traffic_and_feedback_but_no_drift_section(sst2_run, tmp_path, capsys):
    run, train = sst2_run
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log_prompts(url, "tiny", sst2_prompts(train, 10, seed=3))
    db = open_database(url)
    with db.session() as s:  # two ups and a down on three of its responses
        for i, (rating, score) in enumerate([("up", 5), ("up", None), ("down", 2)]):
            s.add(FeedbackRow(response_id=f"chatcmpl-tiny-{i:06d}", user="", rating=rating,
                              score=score, created_at=run_time(), updated_at=run_time()))
    db.close()
    code, out, err = _monitor(capsys, "--db", url, "--runs-dir", str(run.parent), "--json",
                              "--fail-on-drift")
    assert code == exits.OK, err
    [m] = json.loads(out.strip().splitlines()[-1])["models"]
    assert m["run"] is None and m["drift"] is None and "not a run" in m["note"]
    assert sum(b["feedback"] for b in m["traffic"]) == 3
    assert "not a run: no training data to compare with" in out and "drift of" not in out


def test_too_few_prompts_are_not_an_alarm(sst2_run, tmp_path, capsys):
    run, _ = sst2_run
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log_prompts(url, run.name, gsm8k_prompts(GSM8K(), 20, 4))
    code, out, err = _monitor(capsys, "--db", url, "--runs-dir", str(run.parent),
                              "--fail-on-drift")
    assert code == exits.OK and "ALERT" not in err
    assert "too few prompts to judge" in out and "monitor.min_prompts (50)" in out


def test_bad_input_gets_a_clean_message(sst2_run, tmp_path, capsys):
    run, _ = sst2_run
    url = f"sqlite:///{tmp_path / 'log.db'}"
    code, _, err = _monitor(capsys, "--db", url, "--model", "nope")
    assert code == exits.USAGE and "model 'nope' is not served" in err and "Traceback" not in err
    code, _, err = _monitor(capsys, "--db", url, "--since", "yesterday")
    assert code == exits.USAGE and "argument --since: must be a span ago" in err
    code, _, err = _monitor(capsys, "--db", url, "--since", "2999-01-01")
    assert code == exits.USAGE and "is not in the past" in err
    code, out, err = _monitor(capsys, "--db", url)
    assert code == exits.OK and "no requests in this span" in out


def run_time() -> datetime:
    return datetime.now(timezone.utc)


def test_a_run_whose_training_data_is_gone_gets_a_note_not_a_traceback(sst2_run, tmp_path,
                                                                       capsys):
    run, train = sst2_run
    copy = tmp_path / "runs" / "gone-run"
    shutil.copytree(run, copy)
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["data"]["train"] = [{**cfg["data"]["train"][0], "path": str(tmp_path / "gone.tsv")}]
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log_prompts(url, "gone-run", sst2_prompts(train, 60, seed=6))
    code, out, err = _monitor(capsys, "--db", url, "--runs-dir", str(copy.parent),
                              "--fail-on-drift")
    assert code == exits.OK and "Traceback" not in err
    assert "no drift check: the run's training data cannot be read" in out
    assert "gone.tsv" in out
