"""Review work done at the same moment: answers to one item, and many reviewers claiming.

Over HTTP against a real `tunelab review serve` (tests/review_server.py): two reviewers
submit their answers to the same item at the same instant (a barrier), item after item;
both answers land and the item is settled. On the database layer, on SQLite and on
PostgreSQL (tests/pg.py): simultaneous submissions settle an item exactly once, and a
crowd of reviewers claiming at once never gets an item twice nor past its reviewer
count. Every wait is bounded.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict

import pytest

from review_server import SheetItem, add_sheet, item_of, start_review_server, write_sheet

WAIT = 60  # seconds any barrier or thread may take


def run_together(*jobs):
    """Run the callables in threads released by one barrier; return their results in order
    (an exception in a thread is raised here)."""
    barrier = threading.Barrier(len(jobs), timeout=WAIT)
    results: list = [None] * len(jobs)
    errors: list = []

    def worker(i, job):
        try:
            barrier.wait()
            results[i] = job()
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i, j)) for i, j in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    if errors:
        raise errors[0]
    return results


def test_two_reviewers_submitting_one_item_at_once_both_land(tmp_path):
    from tunelab.db import open_database
    from tunelab.db.review import get_item, item_answers

    passwords = {"alice": "alice-pass-123456", "bob": "bob-pass-1234567"}
    server = start_review_server(tmp_path / "server",
                                 {n: ("reviewer", p) for n, p in passwords.items()})
    try:
        server.add_project("conc")
        rounds = 6
        add_sheet(server, "conc", write_sheet(tmp_path / "sheet", [
            SheetItem(f"Name a colour, please ({n}).", ("Blue.",), ("m1",))
            for n in range(rounds)]))
        alice, bob = server.client(), server.client()
        assert alice.sign_in("alice", passwords["alice"]).status == 303
        assert bob.sign_in("bob", passwords["bob"]).status == 303
        held = run_together(lambda: item_of(alice.post("/projects/conc/next", {})),
                            lambda: item_of(bob.post("/projects/conc/next", {})))
        done = []
        for r in range(rounds):
            assert held[0] == held[1], f"round {r}: they hold different items {held}"
            item = held[0]
            path = f"/projects/conc/items/{item}"
            bob_says = "good" if r % 2 == 0 else "bad"  # agree on even rounds
            out = run_together(lambda p=path: alice.post(p, {"verdict": "good"}),
                               lambda p=path, v=bob_says: bob.post(p, {"verdict": v}))
            assert [o.status for o in out] == [303, 303] or r == rounds - 1, \
                [(o.status, o.body[:300]) for o in out]
            if r == rounds - 1:  # the last answers end the queue: a page says so
                assert all(o.status in (200, 303) for o in out)
                assert all("Nothing is left" in o.body for o in out if o.status == 200)
            else:
                held = [item_of(o) for o in out]
            done.append((item, "agreed" if bob_says == "good" else "disagreed"))
        with open_database(server.db_url) as db:
            for item, status in done:
                answers = item_answers(db, item)
                assert sorted(a.reviewer for a in answers) == ["alice", "bob"], item
                assert get_item(db, item).status == status, item
        assert len({i for i, _ in done}) == rounds
    finally:
        server.stop()


# --- the database layer -------------------------------------------------------------------

def _setup(url: str, items: int, reviewers: int, per_item: int):
    from tunelab.db import open_database
    from tunelab.db.review import ItemInput, add_items, create_project
    from tunelab.db.review_users import add_user
    from tunelab.review.schema import default_schema, schema_to_json

    db = open_database(url)
    project = create_project(db, "storm", "output", schema_to_json(default_schema("output")),
                             "# Guideline", per_item)
    add_items(db, project, [ItemInput("eval_sheet", f"ref-{i}",
                                      {"prompt": [{"role": "user", "content": f"q{i}"}],
                                       "reference": None,
                                       "answers": [{"label": "A", "text": f"a{i}"}],
                                       "details": []}, {}) for i in range(items)])
    users = [add_user(db, f"r{i}", "reviewer", "$argon2id$not-a-real-hash").id
             for i in range(reviewers)]
    return db, project, users


def _simultaneous_submits(url: str) -> None:
    from tunelab.db.review import claim_next, get_item, item_answers, submit_answer
    from tunelab.review.schema import agree

    db, project, (u1, u2) = _setup(url, items=5, reviewers=2, per_item=2)
    try:
        for r in range(5):
            item = claim_next(db, project, u1)
            assert claim_next(db, project, u2) == item
            second = "good" if r % 2 else "bad"
            statuses = run_together(
                lambda i=item: submit_answer(db, i, u1, {"verdict": "good", "correction": ""},
                                             1, agree),
                lambda i=item, v=second: submit_answer(db, i, u2, {"verdict": v,
                                                                   "correction": ""}, 1, agree))
            settled = "agreed" if second == "good" else "disagreed"
            assert sorted(statuses) == sorted(["open", settled]), statuses  # settled once
            assert len(item_answers(db, item)) == 2
            assert get_item(db, item).status == settled
    finally:
        db.close()


def _claim_storm(url: str) -> None:
    from sqlalchemy import func, select

    from tunelab.db.review import claim_next, get_item, submit_answer
    from tunelab.db.tables import ReviewAssignmentRow
    from tunelab.review.schema import agree

    items, per_item = 12, 2
    db, project, users = _setup(url, items=items, reviewers=8, per_item=per_item)
    try:
        def reviewer(uid: int):
            got, statuses = [], []
            for _ in range(items + 2):  # bounded: a reviewer can be given each item once
                item = claim_next(db, project, uid)
                if item is None:
                    return got, statuses
                assert claim_next(db, project, uid) == item  # the held item comes back
                got.append(item)
                statuses.append(submit_answer(db, item, uid, {"verdict": "good",
                                                              "correction": ""}, 1, agree))
            raise AssertionError(f"reviewer {uid} was given more than {items} items")

        results = run_together(*[lambda u=u: reviewer(u) for u in users])
        per_item_reviewers: dict[int, list[int]] = defaultdict(list)
        settled = Counter()
        for uid, (got, statuses) in zip(users, results, strict=True):
            assert len(got) == len(set(got)), f"reviewer {uid} got an item twice: {got}"
            for item, status in zip(got, statuses, strict=True):
                per_item_reviewers[item].append(uid)
                settled[item] += status != "open"
        assert len(per_item_reviewers) == items
        assert all(len(r) == per_item for r in per_item_reviewers.values()), per_item_reviewers
        assert all(settled[i] == 1 for i in per_item_reviewers), settled  # settled exactly once
        assert all(get_item(db, i).status == "agreed" for i in per_item_reviewers)
        with db.session() as s:  # what the table holds, not only what the threads saw
            rows = s.execute(select(ReviewAssignmentRow.item_id, func.count(),
                                    func.count(func.distinct(ReviewAssignmentRow.user_id)))
                             .group_by(ReviewAssignmentRow.item_id)).all()
        assert sorted((n, d) for _, n, d in rows) == [(per_item, per_item)] * items
        assert max(len(got) for got, _ in results) < items  # the work was shared
    finally:
        db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'review.db'}"
    return request.getfixturevalue("fresh_postgres_url")


def test_simultaneous_answers_settle_an_item_exactly_once(db_url):
    _simultaneous_submits(db_url)


def test_concurrent_claims_never_give_an_item_twice_or_past_its_count(db_url):
    _claim_storm(db_url)


def _claim_all_at_once(url: str) -> None:
    from tunelab.db.review import claim_next

    reviewers, per_item = 9, 3
    db, project, users = _setup(url, items=reviewers // per_item, reviewers=reviewers,
                                per_item=per_item)
    try:
        got = run_together(*[lambda u=u: claim_next(db, project, u) for u in users])
        # as many slots as reviewers: each one gets an item, none hears "nothing left"
        assert None not in got, got
        assert sorted(Counter(got).values()) == [per_item] * (reviewers // per_item), got
    finally:
        db.close()


def test_reviewers_claiming_at_once_each_get_a_free_slot(db_url):
    _claim_all_at_once(db_url)
