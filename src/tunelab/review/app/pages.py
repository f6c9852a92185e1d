"""The pages every user meets: sign-in, the home page, the guideline, and a reviewer's items.

A reviewer sees only items given to them and only their own answers: an item page
asked for by anyone else is 403 (admins and adjudicators read answers on their own
pages, ``tunelab.review.app.oversight``). "Next item" is a form (POST): it claims an
item, which changes state. After an answer is submitted the next item opens at once.

This module knows nothing of agreement statistics or exports.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from tunelab.db.database import Database
from tunelab.db.review import (
    Item,
    Project,
    adjudication_queue,
    claim_next,
    get_item,
    get_project,
    is_assigned,
    list_projects,
    own_answer,
    status_counts,
    submit_answer,
    waiting_for,
)
from tunelab.db.review_users import ReviewSession
from tunelab.errors import UsageError
from tunelab.review.app.auth import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Forbidden,
    NotFound,
    check_csrf,
    current_session,
    lock_state,
    new_login_token,
    plain_name,
    set_cookie,
    sign_in,
    sign_out,
)
from tunelab.review.app.render import page
from tunelab.review.schema import AnswerInvalid, agree, parse_answer, schema_from_json

router = APIRouter()
MAX_ITEM_ID = 2**31 - 1  # an item id past the column's range is no page, not a driver error
ItemId = Annotated[int, PathParam(ge=1, le=MAX_ITEM_ID)]


def _db(request: Request) -> Database:
    return request.app.state.db


async def session_of(request: Request) -> ReviewSession:
    """The request's session (raises NotSignedIn, which the app turns into a redirect)."""
    return await run_in_threadpool(current_session, request, _db(request))


async def form_of(request: Request, session: ReviewSession) -> dict[str, str]:
    """The posted form's fields, after its CSRF token is checked."""
    form = await request.form(max_files=0)  # forms here carry text only
    fields = {k: str(v) for k, v in form.items()}
    check_csrf(request, fields.pop(CSRF_FIELD, None), session.csrf_token)
    return fields


def require_role(session: ReviewSession, *roles: str) -> None:
    """Refuse a user whose role is not one of ``roles``."""
    if session.user.role not in roles:
        raise Forbidden(f"this page is for {' or '.join(roles)} users; you are signed in as "
                        f"a {session.user.role}")


def _safe_next(target: str | None) -> str:
    # only a path on this site: "//evil.example" or "https://..." would leave it
    return target if target and target.startswith("/") and not target.startswith("//") else "/"


def _login_page(next_path: str, error: str | None = None, status: int = 200) -> Response:
    token = new_login_token()
    response = page("login.html", status, user=None, login_token=token, next=next_path,
                    error=error, title="Sign in")
    set_cookie(response, LOGIN_COOKIE, token, max_age=3600)
    return response


@router.get("/login")
async def login_form(request: Request, next: str = "/") -> Response:
    return _login_page(_safe_next(next))


@router.post("/login")
async def login(request: Request) -> Response:
    form = {k: str(v) for k, v in (await request.form(max_files=0)).items()}
    next_path = _safe_next(form.get("next"))
    check_csrf(request, form.get(CSRF_FIELD), request.cookies.get(LOGIN_COOKIE) or "\0")
    settings = request.app.state.settings
    name, password = form.get("name", ""), form.get("password", "")
    failures, locked_until = await run_in_threadpool(lock_state, _db(request), settings, name)
    if locked_until is not None:
        until = locked_until.strftime("%H:%M UTC")
        return _login_page(next_path, f"Too many failed sign-ins for this name: it is locked "
                           f"until {until}. An admin can unlock it with `tunelab review user "
                           "password NAME`.", status=429)
    if failures >= settings.slow_after:
        await asyncio.sleep(settings.slow_seconds)  # no thread of the pool is held
    async with request.app.state.verify_slots:  # argon2: 64 MiB and a core per check
        result = await run_in_threadpool(sign_in, _db(request), settings, name, password)
    if result.token is None:
        return _login_page(next_path, "Wrong name or password.", status=401)
    response = RedirectResponse(next_path, status_code=303)
    set_cookie(response, SESSION_COOKIE, result.token,
               max_age=int(request.app.state.settings.session_hours * 3600))
    response.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    session = await session_of(request)
    await form_of(request, session)
    await run_in_threadpool(sign_out, request, _db(request))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


def _home_rows(db: Database, session: ReviewSession) -> list[dict]:
    rows = []
    for p in list_projects(db):
        row: dict = {"project": p, "counts": status_counts(db, p)}
        if session.user.role == "reviewer":
            row["waiting"] = waiting_for(db, p, session.user.id)
        if session.user.role == "adjudicator":
            row["to_adjudicate"] = len(adjudication_queue(db, p, session.user.id))
        rows.append(row)
    return rows


@router.get("/")
async def home(request: Request) -> Response:
    session = await session_of(request)
    rows = await run_in_threadpool(_home_rows, _db(request), session)
    return page("home.html", user=session.user, csrf=session.csrf_token, rows=rows,
                title="Review projects")


async def _project(request: Request, name: str) -> Project:
    if not plain_name(name):
        raise NotFound("there is no such review project")
    try:
        return await run_in_threadpool(get_project, _db(request), name)
    except UsageError:
        raise NotFound(f"there is no review project named {name!r}") from None


@router.get("/projects/{name}/guideline")
async def guideline(request: Request, name: str) -> Response:
    session = await session_of(request)
    project = await _project(request, name)
    return page("guideline.html", user=session.user, csrf=session.csrf_token, project=project,
                title=f"{project.name}: guideline")


@router.post("/projects/{name}/next")
async def next_item(request: Request, name: str) -> Response:
    session = await session_of(request)
    await form_of(request, session)
    require_role(session, "reviewer")
    project = await _project(request, name)
    item_id = await run_in_threadpool(claim_next, _db(request), project, session.user.id)
    if item_id is None:
        return page("message.html", user=session.user, csrf=session.csrf_token,
                    title="Queue empty", message=f"Nothing is left for you in {project.name}. "
                    "Thank you!", back="/")
    return RedirectResponse(f"/projects/{project.name}/items/{item_id}", status_code=303)


def _reviewer_item(db: Database, project: Project, item_id: int, session: ReviewSession
                   ) -> tuple[Item, dict | None]:
    item = get_item(db, item_id)
    if item is None or item.project_id != project.id or not is_assigned(db, item_id,
                                                                          session.user.id):
        raise Forbidden("this item was not given to you")
    mine = own_answer(db, item_id, session.user.id)
    return item, None if mine is None else mine.answer


GUIDELINE_FIELD = "guideline_version"


def checked_answer(project: Project, item: Item, form: dict[str, str]
                   ) -> tuple[dict | None, int, list[str]]:
    """A posted answer (or adjudication) checked: ``(answer, 200, [])``, or ``(None,
    status, problems)`` to show on the form again.

    The page carries the guideline version it showed; an answer is stored with the version
    its reviewer read, so one given while the guideline changed is sent back (409) to be
    re-read. A form without the field (a script) is taken to have read the current one.
    Missing or disallowed values are 422, each field named.
    """
    seen = form.pop(GUIDELINE_FIELD, None)
    if seen is not None and seen != str(project.guideline_version):
        return None, 409, [f"the guideline changed to version {project.guideline_version} "
                           "while this page was open: read it (beside the item), then submit "
                           "again"]
    try:
        return parse_answer(schema_from_json(project.label_schema), item.shown, form), 200, []
    except AnswerInvalid as e:
        return None, 422, e.problems


def item_context(project: Project, item: Item) -> dict:
    """What the item templates need: the fields that apply, with their options."""
    fields = [f for f in schema_from_json(project.label_schema) if f.applies(item.shown)]
    return {"project": project, "item": item, "shown": item.shown,
            "fields": [(f, f.options(item.shown)) for f in fields]}


@router.get("/projects/{name}/items/{item_id}")
async def show_item(request: Request, name: str, item_id: ItemId) -> Response:
    session = await session_of(request)
    require_role(session, "reviewer")
    project = await _project(request, name)
    item, answer = await run_in_threadpool(_reviewer_item, _db(request), project, item_id, session)
    return page("item.html", user=session.user, csrf=session.csrf_token, answer=answer,
                values={}, problems=[], title=f"{project.name}: item {item.id}",
                **item_context(project, item))


@router.post("/projects/{name}/items/{item_id}")
async def answer_item(request: Request, name: str, item_id: ItemId) -> Response:
    session = await session_of(request)
    form = await form_of(request, session)
    require_role(session, "reviewer")
    project = await _project(request, name)
    db = _db(request)
    item, _ = await run_in_threadpool(_reviewer_item, db, project, item_id, session)
    answer, status, problems = checked_answer(project, item, form)
    if answer is None:
        return page("item.html", status, user=session.user, csrf=session.csrf_token,
                    answer=None, values=form, problems=problems,
                    title=f"{project.name}: item {item.id}", **item_context(project, item))
    await run_in_threadpool(submit_answer, db, item.id, session.user.id, answer,
                            project.guideline_version, agree)
    following = await run_in_threadpool(claim_next, db, project, session.user.id)
    if following is None:
        return page("message.html", user=session.user, csrf=session.csrf_token,
                    title="Queue empty", message=f"Answer saved. Nothing is left for you in "
                    f"{project.name}. Thank you!", back="/")
    return RedirectResponse(f"/projects/{project.name}/items/{following}", status_code=303)


def when(value: datetime | None) -> str:
    """A time as the pages show it."""
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")
