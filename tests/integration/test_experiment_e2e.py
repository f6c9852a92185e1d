"""An A/B experiment end to end on a real `tunelab serve`: simulated users ask through an
experiment, rate the answers through ``POST /v1/feedback`` (variant b's answers are liked
more, by a known margin), and `tunelab experiment report` reads the same database.

The report must find the planted margin with an interval that excludes 0, see that the
split matches the configured weights, and raise the sample-ratio alarm when a 90/10 split
is checked against 50/50 weights. Users, their variants (a stable hash) and their ratings
(seeded per user and request) are fixed, so the numbers cannot flake.
"""

from __future__ import annotations

import http.client
import json
import random
from concurrent.futures import ThreadPoolExecutor

import pytest
from serve_server import KEY, start_server

from tunelab.cli import exits
from tunelab.cli.main import main

pytestmark = pytest.mark.slow

UP = {"a": 0.45, "b": 0.75}  # the chance a user likes an answer of each variant
USERS = [f"user-{i:03d}" for i in range(240)]
SKEWED = [f"skew-{i:03d}" for i in range(200)]


def _config(tiny, lively) -> dict:
    return {"aliases": {"tiny-a": str(tiny), "tiny-b": str(lively)}, "max_batch_size": 8,
            "experiments": [
                {"name": "greet", "variants": [{"name": "a", "model": "tiny-a", "weight": 1},
                                               {"name": "b", "model": "tiny-b", "weight": 1}]},
                {"name": "skew", "variants": [{"name": "a", "model": "tiny-a", "weight": 0.9},
                                              {"name": "b", "model": "tiny-b", "weight": 0.1}]}]}


def _post(conn: http.client.HTTPConnection, path: str, body: dict) -> tuple[int, dict, dict]:
    conn.request("POST", path, body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    resp = conn.getresponse()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(resp.read())


def _user_session(port: int, experiment: str, user: str, requests: int, rate: bool) -> list[str]:
    """One user's requests (and ratings); returns the variants that answered."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    seen = []
    try:
        for j in range(requests):
            status, headers, body = _post(conn, "/v1/chat/completions", {
                "model": experiment, "user": user, "max_tokens": 1, "temperature": 0,
                "messages": [{"role": "user", "content": f"question {j} from {user}"}]})
            assert status == 200, body
            variant = headers["x-tunelab-variant"]
            seen.append(variant)
            if rate:
                up = random.Random(f"{user}/{j}").random() < UP[variant]
                status, _, fb = _post(conn, "/v1/feedback", {
                    "response_id": body["id"], "user": user, "rating": "up" if up else "down"})
                assert status == 200, fb
    finally:
        conn.close()
    return seen


def _report(capsys, *argv: str) -> tuple[int, dict, str, str]:
    code = main(["experiment", "report", *argv, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out.strip().splitlines()[-1]), out, err


def test_the_report_finds_the_planted_margin_and_the_planted_imbalance(
        tmp_path, tiny_model_dir, lively_model_dir, capsys):
    server = start_server(tmp_path / "srv", [], _config(tiny_model_dir, lively_model_dir))
    try:
        with ThreadPoolExecutor(4) as pool:
            greet = list(pool.map(lambda u: _user_session(server.port, "greet", u, 2, True), USERS))
            skew = list(pool.map(lambda u: _user_session(server.port, "skew", u, 1, False), SKEWED))
    finally:
        assert server.stop() == 0, server.output()
    assert all(len(set(seen)) == 1 for seen in greet)  # one user, one variant
    assert 160 <= sum(seen == ["a"] for seen in skew) <= 195  # about 90% of 200 on a
    config = str(tmp_path / "srv" / "serve.yaml")

    code, rep, out, err = _report(capsys, "greet", "--config", config, "--db", server.db_url)
    assert code == exits.OK, out + err
    up = next(d for d in rep["differences"] if d["metric"] == "thumbs_up_rate")
    assert 0 < up["low"] < UP["b"] - UP["a"] < up["high"], up  # excludes 0, covers the truth
    assert rep["verdicts"][0]["decision"] == "better" and "b better than a" in out
    assert not rep["srm"]["alarm"], rep["srm"]
    assert sum(rep["srm"]["observed"].values()) == len(USERS)
    by_variant = {v["variant"]: v for v in rep["variants"]}
    assert sum(v["requests"] for v in by_variant.values()) == 2 * len(USERS)
    assert all(v["errors"] == 0 for v in by_variant.values())

    # the skewed experiment really split 90/10: checked against its own weights, no alarm;
    # checked against 50/50 (a planted mismatch), the alarm
    code, rep, out, err = _report(capsys, "skew", "--config", config, "--db", server.db_url)
    assert code == exits.OK and not rep["srm"]["alarm"], rep["srm"]
    code, rep, out, err = _report(capsys, "skew", "--weights", "a=0.5,b=0.5",
                                  "--db", server.db_url)
    assert code == exits.OK and rep["srm"]["alarm"] and rep["srm"]["p_value"] < 1e-6
    assert "sample ratio mismatch" in err
