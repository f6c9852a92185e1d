"""Classification metrics agree with scikit-learn; answers are matched to labels."""

import random

import pytest

from tunelab.data.example import Example, Message
from tunelab.eval.classify import (
    classification_metrics,
    evaluate_classifier,
    match_label,
    normalize_answer,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")

LABELS = ["billing", "shipping", "technical", "returns"]
UNP = "<unparseable>"  # stands for None when handing predictions to scikit-learn


def _random_case(seed, n=200, p_none=0.1):
    rng = random.Random(seed)
    y_true = [rng.choice(LABELS) for _ in range(n)]
    y_pred = [None if rng.random() < p_none else rng.choice(LABELS) for _ in range(n)]
    return y_true, y_pred


FIXED_TRUE = ["billing", "billing", "shipping", "technical", "returns", "returns", "returns",
              "technical", "shipping", "billing"]
FIXED_PRED = ["billing", "shipping", "shipping", None, "returns", "billing", "returns",
              "technical", None, "billing"]


@pytest.mark.parametrize(
    ("y_true", "y_pred"),
    [(FIXED_TRUE, FIXED_PRED), _random_case(0), _random_case(1, p_none=0.0),
     # a class that is never predicted and one with no support
     (["billing", "shipping", "billing"], ["billing", "billing", None])],
)
def test_metrics_match_scikit_learn(y_true, y_pred):
    got = classification_metrics(y_true, y_pred, LABELS)
    sk_pred = [UNP if p is None else p for p in y_pred]
    kw = {"labels": LABELS, "zero_division": 0}

    assert got["n"] == len(y_true)
    assert got["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(y_true, sk_pred))
    assert got["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(y_true, sk_pred, average="macro", **kw))
    assert got["micro_f1"] == pytest.approx(sklearn_metrics.f1_score(y_true, sk_pred, average="micro", **kw))
    p, r, f, s = sklearn_metrics.precision_recall_fscore_support(y_true, sk_pred, **kw)
    for i, label in enumerate(LABELS):
        c = got["per_class"][label]
        assert (c["precision"], c["recall"], c["f1"]) == pytest.approx((p[i], r[i], f[i]))
        assert c["support"] == s[i]
    cm = sklearn_metrics.confusion_matrix(y_true, sk_pred, labels=[*LABELS, UNP])
    assert got["confusion_matrix"] == cm[: len(LABELS)].tolist()
    assert got["unparseable"] == sum(p is None for p in y_pred)
    assert got["confusion_columns"] == [*LABELS, "unparseable"]


def test_fixed_case_by_hand():
    got = classification_metrics(FIXED_TRUE, FIXED_PRED, LABELS)
    assert got["accuracy"] == pytest.approx(0.6)
    assert got["unparseable"] == 2
    assert got["confusion_matrix"][0] == [2, 1, 0, 0, 0]  # billing: 2 right, 1 as shipping
    assert got["confusion_matrix"][3] == [1, 0, 0, 2, 0]  # returns: 1 as billing


def test_metrics_reject_unknown_labels_and_length_mismatch():
    with pytest.raises(ValueError, match="y_true has 2 items but y_pred has 1"):
        classification_metrics(["billing", "billing"], ["billing"], LABELS)
    with pytest.raises(ValueError, match="true \\['sales'\\]"):
        classification_metrics(["sales"], ["billing"], LABELS)
    with pytest.raises(ValueError, match="predicted \\['sales'\\]"):
        classification_metrics(["billing"], ["sales"], LABELS)


def test_empty_input_gives_zeros():
    got = classification_metrics([], [], LABELS)
    assert got["n"] == 0 and got["accuracy"] == 0.0 and got["macro_f1"] == 0.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [(" Billing.\n", "billing"), ("TEAM-Atlas!", "team atlas"), ("a \t b\n\nc", "a b c"),
     ("Straße", "strasse"), ("", "")],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("billing", "billing"),
        ("  Billing. ", "billing"),
        ("BILLING!", "billing"),
        ("This goes to the shipping team.", "shipping"),
        ("billing or shipping", None),  # two labels: ambiguous
        ("I don't know", None),
        ("", None),
        ("rebilling", None),  # whole words only
    ],
)
def test_match_label(answer, expected):
    assert match_label(answer, LABELS) == expected


def test_match_label_prefers_exact_and_longest_labels():
    labels = ["Plus", "Plus Pro", "Team Atlas (payments)"]
    assert match_label("plus pro", labels) == "Plus Pro"
    assert match_label("I'd pick Plus Pro.", labels) == "Plus Pro"  # "Plus" is inside it
    assert match_label("team atlas payments", labels) == "Team Atlas (payments)"
    assert match_label("Team Atlas (payments)", labels) == "Team Atlas (payments)"


def _chat(user, answer, label=None, ident=None):
    meta = {}
    if label is not None:
        meta["label"] = label
    if ident is not None:
        meta["id"] = ident
    return Example(messages=[Message("system", "Route it."), Message("user", user),
                             Message("assistant", answer)], source="t.jsonl", line=1, meta=meta)


def test_evaluate_classifier_sends_prompts_without_the_answer():
    examples = [
        _chat("charged twice", "billing", label="billing", ident="a"),
        _chat("parcel lost", "shipping", label="shipping", ident="b"),
        _chat("app crash", "technical"),  # truth from the assistant message
    ]
    sent = []

    def predict(chats):
        sent.extend(chats)
        return ["Billing.", "It is billing", "no idea"]

    got = evaluate_classifier(predict, examples, LABELS)
    assert [[m.role for m in c] for c in sent] == [["system", "user"]] * 3
    assert sent[0][1].content == "charged twice"
    assert got["accuracy"] == pytest.approx(1 / 3)
    assert got["unparseable"] == 1
    assert got["predictions"][0] == {"id": "a", "answer": "Billing.", "predicted": "billing",
                                     "true": "billing"}
    assert got["predictions"][1]["predicted"] == "billing"
    assert got["predictions"][2] == {"id": "t.jsonl:1", "answer": "no idea", "predicted": None,
                                     "true": "technical"}


def test_evaluate_classifier_checks_predict_output_and_truth():
    examples = [_chat("x", "billing", label="billing")]
    with pytest.raises(ValueError, match="predict returned 0 answers for 1 prompts"):
        evaluate_classifier(lambda chats: [], examples, LABELS)
    no_truth = Example(messages=[Message("user", "x")], source="t.jsonl", line=4)
    with pytest.raises(ValueError, match="t.jsonl:4: no meta\\['label'\\]"):
        evaluate_classifier(lambda chats: ["billing"], [no_truth], LABELS)
