"""Experiment assignments in the database: the first writer wins, on SQLite and PostgreSQL,
also when several threads (each with its own engine, as two servers would be) race."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tunelab.db import open_database
from tunelab.db.assignments import (
    assign,
    assignments,
    clear,
    get_assignment,
    reassign_unit,
    units_per_variant,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'a.db'}"
    return request.getfixturevalue("fresh_postgres_url")


def test_the_first_variant_stays_and_the_rest_is_read_back(db_url):
    db = open_database(db_url)
    try:
        first = assign(db, "exp", "alice", "a")
        assert first.variant == "a" and first.created
        again = assign(db, "exp", "alice", "b")  # a later choice does not move her
        assert again.variant == "a" and not again.created
        assert assign(db, "other", "alice", "b").variant == "b"  # experiments are separate
        assign(db, "exp", "bob", "b")
        assign(db, "exp", "carol", "b")
        assert get_assignment(db, "exp", "alice") == "a" and get_assignment(db, "exp", "dan") is None
        assert assignments(db, "exp") == {"alice": "a", "bob": "b", "carol": "b"}
        assert units_per_variant(db, "exp") == {"a": 1, "b": 2}
        assert reassign_unit(db, "exp", "bob", "b", "a") == "a"
        assert reassign_unit(db, "exp", "bob", "b", "c") == "a"  # bob no longer holds b
        assert clear(db, "exp") == 3 and assignments(db, "exp") == {}
        assert assignments(db, "other") == {"alice": "b"}
        assert assign(db, "exp", "alice", "b").variant == "b"  # drawn again after the clear
    finally:
        db.close()


def test_racing_writers_on_separate_engines_all_get_the_winner(db_url):
    dbs = [open_database(db_url) for _ in range(4)]
    try:
        units = [f"user-{i}" for i in range(40)]
        start = threading.Barrier(len(dbs))

        def writer(k: int) -> dict[str, str]:
            start.wait(timeout=30)
            # each writer proposes its own variant for every unit: only one may win each
            return {u: assign(dbs[k], "race", u, f"v{k}").variant for u in units}

        with ThreadPoolExecutor(len(dbs)) as pool:
            seen = list(pool.map(writer, range(len(dbs))))
        stored = assignments(dbs[0], "race")
        assert len(stored) == len(units)
        assert all(s == stored for s in seen)  # every writer was told the stored variant
        assert sum(units_per_variant(dbs[0], "race").values()) == len(units)
    finally:
        for d in dbs:
            d.close()
