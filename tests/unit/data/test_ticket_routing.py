"""The synthetic ticket-routing task: deterministic, balanced, split cleanly, learnable."""

import json
import math
import re
from collections import Counter, defaultdict

import pytest

from tunelab.data.example import Example
from tunelab.data.tasks.ticket_routing import (
    SYSTEM_PROMPT,
    TEAMS,
    TEST_ROWS,
    TRAIN_ROWS,
    make_splits,
    make_tickets,
    to_jsonl_rows,
)


def _texts(examples):
    return [ex.messages[1].content for ex in examples]


def test_same_seed_same_tickets_other_seed_other_tickets():
    a, b, c = make_tickets(60, seed=1), make_tickets(60, seed=1), make_tickets(60, seed=2)
    assert to_jsonl_rows(a) == to_jsonl_rows(b)
    assert _texts(a) != _texts(c)


@pytest.mark.parametrize("n", [0, 1, 5, 6, 61, 600])
def test_balanced_over_teams(n):
    counts = Counter(ex.meta["label"] for ex in make_tickets(n, seed=0))
    full = [counts.get(t, 0) for t in TEAMS]
    assert sum(full) == n
    assert max(full) - min(full) <= 1


def test_example_shape():
    for ex in make_tickets(30, seed=3):
        assert isinstance(ex, Example)
        assert [m.role for m in ex.messages] == ["system", "user", "assistant"]
        assert ex.messages[0].content == SYSTEM_PROMPT
        assert ex.messages[2].content == ex.meta["label"] in TEAMS
        assert ex.meta["id"]
        assert ex.messages[1].content.strip() == ex.messages[1].content
        assert "{" not in ex.messages[1].content  # every slot was filled


def test_wording_varies_and_texts_are_unique():
    texts = _texts(make_tickets(1200, seed=0))
    assert len(set(texts)) == len(texts)
    # Many distinct templates per team, not one sentence with a changed number.
    skeletons = {re.sub(r"[\d$#.,]+", "", t) for t in texts}
    assert len(skeletons) > 300


def test_every_team_is_named_with_its_duty_in_the_system_prompt():
    for team in TEAMS:
        assert f"{team} (" in SYSTEM_PROMPT
    assert "team name only" in SYSTEM_PROMPT


@pytest.mark.parametrize(("n_train", "n_test"), [(480, 120), (100, 7), (0, 12), (30, 0)])
def test_splits_are_disjoint_balanced_and_sized(n_train, n_test):
    train, test = make_splits(n_train, n_test, seed=0)
    assert (len(train), len(test)) == (n_train, n_test)
    assert not set(_texts(train)) & set(_texts(test))
    assert not {ex.meta["id"] for ex in train} & {ex.meta["id"] for ex in test}
    for part in (train, test):
        counts = [sum(ex.meta["label"] == t for ex in part) for t in TEAMS]
        assert max(counts) - min(counts) <= 1


def test_no_ticket_text_has_two_labels():
    seen = {}
    for seed in range(3):
        for ex in make_tickets(600, seed=seed):
            text, label = ex.messages[1].content, ex.meta["label"]
            assert seen.setdefault(text, label) == label


def test_labels_are_learnable_from_the_ticket_text():
    """A bag-of-words naive Bayes trained on the train split nearly aces the test split.

    This is the honesty check: the label follows from the ticket's words alone (no
    label noise, no team decided by chance), so a fine-tuned model can reach it.
    """
    train, test = make_splits(600, 300, seed=0)

    def words(text):
        return re.findall(r"[a-z][a-z'-]+", text.lower())

    counts = defaultdict(Counter)
    for ex in train:
        counts[ex.meta["label"]].update(words(ex.messages[1].content))
    vocab = set().union(*counts.values())
    totals = {t: sum(c.values()) for t, c in counts.items()}

    def predict(text):
        def score(t):
            return sum(math.log((counts[t][w] + 1) / (totals[t] + len(vocab))) for w in words(text))
        return max(TEAMS, key=score)

    correct = sum(predict(ex.messages[1].content) == ex.meta["label"] for ex in test)
    assert correct / len(test) >= 0.97


def test_jsonl_rows_are_openai_chat_format():
    examples = make_tickets(4, seed=0)
    rows = to_jsonl_rows(examples)
    for ex, row in zip(examples, rows, strict=True):
        json.dumps(row)  # serialisable as is
        assert row["label"] == ex.meta["label"]
        assert row["id"] == ex.meta["id"]
        assert row["messages"] == [{"role": m.role, "content": m.content} for m in ex.messages]


def test_negative_n_is_refused():
    with pytest.raises(ValueError, match="n must be >= 0"):
        make_tickets(-1, seed=0)


def test_quickstart_sizes_read_a_gain_per_team():
    # the training settings moved to tunelab.recipes.quickstart.RECOMMENDED (its own test)
    assert TEST_ROWS >= len(TEAMS) * 10  # enough per team to read a 30-point gain
    assert TRAIN_ROWS >= len(TEAMS) * 100
