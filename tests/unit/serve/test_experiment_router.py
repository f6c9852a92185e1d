"""Experiments without a server: the stable hash, the split, the router's sticky
assignments over a real SQLite file, weight changes, reloads and the config checks."""

from __future__ import annotations

import asyncio
import math

import pytest
import yaml
from sqlalchemy import event

from tunelab.config.serve import ExperimentSettings, VariantSettings, serve_settings
from tunelab.db import open_database
from tunelab.db.assignments import assign, assignments, units_per_variant
from tunelab.errors import ConfigError
from tunelab.serve.app.errors import APIError
from tunelab.serve.app.experiments import ExperimentRouter, check_experiments
from tunelab.serve.experiments import choose, pick, unit_point

USERS = [f"user-{i}" for i in range(10_000)]  # a fixed set: every split below is deterministic


def _exp(weights: dict[str, float], name: str = "exp", **kw) -> ExperimentSettings:
    return ExperimentSettings(name=name, variants=[VariantSettings(name=v, model=f"m-{v}", weight=w)
                                                   for v, w in weights.items()], **kw)


@pytest.fixture
def db(tmp_path):
    d = open_database(f"sqlite:///{tmp_path / 'exp.db'}")
    yield d
    d.close()


def _router(db, *experiments: ExperimentSettings) -> ExperimentRouter:
    served = {v.model for e in experiments for v in e.variants}
    return ExperimentRouter(list(experiments), served, db)


def _route(router: ExperimentRouter, name: str, user: str | None, headers=None):
    return asyncio.run(router.route(name, user, headers or {}))


# --- the choice ----------------------------------------------------------------------------

def test_the_point_is_stable_uniform_and_differs_by_experiment():
    assert unit_point("exp", "alice") == unit_point("exp", "alice")
    assert unit_point("exp", "alice") != unit_point("other", "alice")
    assert unit_point("ab", "c") != unit_point("a", "bc")
    points = [unit_point("exp", u) for u in USERS]
    assert all(0 <= p < 1 for p in points)
    # ten equal bins hold 1,000 each within 5 standard deviations (sd ~ 30)
    bins = [0] * 10
    for p in points:
        bins[int(p * 10)] += 1
    assert all(abs(b - 1000) < 150 for b in bins), bins


def test_the_split_follows_the_weights_over_many_users():
    e = _exp({"a": 0.7, "b": 0.2, "c": 0.1})
    counts = {"a": 0, "b": 0, "c": 0}
    for u in USERS:
        counts[choose(e, u).name] += 1
    for v, w in (("a", 0.7), ("b", 0.2), ("c", 0.1)):
        sd = math.sqrt(len(USERS) * w * (1 - w))
        assert abs(counts[v] - len(USERS) * w) < 4 * sd, counts


def test_weights_are_relative_and_a_zero_weight_takes_nobody():
    variants = _exp({"a": 0, "b": 3, "c": 1}).variants
    assert pick(0.0, variants).name == "b" and pick(0.74, variants).name == "b"
    assert pick(0.76, variants).name == "c" and pick(0.999999, variants).name == "c"
    assert {choose(_exp({"a": 0, "b": 1}), u).name for u in USERS[:500]} == {"b"}
    with pytest.raises(ValueError):
        pick(0.5, _exp({"a": 1, "b": 1}).variants[:0])


# --- the config checks ---------------------------------------------------------------------

def test_a_variant_that_is_not_served_is_named_with_the_served_names():
    e = _exp({"a": 1, "b": 1})
    problems = check_experiments([e], {"m-a", "tiny"})
    assert len(problems) == 1
    p = problems[0]
    assert "experiments.0.variants.1.model" in p and "'exp'" in p and "'b'" in p
    assert "'m-b'" in p and "served: m-a, tiny" in p and "restart" in p
    with pytest.raises(ConfigError) as info:
        ExperimentRouter([e], {"m-a", "tiny"}, None)
    assert "m-b" in str(info.value)


def test_an_experiment_may_not_take_a_served_name():
    e = _exp({"a": 1, "b": 1}, name="m-a")
    assert any("experiments.0.name" in p and "served model" in p
               for p in check_experiments([e], {"m-a", "m-b"}))


def test_the_schema_refuses_repeated_names_no_weight_and_a_foreign_control():
    def problems(*experiments: dict) -> str:
        with pytest.raises(ConfigError) as info:
            serve_settings({"experiments": list(experiments)})
        return str(info.value)

    ab = [{"name": "a", "model": "m", "weight": 1}, {"name": "b", "model": "m", "weight": 1}]
    assert "repeated: a" in problems({"name": "x", "variants": [ab[0], ab[0]]})
    assert "repeated: x" in problems({"name": "x", "variants": ab}, {"name": "x", "variants": ab})
    zero = [{**v, "weight": 0} for v in ab]
    assert "weight above 0" in problems({"name": "x", "variants": zero})
    assert "not one of the variants" in problems({"name": "x", "variants": ab, "control": "z"})
    assert "experiments.0.variants.1.weight" in problems(
        {"name": "x", "variants": [ab[0], {**ab[1], "weight": -1}]})


# --- the router ----------------------------------------------------------------------------

def test_a_user_keeps_a_variant_through_weight_changes_until_reassigned(db):
    router = _router(db, _exp({"a": 0.5, "b": 0.5}))
    users = USERS[:40]
    first = {u: _route(router, "exp", u).variant for u in users}
    assert set(first.values()) == {"a", "b"}
    assert assignments(db, "exp") == first
    router.set_weights("exp", {"a": 0, "b": 1})
    assert {u: _route(router, "exp", u).variant for u in users} == first  # nobody moved
    fresh = ExperimentRouter([_exp({"a": 0, "b": 1})], {"m-a", "m-b"}, db)
    assert {u: _route(fresh, "exp", u).variant for u in users} == first  # a restart: no cache
    assert {_route(router, "exp", u).variant for u in USERS[100:200]} == {"b"}  # new users
    moved = asyncio.run(router.reassign("exp"))
    assert moved == 40 + 100
    assert {_route(router, "exp", u).variant for u in users} == {"b"}
    assert units_per_variant(db, "exp") == {"b": 40}


def test_the_unit_is_the_user_else_the_header_and_without_one_nothing_is_kept(db):
    router = _router(db, _exp({"a": 1, "b": 1}))
    r = _route(router, "exp", None, {"X-Tunelab-User": "hdr-user"})
    assert r.stored and assignments(db, "exp") == {"hdr-user": r.variant}
    assert r.model == f"m-{r.variant}" and r.headers()["X-Tunelab-Variant"] == r.variant
    seen = {_route(router, "exp", None).variant for _ in range(200)}
    assert seen == {"a", "b"}  # drawn at random, each time
    assert assignments(db, "exp") == {"hdr-user": r.variant}
    with pytest.raises(APIError) as info:
        _route(router, "exp", None, {"X-Tunelab-User": "x" * 201})
    assert info.value.status == 400 and "X-Tunelab-User" in info.value.message
    assert _route(router, "not-an-experiment", "alice") is None


def test_unit_request_draws_each_request_and_stores_nothing(db):
    router = _router(db, _exp({"a": 1, "b": 1}, unit="request"))
    seen = {_route(router, "exp", "alice").variant for _ in range(200)}
    assert seen == {"a", "b"} and assignments(db, "exp") == {}


def test_a_thousand_requests_of_one_user_read_the_database_once(db):
    router = _router(db, _exp({"a": 1, "b": 1}))
    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute",
                 lambda conn, cur, sql, *a: statements.append(sql))
    variants = {_route(router, "exp", "alice").variant for _ in range(1000)}
    assert len(variants) == 1
    touching = [s for s in statements if "experiment_assignment" in s]
    assert 1 <= len(touching) <= 3, touching  # read, insert, read back: once


def test_a_removed_variant_hands_its_units_to_a_fresh_draw_and_weight_zero_keeps_them(db):
    router = _router(db, _exp({"a": 1, "b": 1, "c": 1}))
    for u in USERS[:60]:
        _route(router, "exp", u)
    held = assignments(db, "exp")
    on_c = [u for u, v in held.items() if v == "c"]
    on_b = [u for u, v in held.items() if v == "b"]
    assert on_c and on_b
    # b stops taking units (weight 0) and c leaves the experiment
    router.replace([_exp({"a": 1, "b": 0})])
    assert all(_route(router, "exp", u).variant == "b" for u in on_b)  # kept
    assert all(_route(router, "exp", u).variant == "a" for u in on_c)  # drawn again: only a takes
    assert all(assignments(db, "exp")[u] == "a" for u in on_c)


def test_a_reload_swaps_the_experiments_or_keeps_the_old_ones(db, tmp_path):
    router = _router(db, _exp({"a": 1, "b": 1}))
    path = tmp_path / "serve.yaml"

    def write(weights: dict, model_b: str = "m-b") -> None:
        path.write_text(yaml.safe_dump({"experiments": [{"name": "exp", "variants": [
            {"name": "a", "model": "m-a", "weight": weights["a"]},
            {"name": "b", "model": model_b, "weight": weights["b"]}]}]}))

    write({"a": 0.9, "b": 0.1})
    assert router.reload(str(path))
    assert [v.weight for v in router.get("exp").variants] == [0.9, 0.1]
    write({"a": 0.2, "b": 0.8}, model_b="not-served")
    assert not router.reload(str(path))  # refused whole: the old weights stay
    assert [v.weight for v in router.get("exp").variants] == [0.9, 0.1]
    path.write_text("experiments: [")
    assert not router.reload(str(path))
    write({"a": -1, "b": 0.8})
    assert not router.reload(str(path))
    assert [v.weight for v in router.get("exp").variants] == [0.9, 0.1]


def test_admin_weights_name_known_variants_and_leave_one_above_zero(db):
    router = _router(db, _exp({"a": 1, "b": 1}))
    with pytest.raises(APIError) as info:
        router.set_weights("exp", {"z": 1})
    assert info.value.status == 400 and "'z'" not in info.value.message and "z" in info.value.message
    with pytest.raises(APIError) as info:
        router.set_weights("exp", {"a": 0, "b": 0})
    assert info.value.status == 400
    with pytest.raises(APIError) as info:
        router.set_weights("nope", {"a": 1})
    assert info.value.status == 404
    assert [v.weight for v in router.set_weights("exp", {"b": 3}).variants] == [1, 3]


def test_a_unit_assigned_elsewhere_is_read_not_redrawn(db):
    router = _router(db, _exp({"a": 1, "b": 1}))
    want = choose(router.get("exp"), "zed").name
    other = "a" if want == "b" else "b"
    assign(db, "exp", "zed", other)  # another server stored it first
    assert _route(router, "exp", "zed").variant == other


def test_weights_must_be_finite_in_the_config_and_the_admin_route():
    import math

    from pydantic import ValidationError

    from tunelab.serve.app.experiments import WeightsUpdate

    inf = [{"name": "a", "model": "m", "weight": math.inf}, {"name": "b", "model": "m", "weight": 1}]
    with pytest.raises(ConfigError) as info:
        serve_settings({"experiments": [{"name": "x", "variants": inf}]})
    assert "experiments.0.variants.0.weight" in str(info.value)
    with pytest.raises(ValidationError):
        WeightsUpdate.model_validate_json('{"weights": {"a": Infinity, "b": 1}}')
    with pytest.raises(ValidationError):
        WeightsUpdate.model_validate({"weights": {"a": 1e9}})


def test_a_user_holding_a_nul_is_refused_before_it_becomes_a_stored_unit():
    from pydantic import ValidationError

    from tunelab.serve.app.schemas import ChatRequest

    ok = {"model": "exp", "messages": [{"role": "user", "content": "hi"}]}
    assert ChatRequest.model_validate({**ok, "user": "ann"}).user == "ann"
    with pytest.raises(ValidationError, match="NUL"):
        ChatRequest.model_validate({**ok, "user": "a\x00b"})
