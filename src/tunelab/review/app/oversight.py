"""The pages above the reviewers: adjudication, agreement, progress, answers, users.

Adjudicators decide disagreed items they did not review; the decision is final and is
stored with the answers it settles. Agreement and progress are for admins and
adjudicators; the answers of an item likewise (a reviewer reads only their own, on the
item page). Users are listed and added by admins (or with `tunelab review user add`).

This module knows nothing of sign-in mechanics or the statistics' formulas.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, RedirectResponse, Response

from tunelab.db.database import Database
from tunelab.db.review import (
    DISAGREED,
    Project,
    adjudicate,
    adjudication_queue,
    get_adjudication,
    get_item,
    item_answers,
    list_exports,
    project_answers,
    reviewer_counts,
    status_counts,
)
from tunelab.db.review_users import ROLES, add_user, list_users
from tunelab.errors import UsageError
from tunelab.review.agreement import project_agreement
from tunelab.review.app.auth import Forbidden
from tunelab.review.app.pages import (
    ItemId,
    _db,
    _project,
    checked_answer,
    form_of,
    item_context,
    require_role,
    session_of,
)
from tunelab.review.app.render import page
from tunelab.review.passwords import check_password_strength, hash_password
from tunelab.review.schema import levels, schema_from_json

router = APIRouter()


def agreement_of(db: Database, project: Project) -> dict:
    """The project's agreement figures (``tunelab.review.agreement.project_agreement``)."""
    fields = schema_from_json(project.label_schema)
    return project_agreement(levels(fields), project_answers(db, project))


@router.get("/projects/{name}/adjudicate")
async def queue(request: Request, name: str) -> Response:
    session = await session_of(request)
    require_role(session, "adjudicator")
    project = await _project(request, name)
    ids = await run_in_threadpool(adjudication_queue, _db(request), project, session.user.id)
    return page("adjudicate_queue.html", user=session.user, csrf=session.csrf_token,
                project=project, items=ids, title=f"{project.name}: adjudication")


def _item_with_answers(db: Database, project: Project, item_id: int):
    item = get_item(db, item_id)
    if item is None or item.project_id != project.id:
        raise Forbidden("no such item in this project")
    return item, item_answers(db, item_id), get_adjudication(db, item_id)


@router.get("/projects/{name}/adjudicate/{item_id}")
async def adjudicate_form(request: Request, name: str, item_id: ItemId) -> Response:
    session = await session_of(request)
    require_role(session, "adjudicator")
    project = await _project(request, name)
    item, answers, decided = await run_in_threadpool(_item_with_answers, _db(request), project, item_id)
    return page("adjudicate.html", user=session.user, csrf=session.csrf_token, answers=answers,
                decided=decided, values={}, problems=[], title=f"{project.name}: adjudicate "
                f"item {item.id}", **item_context(project, item))


@router.post("/projects/{name}/adjudicate/{item_id}")
async def adjudicate_item(request: Request, name: str, item_id: ItemId) -> Response:
    session = await session_of(request)
    form = await form_of(request, session)
    require_role(session, "adjudicator")
    project = await _project(request, name)
    db = _db(request)
    item, answers, decided = await run_in_threadpool(_item_with_answers, db, project, item_id)
    decision, status, problems = checked_answer(project, item, form)
    if decision is None:
        return page("adjudicate.html", status, user=session.user, csrf=session.csrf_token,
                    answers=answers, decided=decided, values=form, problems=problems,
                    title=f"{project.name}: adjudicate item {item.id}",
                    **item_context(project, item))
    await run_in_threadpool(adjudicate, db, item.id, session.user.id, decision,
                            project.guideline_version)
    left = await run_in_threadpool(adjudication_queue, db, project, session.user.id)
    target = f"/projects/{project.name}/adjudicate" + (f"/{left[0]}" if left else "")
    return RedirectResponse(target, status_code=303)


@router.get("/projects/{name}/items/{item_id}/answers")
async def answers_page(request: Request, name: str, item_id: ItemId) -> Response:
    session = await session_of(request)
    require_role(session, "admin", "adjudicator")
    project = await _project(request, name)
    item, answers, decided = await run_in_threadpool(_item_with_answers, _db(request), project, item_id)
    return page("answers.html", user=session.user, csrf=session.csrf_token, answers=answers,
                decided=decided, title=f"{project.name}: answers to item {item.id}",
                can_adjudicate=item.status == DISAGREED and session.user.role == "adjudicator",
                **item_context(project, item))


@router.get("/projects/{name}/agreement")
async def agreement_page(request: Request, name: str) -> Response:
    session = await session_of(request)
    require_role(session, "admin", "adjudicator")
    project = await _project(request, name)
    figures = await run_in_threadpool(agreement_of, _db(request), project)
    return page("agreement.html", user=session.user, csrf=session.csrf_token, project=project,
                figures=figures, title=f"{project.name}: agreement")


@router.get("/projects/{name}/agreement.json")
async def agreement_json(request: Request, name: str) -> Response:
    session = await session_of(request)
    require_role(session, "admin", "adjudicator")
    project = await _project(request, name)
    figures = await run_in_threadpool(agreement_of, _db(request), project)
    return JSONResponse(figures, headers={"Cache-Control": "no-store"})


def _progress(db: Database, project: Project) -> dict:
    return {"counts": status_counts(db, project), "reviewers": reviewer_counts(db, project),
            "over_time": agreement_of(db, project)["over_time"],
            "exports": list_exports(db, project)}


@router.get("/projects/{name}/progress")
async def progress_page(request: Request, name: str) -> Response:
    session = await session_of(request)
    require_role(session, "admin", "adjudicator")
    project = await _project(request, name)
    progress = await run_in_threadpool(_progress, _db(request), project)
    return page("progress.html", user=session.user, csrf=session.csrf_token, project=project,
                progress=progress, title=f"{project.name}: progress")


@router.get("/admin/users")
async def users_page(request: Request) -> Response:
    session = await session_of(request)
    require_role(session, "admin")
    users = await run_in_threadpool(list_users, _db(request))
    return page("users.html", user=session.user, csrf=session.csrf_token, users=users,
                roles=ROLES, problems=[], title="Users")


@router.post("/admin/users")
async def add_user_form(request: Request) -> Response:
    session = await session_of(request)
    form = await form_of(request, session)
    require_role(session, "admin")
    db = _db(request)
    try:
        check_password_strength(form.get("password", ""))
        hashed = await run_in_threadpool(hash_password, form.get("password", ""))
        await run_in_threadpool(add_user, db, form.get("name", "").strip(),
                                form.get("role", ""), hashed)
    except UsageError as e:
        users = await run_in_threadpool(list_users, db)
        return page("users.html", 422, user=session.user, csrf=session.csrf_token, users=users,
                    roles=ROLES, problems=[str(e)], title="Users")
    return RedirectResponse("/admin/users", status_code=303)
