"""A/B experiments on a real `tunelab serve` (uvicorn on 127.0.0.1, two tiny served models):
sticky assignment over 1,000 requests and a restart, weight changes by SIGHUP and by the
admin route that move nobody unless asked, the variant headers on every response, the
request log, the metrics, and the admin key.

The variants are chosen by a stable hash, so which user lands where is fixed by the
user names: every expectation below is computed, not sampled, and cannot flake.
"""

from __future__ import annotations

import http.client
import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from serve_server import KEY, Server, http_call, metric, open_stream, start_server

from tunelab.cli import exits
from tunelab.cli.main import main
from tunelab.config.serve import ExperimentSettings
from tunelab.serve.experiments import choose

pytestmark = pytest.mark.slow

ADMIN = "admin-key-456"
MODEL = {"a": "tiny-a", "b": "tiny-b"}
ASK = {"messages": [{"role": "user", "content": "Where is my parcel?"}], "max_tokens": 1,
       "temperature": 0}


def _config(tiny, lively, weights: dict[str, float], model_b: str = "tiny-b") -> dict:
    return {"aliases": {"tiny-a": str(tiny), "tiny-b": str(lively)}, "max_batch_size": 8,
            "experiments": [{"name": "exp", "variants": [
                {"name": "a", "model": "tiny-a", "weight": weights["a"]},
                {"name": "b", "model": model_b, "weight": weights["b"]}]}]}


def _expected(weights: dict[str, float], users: list[str]) -> dict[str, str]:
    """The variant each new user gets under ``weights`` (the server's own hash)."""
    e = ExperimentSettings.model_validate(_config("x", "y", weights)["experiments"][0])
    return {u: choose(e, u).name for u in users}


@dataclass
class _Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: Any


class _Client:
    """One kept-alive connection (1,000 requests need not open 1,000 sockets)."""

    def __init__(self, server: Server) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)

    def post(self, path: str, body: dict, headers: dict[str, str] | None = None) -> _Reply:
        self.conn.request("POST", path, body=json.dumps(body).encode(),
                          headers={"Content-Type": "application/json",
                                   "Authorization": f"Bearer {KEY}", **(headers or {})})
        resp = self.conn.getresponse()
        data = json.loads(resp.read().decode())
        return _Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def _ask(client: _Client, user: str | None) -> _Reply:
    body = {"model": "exp", **ASK}
    if user is not None:
        body["user"] = user
    return client.post("/v1/chat/completions", body)


def _variant(client: _Client, user: str) -> str:
    r = _ask(client, user)
    assert r.status == 200, r.body
    v = r.headers["x-tunelab-variant"]
    assert r.headers["x-tunelab-experiment"] == "exp" and r.body["model"] == MODEL[v]
    return v


def _variants(server: Server, users: list[str]) -> dict[str, str]:
    with _Client(server) as c:
        return {u: _variant(c, u) for u in users}


def _weights(server: Server) -> dict[str, float]:
    status, _, body = http_call(server, "GET", "/admin/experiments", key=ADMIN)
    assert status == 200, body
    return {v["name"]: v["weight"] for v in body["data"][0]["variants"]}


def _wait_for(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not {what} within {timeout} s"
        time.sleep(0.2)


def _hup(server: Server, config: dict) -> None:
    (server.log.parent / "serve.yaml").write_text(yaml.safe_dump(config))
    server.proc.send_signal(signal.SIGHUP)


def test_sticky_over_1000_requests_a_restart_and_weight_changes(tmp_path, tiny_model_dir,
                                                               lively_model_dir):
    folder = tmp_path / "srv"
    half = {"a": 0.5, "b": 0.5}
    users = [f"user-{i}" for i in range(10)]
    first = _expected(half, users)
    assert set(first.values()) == {"a", "b"}  # these names split both ways under the hash
    server = start_server(folder, [], _config(tiny_model_dir, lively_model_dir, half),
                          env={"TUNELAB_ADMIN_KEY": ADMIN})
    try:
        # 1,000 requests, four clients at once, each cycling through every user: a user's
        # first requests race one another for the assignment
        def client_run(k: int) -> list[tuple[str, str]]:
            seen = []
            deadline = time.monotonic() + 300
            with _Client(server) as c:
                for i in range(250):
                    assert time.monotonic() < deadline, "1,000 requests took over 300 s"
                    u = users[(i + k) % len(users)]
                    seen.append((u, _variant(c, u)))
            return seen

        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            seen = [pair for part in pool.map(client_run, range(4)) for pair in part]
        elapsed = time.monotonic() - started
        assert len(seen) == 1000
        assert {u: {v for uu, v in seen if uu == u} for u in users} == \
            {u: {first[u]} for u in users}, "a user saw more than one variant"
        print(f"1,000 experiment requests in {elapsed:.1f} s")
        assert server.stop() == 0

        # a restart on the same database: nobody moves, also with the weights changed
        server = start_server(folder, [], _config(tiny_model_dir, lively_model_dir,
                                                  {"a": 1, "b": 0}),
                              env={"TUNELAB_ADMIN_KEY": ADMIN})
        assert _variants(server, users) == first

        # SIGHUP: the file's new weights take new users only
        _hup(server, _config(tiny_model_dir, lively_model_dir, {"a": 0.0, "b": 1.0}))
        _wait_for(lambda: _weights(server) == {"a": 0.0, "b": 1.0}, "reloaded")
        newcomers = [f"late-{i}" for i in range(30)]
        assert _variants(server, users + newcomers) == {**first, **{u: "b" for u in newcomers}}

        # a bad file is refused whole, with the reason in the log; the weights stay
        _hup(server, _config(tiny_model_dir, lively_model_dir, {"a": 1.0, "b": 0.0},
                             model_b="not-served"))
        _wait_for(lambda: "not-served" in server.output(), "logged")
        assert "refused" in server.output() and _weights(server) == {"a": 0.0, "b": 1.0}

        # the admin route: new weights, nobody moves; new users follow the new weights
        status, _, body = http_call(server, "PUT", "/admin/experiments/exp",
                                    {"weights": {"a": 1, "b": 0}}, key=ADMIN)
        assert status == 200 and body["weights_from"] == "admin" and body["reassigned"] == 0
        more = [f"later-{i}" for i in range(30)]
        assert _variants(server, users + newcomers + more) == \
            {**first, **{u: "b" for u in newcomers}, **{u: "a" for u in more}}
        units = {v["name"]: v["units"] for v in body["variants"]}
        assert units == {"a": list(first.values()).count("a"),
                         "b": list(first.values()).count("b") + len(newcomers)}

        # reassign: everyone is drawn again under the weights now in force
        status, _, body = http_call(server, "PUT", "/admin/experiments/exp",
                                    {"weights": {"a": 1, "b": 0}, "reassign": True}, key=ADMIN)
        assert status == 200 and body["reassigned"] == len(users + newcomers + more)
        assert set(_variants(server, users + newcomers).values()) == {"a"}

        # the request log keeps the experiment, the variant and the served model
        rows = _log_rows(server, 1000 + 2 * len(users) + 2 * len(newcomers) + len(more))
        assert {(r.experiment, r.variant, r.model) for r in rows} == \
            {("exp", "a", "tiny-a"), ("exp", "b", "tiny-b")}
        assert all(r.user is not None and r.status_code == 200 for r in rows)
    finally:
        server.stop()


def _log_rows(server: Server, expect: int, timeout: float = 20.0) -> list:
    from tunelab.db import open_database, recent_requests

    db = open_database(server.db_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            rows = [r for r in recent_requests(db, limit=5000) if r.experiment is not None]
            if len(rows) >= expect or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)
    finally:
        db.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir, lively_model_dir):
    s = start_server(tmp_path_factory.mktemp("serve-exp"), [],
                     _config(tiny_model_dir, lively_model_dir, {"a": 0.5, "b": 0.5}),
                     env={"TUNELAB_ADMIN_KEY": ADMIN})
    yield s
    s.stop()


def test_the_experiment_is_listed_and_answers_through_the_openai_client(server):
    client = server.client()
    assert {m.id for m in client.models.list().data} == {"tiny-a", "tiny-b", "exp"}
    assert client.models.retrieve("exp").id == "exp"
    raw = client.chat.completions.with_raw_response.create(model="exp", user="alice", **ASK)
    v = raw.headers["x-tunelab-variant"]
    assert raw.parse().model == MODEL[v] and v == _expected({"a": 1, "b": 1}, ["alice"])["alice"]
    # the unit header stands in for `user`: same name, same variant
    with _Client(server) as c:
        r = c.post("/v1/completions", {"model": "exp", "prompt": "Hello", "max_tokens": 1},
                   {"X-Tunelab-User": "alice"})
    assert r.status == 200 and r.headers["x-tunelab-variant"] == v
    assert r.body["model"] == MODEL[v]


def test_streams_and_errors_after_routing_carry_the_variant(server):
    conn, resp = open_stream(server, {"model": "exp", **ASK, "user": "bob"})
    try:
        assert resp.status == 200 and resp.getheader("X-Tunelab-Experiment") == "exp"
        v = resp.getheader("X-Tunelab-Variant")
        assert f'"model":"{MODEL[v]}"' in resp.read().decode()
    finally:
        conn.close()
    status, headers, body = http_call(server, "POST", "/v1/chat/completions",
                                      {"model": "exp", **ASK, "user": "bob", "max_tokens": 10**6})
    assert status == 400 and body["error"]["code"] == "max_tokens_too_large"
    assert headers["x-tunelab-variant"] == v and headers["x-tunelab-experiment"] == "exp"
    status, headers, _ = http_call(server, "POST", "/v1/chat/completions",
                                   {"model": "exp", **ASK},
                                   headers={"X-Tunelab-User": "u" * 201})
    assert status == 400 and "x-tunelab-variant" not in headers  # refused before routing
    assert metric(server, "tunelab_experiment_requests_total", experiment="exp", variant=v,
                  status="400") >= 1


def test_without_a_unit_each_request_is_drawn_and_nothing_is_kept(server):
    with _Client(server) as c:
        seen = {_ask(c, None).headers["x-tunelab-variant"] for _ in range(40)}
    assert seen == {"a", "b"}  # 2**-39 that 40 fair draws all agree
    _, _, body = http_call(server, "GET", "/admin/experiments", key=ADMIN)
    before = sum(v["units"] for v in body["data"][0]["variants"])
    with _Client(server) as c:
        _ask(c, None)
    _, _, body = http_call(server, "GET", "/admin/experiments", key=ADMIN)
    assert sum(v["units"] for v in body["data"][0]["variants"]) == before


def test_the_admin_routes_take_the_admin_key_only(server):
    for key, status in ((None, 401), ("wrong", 401), (KEY, 403), (ADMIN, 200)):
        got, headers, body = http_call(server, "GET", "/admin/experiments", key=key)
        assert got == status, (key, body)
    got, _, body = http_call(server, "PUT", "/admin/experiments/exp", {"weights": {"a": 1}},
                             key=KEY)
    assert got == 403 and "admin key" in body["error"]["message"]
    got, _, body = http_call(server, "PUT", "/admin/experiments/nope", {"weights": {"a": 1}},
                             key=ADMIN)
    assert got == 404 and "exp" in body["error"]["message"]
    got, _, body = http_call(server, "PUT", "/admin/experiments/exp", {"weights": {"a": -1}},
                             key=ADMIN)
    assert got == 400
    # the admin key is not an API key either
    got, _, _ = http_call(server, "POST", "/v1/chat/completions", {"model": "exp", **ASK},
                          key=ADMIN)
    assert got == 401


def test_without_an_admin_key_the_admin_routes_say_how_to_turn_them_on(tmp_path, tiny_model_dir):
    s = start_server(tmp_path / "plain", [str(tiny_model_dir)])  # no --config
    try:
        status, _, body = http_call(s, "GET", "/admin/experiments")
        assert status == 404 and "--admin-key" in body["error"]["message"]
        assert http_call(s, "GET", "/admin/experiments", key=None)[0] == 401
        s.proc.send_signal(signal.SIGHUP)  # started without --config: logged, not fatal
        _wait_for(lambda: "nothing to reload" in s.output(), "logged")
        assert http_call(s, "GET", "/health", key=None)[0] == 200
    finally:
        s.stop()


def test_a_variant_that_is_not_served_stops_the_start_with_the_names(capsys, tmp_path,
                                                                     tiny_model_dir):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(yaml.safe_dump(_config(tiny_model_dir, tiny_model_dir, {"a": 1, "b": 1},
                                          model_b="tiny-c")))
    assert main(["serve", "--config", str(cfg), "--port", "0",
                 "--db", f"sqlite:///{tmp_path / 'r.db'}"]) == exits.USAGE
    err = capsys.readouterr().err
    assert "'exp'" in err and "'b'" in err and "'tiny-c'" in err and "tiny-a, tiny-b" in err
    assert "Traceback" not in err


def test_an_admin_key_equal_to_an_api_key_is_refused(capsys, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("TUNELAB_API_KEYS", "same-key")
    assert main(["serve", str(tiny_model_dir), "--admin-key", "same-key"]) == exits.USAGE
    assert "admin key is also an API key" in capsys.readouterr().err


def test_two_servers_on_one_postgresql_give_a_user_one_variant(tmp_path, tiny_model_dir,
                                                               lively_model_dir,
                                                               fresh_postgres_url):
    # Opposite weights: whichever server sees a user first decides, the other reads it.
    one = start_server(tmp_path / "one", [], _config(tiny_model_dir, lively_model_dir,
                                                     {"a": 1, "b": 0}), db_url=fresh_postgres_url)
    try:
        two = start_server(tmp_path / "two", [], _config(tiny_model_dir, lively_model_dir,
                                                         {"a": 0, "b": 1}),
                           db_url=fresh_postgres_url)
        try:
            first_on_one = [f"pg-one-{i}" for i in range(10)]
            first_on_two = [f"pg-two-{i}" for i in range(10)]
            assert set(_variants(one, first_on_one).values()) == {"a"}
            assert set(_variants(two, first_on_two).values()) == {"b"}
            assert set(_variants(two, first_on_one).values()) == {"a"}  # read, not drawn
            assert set(_variants(one, first_on_two).values()) == {"b"}
        finally:
            two.stop()
    finally:
        one.stop()
