"""`tunelab feedback export` on a SQLite database filled directly: rows, skips, the gate."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import timedelta

import pytest
import yaml
from sqlalchemy import select, update

from db_records import T0, make_record
from tunelab.cli import exits
from tunelab.cli.main import main
from tunelab.db import open_database
from tunelab.db.review import mark_feedback_reviewed
from tunelab.db.tables import FeedbackRow, RequestLogRow

SYSTEM = {"role": "system", "content": "Route the ticket to a team."}


def chat(text: str) -> str:
    return json.dumps([SYSTEM, {"role": "user", "content": text}])


class Log:
    """Requests and feedback written straight into the tables."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.requests: list[RequestLogRow] = []
        self.feedback: list[FeedbackRow] = []

    def request(self, prompt: str | None, answer: str | None, **changes) -> str:
        i = len(self.requests)
        record = make_record(i, **{"model": "served-run", "prompt": prompt, "answer": answer,
                                   **changes})
        self.requests.append(RequestLogRow(**asdict(record)))
        return record.request_id

    def feedback_on(self, response_id: str, user: str = "", minutes: int = 0, **said) -> None:
        when = T0 + timedelta(minutes=minutes)
        self.feedback.append(FeedbackRow(response_id=response_id, user=user, created_at=when,
                                         updated_at=when, **said))

    def save(self) -> None:
        with open_database(self.url) as db, db.session() as s:
            s.add_all(self.requests + self.feedback)


@pytest.fixture
def log(tmp_path) -> Log:
    """12 corrections, an up/down pair by rating and one by score, and one of each skip."""
    log = Log(f"sqlite:///{tmp_path / 'fb.db'}")
    for i in range(12):
        rid = log.request(chat(f"ticket {i}: my invoice number {i} shows the wrong amount"),
                          "technical")
        log.feedback_on(rid, user=f"u{i}", rating="down", correction="billing")
    p = chat("the app crashes when I open settings")
    log.feedback_on(log.request(p, "technical"), user="a", rating="up")
    log.feedback_on(log.request(p, "shipping"), user="b", rating="down", comment="wrong team")
    q = chat("where is my parcel")
    log.feedback_on(log.request(q, "shipping"), user="c", score=5)
    log.feedback_on(log.request(q, "account"), user="d", score=1)
    log.feedback_on(log.request(None, None), user="e", correction="billing")  # log_text false
    log.feedback_on("chatcmpl-gone", user="f", rating="up")  # not in the log
    log.feedback_on(log.request(chat("hello"), "hi"), user="g", comment="nice")  # no signal
    log.feedback_on(log.request(chat("hello"), "hi"), user="h", score=3)  # a middle score
    log.feedback_on(log.request(chat("reset my password"), "account"), user="i", rating="up")
    log.feedback_on(log.request(chat("x"), None, status_code=429), user="j", rating="down")
    log.feedback_on(log.request("complete this", "text", endpoint="completions"), user="k",
                    correction="better")
    # the same prompt, answer and correction as ticket 0: nothing new to write
    log.feedback_on(log.request(chat("ticket 0: my invoice number 0 shows the wrong amount"),
                                "technical"), user="l", correction="billing")
    return log


def export(tmp_path, log: Log, *extra: str, capsys) -> tuple[int, str, str]:
    log.save()
    code = main(["feedback", "export", "--out", str(tmp_path / "out"), "--db", log.url, *extra])
    out, err = capsys.readouterr()
    return code, out, err


def lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def write_eval(path, *texts: str):
    path.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": t}, {"role": "assistant", "content": "billing"}]}) + "\n"
        for t in texts))
    return path


def test_rows_pairs_and_every_skip_counted(tmp_path, log, capsys):
    heldout = write_eval(tmp_path / "heldout.jsonl", "my card was charged twice", "refund please")
    code, out, err = export(tmp_path, log, "--include-unreviewed", "--eval", str(heldout),
                            capsys=capsys)
    assert code == exits.OK, out + err
    sft = lines(tmp_path / "out" / "sft.jsonl")
    pairs = lines(tmp_path / "out" / "pairs.jsonl")
    assert len(sft) == 12 and len(pairs) == 14
    assert sft[0]["messages"] == [SYSTEM, {"role": "user", "content":
                                  "ticket 0: my invoice number 0 shows the wrong amount"},
                                  {"role": "assistant", "content": "billing"}]
    assert pairs[0] == {"input": {"messages": sft[0]["messages"][:2]},
                        "preferred_output": [{"role": "assistant", "content": "billing"}],
                        "non_preferred_output": [{"role": "assistant", "content": "technical"}]}
    by_rating = [(p["preferred_output"][0]["content"], p["non_preferred_output"][0]["content"])
                 for p in pairs[12:]]
    assert by_rating == [("technical", "shipping"), ("shipping", "account")]
    summary = json.loads((tmp_path / "out" / "export.json").read_text())
    assert summary["skipped"] == {"not_in_log": 1, "text_not_logged": 1, "failed_request": 1,
                                  "not_chat": 1, "no_signal": 2, "no_counterpart": 1,
                                  "duplicate": 1}
    assert summary["feedback_rows"] == 12 + 4 + 8
    assert summary["feedback_ids"]["sft.jsonl"][0] == [1, 24]  # ticket 0, and its duplicate
    gate = json.loads((tmp_path / "out" / "gate.json").read_text())
    assert gate["ok"] and [f["rows"] for f in gate["files"]] == [12, 14]
    assert "wrote 12 supervised row(s) and 14 preference pair(s)" in out
    assert "gate: passed" in out and "no one reviewed is included" in err
    assert "the prompt or answer was not logged" in out


def test_unreviewed_feedback_is_refused_without_the_flag(tmp_path, log, capsys):
    code, out, err = export(tmp_path, log, capsys=capsys)
    assert code == exits.USAGE and "--include-unreviewed" in err
    assert "none of the 24 feedback row(s) selected is approved yet (24 not reviewed" in err
    assert not (tmp_path / "out").exists()


def test_without_the_flag_only_approved_feedback_is_exported(tmp_path, log, capsys):
    log.save()
    with open_database(log.url) as db:  # what `tunelab review export --as feedback` writes
        marked = mark_feedback_reviewed(db, [(1, "approved", "billing dept"),
                                             *[(i, "approved", None) for i in range(2, 12)],
                                             (12, "rejected", None)])
    assert marked == 12
    code = main(["feedback", "export", "--out", str(tmp_path / "out"), "--db", log.url, "--json"])
    out, err = capsys.readouterr()
    assert code == exits.OK, out + err
    report = json.loads(out)
    assert report["reviewed"] is True and report["written"]["sft.jsonl"] == 11
    assert report["skipped"]["not_reviewed"] == 12 and report["skipped"]["rejected_in_review"] == 1
    sft = lines(tmp_path / "out" / "sft.jsonl")
    assert [r["messages"][-1]["content"] for r in sft] == ["billing dept"] + ["billing"] * 10
    assert "ticket 11" not in json.dumps(sft)  # rejected
    code = main(["feedback", "export", "--out", str(tmp_path / "all"), "--db", log.url,
                 "--include-unreviewed", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["reviewed"] is False and report["skipped"]["rejected_in_review"] == 1
    # ticket 0's unreviewed duplicate ("billing") is new beside the approved "billing dept"
    assert "not_reviewed" not in report["skipped"] and report["written"]["sft.jsonl"] == 12


def test_feedback_changed_after_its_review_is_not_reviewed(tmp_path, log, capsys):
    log.save()
    with open_database(log.url) as db:
        assert mark_feedback_reviewed(db, [*[(i, "approved", "billing") for i in range(1, 12)],
                                           (12, "rejected", None)]) == 12
        with db.engine.begin() as conn:  # rows 11 and 12 rewritten after the review
            reviewed = conn.execute(select(FeedbackRow.reviewed_at)
                                    .where(FeedbackRow.id == 11)).scalar_one()
            conn.execute(update(FeedbackRow).where(FeedbackRow.id.in_([11, 12])).values(
                correction="shipping", updated_at=reviewed + timedelta(seconds=1)))
    code = main(["feedback", "export", "--out", str(tmp_path / "out"), "--db", log.url, "--json"])
    out, err = capsys.readouterr()
    assert code == exits.OK, out + err
    report = json.loads(out)
    assert report["written"]["sft.jsonl"] == 10 and "rejected_in_review" not in report["skipped"]
    assert report["skipped"]["not_reviewed"] == 14  # 12 never reviewed, 2 changed since
    sft = lines(tmp_path / "out" / "sft.jsonl")
    assert "shipping" not in json.dumps(sft) and "ticket 10" not in json.dumps(sft)


def test_personal_data_in_a_correction_fails_the_gate(tmp_path, log, capsys):
    rid = log.request(chat("who do I write to?"), "support")
    log.feedback_on(rid, user="m", correction="write to jane.doe@gmail.com")
    code, out, err = export(tmp_path, log, "--include-unreviewed", "--json", capsys=capsys)
    assert code == exits.PROBLEMS
    report = json.loads(out)
    assert not report["gate"]["ok"]
    sft, pairs = report["gate"]["files"]
    pii = [f for f in sft["findings"] if f["code"] == "pii_email"]
    assert len(pii) == 1 and pii[0]["severity"] == "error" and pii[0]["line"] == 13
    assert "jane.doe" not in json.dumps(report)  # masked: j***@gmail.com
    assert any(f["code"] == "pii_email" and f["field"] == "preferred_output[0].content"
               for f in pairs["findings"])
    assert "leakage was not checked" in " ".join(report["notes"])


def test_leakage_against_the_runs_validation_file_fails_the_gate(tmp_path, log, capsys):
    heldout = write_eval(tmp_path / "val.jsonl", "where is my parcel",
                         "ticket 3: my invoice number 3 shows the wrong amount!")
    run = tmp_path / "runs" / "served-run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"data": {"train": [{"path": "x"}], "validation": [{"path": str(heldout)}]}}))
    code, out, err = export(tmp_path, log, "--include-unreviewed", "--model", "served-run",
                            "--runs-dir", str(tmp_path / "runs"), capsys=capsys)
    assert code == exits.PROBLEMS, out + err
    gate = json.loads((tmp_path / "out" / "gate.json").read_text())
    sft, pairs = gate["files"]
    assert [(f["line"], f["code"]) for f in sft["findings"] if f["code"].startswith("leak")] \
        == [(4, "leak_near")]
    assert {(f["line"], f["code"]) for f in pairs["findings"] if f["code"].startswith("leak")} \
        == {(4, "leak_near"), (14, "leak_exact")}
    assert "gate: FAILED" in out and "held-out row 2" in out


def test_filters_model_experiment_and_since(tmp_path, log, capsys):
    for i in range(10):
        rid = log.request(chat(f"experiment ticket {i} about my bill"), "technical",
                          model="canary", experiment="routing", variant="canary")
        log.feedback_on(rid, user=f"x{i}", minutes=60, correction="billing")
    code, out, _ = export(tmp_path, log, "--include-unreviewed", "--experiment", "routing",
                          "--json", capsys=capsys)
    assert code == exits.OK and json.loads(out)["written"] == {"sft.jsonl": 10, "pairs.jsonl": 10}
    code, out, _ = export(tmp_path, log, "--include-unreviewed", "--model", "canary",
                          "--since", (T0 + timedelta(minutes=30)).isoformat(), "--json",
                          capsys=capsys)
    assert json.loads(out)["feedback_rows"] == 10
    code, out, _ = export(tmp_path, log, "--include-unreviewed", "--since", "2026-01-02T04:00:00",
                          "--model", "served-run", "--json", capsys=capsys)
    assert json.loads(out)["feedback_rows"] == 0 and code == exits.OK


def test_a_bad_since_and_a_missing_eval_file_are_clean_errors(tmp_path, log, capsys):
    code, _, err = export(tmp_path, log, "--include-unreviewed", "--since", "yesterday",
                          capsys=capsys)
    assert code == exits.USAGE and "must be a span ago" in err
    code, _, err = export(tmp_path, log, "--include-unreviewed", "--eval",
                          str(tmp_path / "nope.jsonl"), capsys=capsys)
    assert code == exits.DATA and "missing" in err and "Traceback" not in err
