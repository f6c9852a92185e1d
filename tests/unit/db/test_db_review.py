"""The review tables' rules: claims, final blind answers, settling, adjudication, exports' reads."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tunelab.db import open_database
from tunelab.db.review import (
    ItemInput,
    ReviewRefused,
    add_items,
    adjudicate,
    adjudication_queue,
    claim_next,
    create_project,
    final_items,
    get_project,
    item_answers,
    mark_feedback_reviewed,
    own_answer,
    reviewer_counts,
    set_guideline,
    status_counts,
    submit_answer,
    waiting_for,
)
from tunelab.db.review_users import (
    add_user,
    clear_login_failures,
    create_session,
    end_session,
    get_session,
    recent_login_failures,
    record_login_failure,
    set_password,
    user_with_hash,
)
from tunelab.errors import UsageError
from tunelab.review.schema import agree


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'review.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    with open_database(url) as database:
        yield database


def _items(n: int) -> list[ItemInput]:
    return [ItemInput("data", f"rows.jsonl:{i + 1}", {"prompt": [], "answers": [
        {"label": "answer", "text": f"answer {i}"}]}, {"row": {"i": i}}) for i in range(n)]


def _users(db, *names, role="reviewer"):
    return [add_user(db, n, role, "hash") for n in names]


def test_each_item_goes_to_two_different_reviewers_and_no_further(db):
    project = create_project(db, "p", "data", {"fields": []}, "guide", 2)
    assert add_items(db, project, _items(2)) == (2, 0)
    a, b, c = _users(db, "a", "b", "c")
    first = claim_next(db, project, a.id)
    assert claim_next(db, project, a.id) == first  # the held item comes back, no second claim
    assert claim_next(db, project, b.id) == first  # a started item is finished first
    assert claim_next(db, project, c.id) != first  # two reviewers hold it: c gets the other
    assert waiting_for(db, project, a.id) == 2  # the held one and the other
    submit_answer(db, first, a.id, {"label_ok": "yes"}, 1, agree)
    second = claim_next(db, project, a.id)
    assert second != first
    assert claim_next(db, project, c.id) == second  # c still holds it
    submit_answer(db, second, a.id, {"label_ok": "yes"}, 1, agree)
    assert claim_next(db, project, a.id) is None  # a has answered both


def test_answers_are_final_and_only_for_the_reviewer_given_the_item(db):
    project = create_project(db, "p", "data", {"fields": []}, "guide", 2)
    add_items(db, project, _items(1))
    a, b = _users(db, "a", "b")
    item = claim_next(db, project, a.id)
    with pytest.raises(ReviewRefused) as refused:
        submit_answer(db, item, b.id, {"label_ok": "yes"}, 1, agree)
    assert refused.value.code == "not_assigned"
    assert submit_answer(db, item, a.id, {"label_ok": "yes"}, 1, agree) == "open"
    with pytest.raises(ReviewRefused) as again:
        submit_answer(db, item, a.id, {"label_ok": "no"}, 1, agree)
    assert again.value.code == "already_answered"
    assert own_answer(db, item, a.id).answer == {"label_ok": "yes"}
    assert own_answer(db, item, b.id) is None


def test_agreement_settles_and_disagreement_goes_to_an_adjudicator_who_did_not_review(db):
    project = create_project(db, "p", "data", {"fields": []}, "guide", 2)
    add_items(db, project, _items(2))
    a, b = _users(db, "a", "b")
    (judge,) = _users(db, "judge", role="adjudicator")
    answers = {a.id: ["yes", "yes"], b.id: ["yes", "no"]}
    for step in range(2):
        for user in (a, b):
            item = claim_next(db, project, user.id)
            submit_answer(db, item, user.id, {"label_ok": answers[user.id][step]}, 1, agree)
    assert status_counts(db, project) == {"open": 0, "agreed": 1, "disagreed": 1,
                                          "adjudicated": 0}
    (disputed,) = adjudication_queue(db, project, judge.id)
    assert adjudication_queue(db, project, a.id) == []  # a reviewed it
    with pytest.raises(ReviewRefused) as own:
        adjudicate(db, disputed, a.id, {"label_ok": "no"}, 1)
    assert own.value.code == "own_item"
    set_guideline(db, "p", "guide, second version")
    adjudicate(db, disputed, judge.id, {"label_ok": "no"}, 2)
    with pytest.raises(ReviewRefused):
        adjudicate(db, disputed, judge.id, {"label_ok": "yes"}, 2)  # final
    final = {f.item_id: f for f in final_items(db, project)}
    assert len(final) == 2
    settled = final[disputed]
    assert (settled.how, settled.decision, settled.adjudicator) == ("adjudicated",
                                                                    {"label_ok": "no"}, "judge")
    assert settled.reviewers == ("a", "b") and settled.guideline_versions == (1, 2)
    agreed = next(f for f in final.values() if f.how == "agreed")
    assert agreed.decision == {"label_ok": "yes"} and agreed.adjudicator is None
    assert [x.reviewer for x in item_answers(db, disputed)] == ["a", "b"]
    assert reviewer_counts(db, project) == {"a": {"answered": 2, "held": 0},
                                            "b": {"answered": 2, "held": 0}}


def test_open_and_disagreed_items_are_not_final(db):
    project = create_project(db, "p", "data", {"fields": []}, "guide", 2)
    add_items(db, project, _items(1))
    a, b = _users(db, "a", "b")
    item = claim_next(db, project, a.id)
    submit_answer(db, item, a.id, {"label_ok": "yes"}, 1, agree)
    assert final_items(db, project) == []
    claim_next(db, project, b.id)
    submit_answer(db, item, b.id, {"label_ok": "no"}, 1, agree)
    assert final_items(db, project) == []


def test_single_review_projects_settle_on_the_one_answer(db):
    project = create_project(db, "solo", "data", {"fields": []}, "guide", 1)
    add_items(db, project, _items(1))
    (a,) = _users(db, "a")
    item = claim_next(db, project, a.id)
    assert submit_answer(db, item, a.id, {"label_ok": "no"}, 1, agree) == "agreed"


def test_re_adding_an_item_is_skipped_and_projects_are_checked(db):
    project = create_project(db, "p", "output", {"fields": []}, "guide", 2)
    assert add_items(db, project, _items(3)) == (3, 0)
    assert add_items(db, project, _items(4)) == (1, 3)
    with pytest.raises(UsageError, match="already exists"):
        create_project(db, "p", "output", {"fields": []}, "guide", 2)
    with pytest.raises(UsageError, match="1 to 3"):
        create_project(db, "q", "output", {"fields": []}, "guide", 4)
    with pytest.raises(UsageError, match="kind"):
        create_project(db, "q", "images", {"fields": []}, "guide", 2)
    with pytest.raises(UsageError, match="no review project named 'nope'"):
        get_project(db, "nope")


def test_users_sessions_and_failed_sign_ins(db):
    add_user(db, "ann", "admin", "hash-1")
    with pytest.raises(UsageError, match="already exists"):
        add_user(db, "ann", "reviewer", "hash-2")
    with pytest.raises(UsageError, match="role"):
        add_user(db, "bea", "owner", "hash")
    with pytest.raises(UsageError, match="spaces"):
        add_user(db, "a b", "admin", "hash")
    user, stored = user_with_hash(db, "ann")
    assert stored == "hash-1" and user.role == "admin"
    create_session(db, "t" * 64, user.id, "csrf", timedelta(hours=1))
    assert get_session(db, "t" * 64).user.name == "ann"
    create_session(db, "old" + "x" * 61, user.id, "csrf", timedelta(seconds=-1))
    assert get_session(db, "old" + "x" * 61) is None  # expired
    for _ in range(3):
        record_login_failure(db, "ann")
    count, last = recent_login_failures(db, "ann", timedelta(minutes=15))
    assert count == 3 and last is not None and last.tzinfo is not None
    clear_login_failures(db, "ann")
    assert recent_login_failures(db, "ann", timedelta(minutes=15))[0] == 0
    record_login_failure(db, "ann")
    set_password(db, "ann", "hash-3")  # ends sessions, lifts the count
    assert get_session(db, "t" * 64) is None
    assert recent_login_failures(db, "ann", timedelta(minutes=15))[0] == 0
    end_session(db, "unknown")  # no error


def test_feedback_review_marks(db):
    from dataclasses import asdict

    from sqlalchemy import insert, select

    from db_records import make_record
    from tunelab.db import FeedbackInput, write_feedback
    from tunelab.db.tables import FeedbackRow, RequestLogRow

    with db.engine.begin() as conn:
        conn.execute(insert(RequestLogRow), [asdict(make_record(1))])
    fb = write_feedback(db, FeedbackInput(make_record(1).request_id, rating="down",
                                          correction="better"))
    assert mark_feedback_reviewed(db, [(fb.feedback.id, "approved", "best"),
                                       (999, "rejected", None)]) == 1
    with pytest.raises(UsageError):
        mark_feedback_reviewed(db, [(fb.feedback.id, "maybe", None)])
    with db.engine.connect() as conn:
        row = conn.execute(select(FeedbackRow.review_status, FeedbackRow.review_correction)).one()
    assert tuple(row) == ("approved", "best")


def test_a_second_claim_racing_past_the_held_check_gets_the_same_item(db):
    from tunelab.db.database import write_transaction
    from tunelab.db.review import _claim

    project = create_project(db, "p", "data", {"fields": []}, "guide", 2)
    add_items(db, project, _items(3))
    (a,) = _users(db, "a")
    held = claim_next(db, project, a.id)
    with write_transaction(db) as conn:  # what a double click's second request does
        assert _claim(conn, project, a.id) == held
    assert reviewer_counts(db, project) == {"a": {"answered": 0, "held": 1}}


@pytest.mark.parametrize("name", ["a?b", "a#b", "..", "-x", "a b", "a/b", "", "x" * 201])
def test_project_names_are_safe_in_addresses(db, name):
    with pytest.raises(UsageError, match="project name"):
        create_project(db, name, "data", {"fields": []}, "guide", 2)
