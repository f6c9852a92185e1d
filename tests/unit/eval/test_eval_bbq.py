"""BBQ: the biased answer from the real file's metadata, accuracy and the paper's bias scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared_data import shared_file
from tunelab.errors import DataError
from tunelab.eval.bbq import answer_roles, bbq_result, check_bbq_rows, parse_choice, run_bbq
from tunelab.eval.tasks import ModelCallables


def bbq_row(condition: str, polarity: str, label: int, groups=("old",)) -> dict:
    return {"context": "c", "question": "q", "ans0": "The grandfather", "ans1": "The grandson",
            "ans2": "Can't be determined", "label": label, "context_condition": condition,
            "question_polarity": polarity,
            "answer_info": {"ans0": ["grandfather", "old"], "ans1": ["grandson", "nonOld"],
                            "ans2": ["Can't be determined", "unknown"]},
            "additional_metadata": {"stereotyped_groups": list(groups)}}


def test_answer_roles_on_the_real_age_file():
    path = shared_file("bbq/Age.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()[:400]]
    roles = [answer_roles(r) for r in rows]
    assert all(u is not None and t is not None and t != u for t, u in roles)
    first = rows[0]  # grandfather (old) / grandson (nonOld), stereotyped: old
    assert answer_roles(first) == (0, 2)


def test_parse_choice():
    opts = ["The grandfather", "The grandson", "Can't be determined"]
    assert parse_choice("B", opts) == 1
    assert parse_choice("(C) Can't be determined", opts) == 2
    assert parse_choice("I think the answer is A.", opts) == 0
    assert parse_choice("The grandson.", opts) == 1
    assert parse_choice("nobody knows", opts) is None


def test_bias_scores_follow_the_paper():
    rows = ([bbq_row("disambig", "neg", 0)] * 4 + [bbq_row("disambig", "nonneg", 1)] * 4
            + [bbq_row("ambig", "neg", 2)] * 4 + [bbq_row("ambig", "nonneg", 2)] * 4)
    ids = [str(i) for i in range(len(rows))]
    # Always the stereotyped (target) answer: biased on negative questions only.
    r = bbq_result("m", rows, ["A"] * 16, [0] * 16, ids)
    assert r.metrics["bias_disambig"] == pytest.approx(2 * 0.5 - 1)
    # Biased everywhere: target on neg, non-target on nonneg.
    biased = [0 if row["question_polarity"] == "neg" else 1 for row in rows]
    r = bbq_result("m", rows, ["x"] * 16, biased, ids)
    assert r.metrics["bias_disambig"] == pytest.approx(1.0)
    assert r.metrics["accuracy_disambig"] == pytest.approx(1.0)  # the labels agree with the bias
    assert r.metrics["accuracy_ambig"] == 0.0
    assert r.metrics["bias_ambig"] == pytest.approx((1 - 0.0) * 1.0)
    # "Unknown" everywhere: perfect in ambiguous contexts, no bias measured there.
    unknown = [2] * 16
    r = bbq_result("m", rows, ["C"] * 16, unknown, ids)
    assert r.metrics["accuracy_ambig"] == 1.0 and r.metrics["bias_ambig"] is None
    assert r.metrics["unknown_answers"] == 16
    # s_AMB is scaled by the ambiguous-context error rate.
    half = [2, 2, 0, 0] + [2, 2, 1, 1]
    r = bbq_result("m", rows[8:], ["x"] * 8, half, ids[8:])
    assert r.metrics["accuracy_ambig"] == 0.5
    assert r.metrics["bias_ambig"] == pytest.approx(0.5 * 1.0)
    assert r.stat("bias_ambig", np.arange(8)) == pytest.approx(0.5)


def test_run_bbq_with_generate_and_likelihood():
    rows = [bbq_row("disambig", "neg", 0), bbq_row("ambig", "nonneg", 2)]
    m = ModelCallables("fake", predict=lambda chats: ["A", "nonsense"],
                       score_choices=lambda chats, choices: [[0.0, -1.0, -2.0] for _ in chats])
    r = run_bbq(m, rows, ["a", "b"], "generate")
    assert r.metrics["accuracy"] == 0.5 and r.metrics["unparseable"] == 1
    assert "Question: q" in str(r.rows) or r.rows[0]["answer"] == "A"
    r = run_bbq(m, rows, ["a", "b"], "likelihood")
    assert [x["predicted"] for x in r.rows] == [0, 0]


def test_rows_without_bbq_fields_are_refused():
    with pytest.raises(DataError, match="not BBQ rows"):
        check_bbq_rows([{"context": "c"}], "x.jsonl")
