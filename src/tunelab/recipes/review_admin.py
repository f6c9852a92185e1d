"""`tunelab review user ...` and `tunelab review project ...`: people and projects.

Users get argon2id password hashes (``tunelab.review.passwords``); a project gets its
kind's default label schema unless a YAML schema is given, and its guideline (Markdown)
as version 1; a new guideline file becomes the next version, and answers from then on
name it.
"""

from __future__ import annotations

from pathlib import Path

from tunelab.db.review import Project
from tunelab.db.review_users import ReviewUser
from tunelab.errors import UsageError


def _read_guideline(path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: the guideline cannot be read ({e})",
                         hint="give a Markdown file, e.g. --guideline review_guide.md") from None
    if not text.strip():
        raise UsageError(f"{path}: the guideline is empty",
                         hint="write what reviewers should judge, with examples")
    return text


def add_review_user(db_url: str | None, name: str, role: str, password: str) -> ReviewUser:
    """Create a review user with a hashed password.

    Raises:
        UsageError: a weak password, a bad name or role, or the name is taken.
    """
    from tunelab.db import open_database
    from tunelab.db.review_users import add_user, check_user_name
    from tunelab.review.passwords import check_password_strength, hash_password

    check_user_name(name)
    check_password_strength(password)
    with open_database(db_url) as db:
        return add_user(db, name, role, hash_password(password))


def set_review_password(db_url: str | None, name: str, password: str) -> None:
    """Give a user a new password; their sessions end and a sign-in lock is lifted."""
    from tunelab.db import open_database
    from tunelab.db.review_users import set_password
    from tunelab.review.passwords import check_password_strength, hash_password

    check_password_strength(password)
    with open_database(db_url) as db:
        set_password(db, name, hash_password(password))


def review_users(db_url: str | None) -> list[ReviewUser]:
    """Every review user."""
    from tunelab.db import open_database
    from tunelab.db.review_users import list_users

    with open_database(db_url) as db:
        return list_users(db)


def add_review_project(db_url: str | None, name: str, kind: str, guideline_path: str,
                       schema_path: str | None, reviews: int) -> Project:
    """Create a project from a guideline file and (optionally) a label schema file."""
    from tunelab.db import open_database
    from tunelab.db.review import create_project
    from tunelab.review.schema import default_schema, load_schema, schema_to_json

    guideline = _read_guideline(guideline_path)
    if kind not in ("output", "data", "feedback"):
        raise UsageError(f"project kind {kind!r} is not one of output, data, feedback")
    fields = load_schema(schema_path) if schema_path else default_schema(kind)
    with open_database(db_url) as db:
        return create_project(db, name, kind, schema_to_json(fields), guideline, reviews)


def update_guideline(db_url: str | None, name: str, guideline_path: str) -> int:
    """Store a new guideline version; returns its number."""
    from tunelab.db import open_database
    from tunelab.db.review import set_guideline

    text = _read_guideline(guideline_path)
    with open_database(db_url) as db:
        return set_guideline(db, name, text)


def review_projects(db_url: str | None) -> list[dict]:
    """Every project with its item counts per status."""
    from tunelab.db import open_database
    from tunelab.db.review import list_projects, status_counts

    with open_database(db_url) as db:
        return [{"name": p.name, "kind": p.kind, "reviews_per_item": p.reviews_per_item,
                 "guideline_version": p.guideline_version, **status_counts(db, p)}
                for p in list_projects(db)]


def review_agreement(db_url: str | None, name: str) -> dict:
    """A project's agreement figures and status counts (what the agreement page shows)."""
    from tunelab.db import open_database
    from tunelab.db.review import get_project, project_answers, status_counts
    from tunelab.review.agreement import project_agreement
    from tunelab.review.schema import levels, schema_from_json

    with open_database(db_url) as db:
        project = get_project(db, name)
        figures = project_agreement(levels(schema_from_json(project.label_schema)),
                                    project_answers(db, project))
        return {"project": name, "counts": status_counts(db, project), **figures}
