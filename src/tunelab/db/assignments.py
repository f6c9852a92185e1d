"""Experiment assignments: which variant each unit (a user) of an experiment was given.

One row per (experiment, unit) in ``experiment_assignment``. ``assign`` is get-or-create
and atomic across processes: it reads the row, and when there is none inserts the
caller's choice with ``ON CONFLICT DO NOTHING`` and reads again, so when two servers on
one PostgreSQL (or two threads on one SQLite file) assign the same unit at once, both
return the row that won and the unit has one variant everywhere. ``reassign_unit``
replaces one unit's variant only if it still holds the one the caller saw (a variant
taken out of the experiment); ``clear`` deletes an experiment's rows, so its units are
drawn again (the "unless asked" of a weight change); ``units_per_variant`` counts.

This module knows nothing of weights, hashing or HTTP: the caller chooses the variant,
this layer keeps the first choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from tunelab.db.database import Database
from tunelab.db.tables import NAME_LENGTH, ExperimentAssignmentRow

_T = ExperimentAssignmentRow


@dataclass(frozen=True)
class Assignment:
    """The variant a unit holds, and whether this call created the row."""

    variant: str
    created: bool


def _check(experiment: str, unit: str) -> None:
    # The server refuses longer names before they get here; a clip would merge two units.
    assert 0 < len(experiment) <= NAME_LENGTH and 0 < len(unit) <= NAME_LENGTH, \
        "experiment and unit names are 1 to NAME_LENGTH characters"


def _read(session: Session, experiment: str, unit: str) -> str | None:
    return session.execute(select(_T.variant).where(_T.experiment == experiment,
                                                    _T.unit == unit)).scalar_one_or_none()


def get_assignment(db: Database, experiment: str, unit: str) -> str | None:
    """The variant ``unit`` holds in ``experiment``, or None when it has none."""
    with db.session() as s:
        return _read(s, experiment, unit)


def assign(db: Database, experiment: str, unit: str, variant: str,
           now: datetime | None = None) -> Assignment:
    """The unit's variant: the stored one, else ``variant``, stored now (first writer wins).

    Args:
        db: the open database.
        experiment: the experiment's name.
        unit: the unit (a user id), 1 to ``NAME_LENGTH`` characters.
        variant: the variant to store when the unit has none yet.
        now: the assignment time (default: now, UTC).

    Returns:
        The variant the unit holds after the call (another writer's, if it won the
        race), and whether this call stored it.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database cannot be reached or written.
    """
    _check(experiment, unit)
    with db.session() as s:
        held = _read(s, experiment, unit)
    if held is not None:  # the common case after the first request: a read, no write
        return Assignment(held, False)
    values = {"experiment": experiment, "unit": unit, "variant": variant,
              "assigned_at": now or datetime.now(timezone.utc)}
    dialect_insert = pg_insert if db.backend == "postgresql" else sqlite_insert
    stmt = dialect_insert(_T).values(**values).on_conflict_do_nothing(
        index_elements=[_T.experiment, _T.unit])
    with db.session() as s:
        # Whether ON CONFLICT skipped the row: through SQLAlchemy, psycopg reports a
        # rowcount of -1 for this statement, so PostgreSQL returns the row; SQLite's
        # rowcount is right (and RETURNING needs SQLite 3.35, newer than some distros ship)
        if db.backend == "postgresql":
            inserted = s.connection().execute(stmt.returning(_T.unit)).first() is not None
        else:
            inserted = s.connection().execute(stmt).rowcount == 1
        # Under READ COMMITTED (PostgreSQL) this read sees the winner's committed row;
        # SQLite writers are serialised, so the row is there either way.
        held = _read(s, experiment, unit)
    assert held is not None, "a row conflicts or was inserted, so it can be read"
    return Assignment(held, inserted)


def reassign_unit(db: Database, experiment: str, unit: str, old: str, new: str) -> str:
    """Move one unit from ``old`` (e.g. a variant no longer in the experiment) to ``new``.

    Only a row that still holds ``old`` moves: a concurrent writer that moved it first
    wins. A unit with no row gets ``new``.

    Returns:
        The variant the unit holds after the call.
    """
    _check(experiment, unit)
    with db.session() as s:
        s.execute(update(_T).where(_T.experiment == experiment, _T.unit == unit,
                                   _T.variant == old)
                  .values(variant=new, assigned_at=datetime.now(timezone.utc)))
    return assign(db, experiment, unit, new).variant


def assignments(db: Database, experiment: str, limit: int | None = None) -> dict[str, str]:
    """Unit -> variant for ``experiment`` (oldest assignments first; at most ``limit``)."""
    q = select(_T.unit, _T.variant).where(_T.experiment == experiment).order_by(
        _T.assigned_at, _T.unit)
    if limit is not None:
        q = q.limit(limit)
    with db.session() as s:
        return {u: v for u, v in s.execute(q)}


def units_per_variant(db: Database, experiment: str) -> dict[str, int]:
    """How many units each variant of ``experiment`` holds (variants with none are absent)."""
    q = select(_T.variant, func.count()).where(_T.experiment == experiment).group_by(_T.variant)
    with db.session() as s:
        return {v: int(n) for v, n in s.execute(q)}


def clear(db: Database, experiment: str) -> int:
    """Delete every assignment of ``experiment`` (its units are drawn again); the count deleted."""
    with db.session() as s:
        return int(s.execute(delete(_T).where(_T.experiment == experiment)).rowcount or 0)
