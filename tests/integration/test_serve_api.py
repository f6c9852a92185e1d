"""`tunelab serve` as a client sees it: the official `openai` client and raw HTTP against a
real uvicorn process on 127.0.0.1, serving a tiny random Llama.

One server per concern, each started once: the main one (answers, streaming, errors,
keys, metrics, disconnects), a one-slot one with a filter and no logged text (429, the
filter, a non-streamed disconnect), and one that is sent SIGTERM (the drain).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from serve_server import KEY, Server, http_call, metric, next_event, open_stream, start_server

pytestmark = pytest.mark.slow

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Where is my parcel?"}],
        "temperature": 0, "max_tokens": 24}


def _rows(server: Server, expect: int = 1, timeout: float = 10.0, where=lambda r: True) -> list:
    """The server's request-log rows that pass ``where``, newest first, once at least
    ``expect`` of them are written (the writer flushes every second)."""
    from tunelab.db import open_database, recent_requests

    db = open_database(server.db_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            rows = [r for r in recent_requests(db, limit=1000) if where(r)]
            if len(rows) >= expect or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)
    finally:
        db.close()


def _left(r) -> bool:
    return r.status_code == 499


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    s = start_server(tmp_path_factory.mktemp("serve-main"), [],
                     {"aliases": {"tiny": str(tiny_model_dir)}, "max_batch_size": 4,
                      "max_queue": 16})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory, tiny_model_dir):
    s = start_server(tmp_path_factory.mktemp("serve-one-slot"), ["--no-log-text"],
                     {"aliases": {"tiny": str(tiny_model_dir)}, "max_batch_size": 1,
                      "max_queue": 1, "filters": {"blocklist": ["[aeiou]"]}})
    yield s
    s.stop()


# --- answers ----------------------------------------------------------------------------

def test_models_lists_the_served_names(server):
    models = server.client().models.list()
    assert [m.id for m in models.data] == ["tiny"] and models.data[0].object == "model"


def test_chat_answers_in_the_openai_shape(server):
    r = server.client().chat.completions.create(**CHAT)
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion" and r.model == "tiny"
    choice = r.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length") and choice.index == 0
    assert r.usage.completion_tokens <= 24 and r.usage.prompt_tokens > 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    again = server.client().chat.completions.create(**CHAT)
    assert again.choices[0].message.content == choice.message.content  # greedy


def test_streamed_chunks_join_to_the_non_streamed_answer(server):
    client = server.client()
    whole = client.chat.completions.create(**CHAT)
    chunks = list(client.chat.completions.create(**CHAT, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)


def test_the_stream_ends_with_done(server):
    conn, resp = open_stream(server, CHAT)
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    events = []
    while (e := next_event(resp)) is not None:
        events.append(e)
    conn.close()
    assert events[-1] == "[DONE]" and json.loads(events[0])["choices"][0]["delta"]["role"] == "assistant"


def test_completions_answer_raw_text_and_stream_the_same(server):
    client = server.client()
    kw = {"model": "tiny", "prompt": "The quick brown fox", "max_tokens": 16, "temperature": 0}
    r = client.completions.create(**kw)
    assert r.id.startswith("cmpl-") and r.object == "text_completion"
    assert r.choices[0].finish_reason in ("stop", "length")
    streamed = "".join(c.choices[0].text for c in client.completions.create(**kw, stream=True)
                       if c.choices)
    assert streamed == r.choices[0].text


def test_a_stop_sequence_cuts_the_answer(server):
    client = server.client()
    text = client.chat.completions.create(**CHAT).choices[0].message.content
    assert len(text) > 8, text
    stop = text[4:7]
    r = client.chat.completions.create(**CHAT, stop=[stop])
    assert r.choices[0].message.content == text[:text.find(stop)]
    assert r.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or ""
                       for c in client.chat.completions.create(**CHAT, stop=stop, stream=True)
                       if c.choices)
    assert streamed == r.choices[0].message.content


# --- errors -----------------------------------------------------------------------------

def _error_shape(body: dict) -> dict:
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_a_missing_or_wrong_key_is_401_on_every_route_but_the_probes(server):
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="wrong-key").chat.completions.create(**CHAT)
    for path in ("/v1/models", "/metrics", "/no/such/path"):
        for key in (None, "wrong", KEY.upper(), KEY[:-1]):
            status, headers, body = http_call(server, "GET", path, key=key)
            assert status == 401, (path, key)
            assert _error_shape(body)["code"] == "invalid_api_key"
    status, _, body = http_call(server, "GET", "/v1/models", key=None,
                                headers={"Authorization": f"Basic {KEY}"})
    assert status == 401
    for path in ("/health", "/ready"):
        assert http_call(server, "GET", path, key=None)[0] == 200
    status, _, text = http_call(server, "GET", "/metrics")
    assert status == 200 and "tunelab_requests_total" in text


def test_unknown_paths_and_methods_have_the_error_shape(server):
    status, _, body = http_call(server, "GET", "/v1/nothing")
    assert status == 404 and _error_shape(body)["type"] == "not_found_error"
    status, _, body = http_call(server, "GET", "/v1/chat/completions")
    assert status == 405 and _error_shape(body)


def test_an_unknown_model_is_404_naming_the_served_ones(server):
    with pytest.raises(openai.NotFoundError) as e:
        server.client().chat.completions.create(**{**CHAT, "model": "gpt-4"})
    err = e.value.body
    assert err["code"] == "model_not_found" and "tiny" in err["message"] and err["param"] == "model"


def test_a_bad_body_is_400_naming_the_field(server):
    status, _, body = http_call(server, "POST", "/v1/chat/completions", {"model": "tiny"})
    err = _error_shape(body)
    assert status == 400 and err["type"] == "invalid_request_error" and err["param"] == "messages"
    status, _, body = http_call(server, "POST", "/v1/chat/completions", raw=b"{not json")
    assert status == 400 and _error_shape(body)["code"] == "invalid_json"
    with pytest.raises(openai.BadRequestError) as e:
        server.client().chat.completions.create(**CHAT, n=2)
    assert e.value.body["param"] == "n"
    bad_role = {**CHAT, "messages": [{"role": "robot", "content": "x"}]}
    status, _, body = http_call(server, "POST", "/v1/chat/completions", bad_role)
    assert status == 400 and _error_shape(body)["param"] == "messages.0.role"


def test_a_long_user_an_impossible_seed_or_an_unserved_option_is_400_not_cut_500_or_ignored(server):
    from tunelab.db import NAME_LENGTH

    with pytest.raises(openai.BadRequestError) as e:
        server.client().chat.completions.create(**CHAT, user="u" * (NAME_LENGTH + 1))
    err = e.value.body
    assert err["param"] == "user" and str(NAME_LENGTH) in err["message"]
    assert err["type"] == "invalid_request_error"
    status, _, body = http_call(server, "POST", "/v1/chat/completions",
                                {**CHAT, "temperature": 1, "seed": 2**64})
    assert status == 400 and _error_shape(body)["param"] == "seed"
    with pytest.raises(openai.BadRequestError) as e:  # not answered as if never asked
        server.client().chat.completions.create(**CHAT, logprobs=True)
    assert e.value.body["param"] == "logprobs"


def _chunked(server: Server, parts: list[bytes]) -> tuple[int, dict]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("POST", "/v1/chat/completions", body=iter(parts), encode_chunked=True,
                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}",
                              "Transfer-Encoding": "chunked"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read().decode())
    finally:
        conn.close()


def test_a_body_over_the_cap_is_413_declared_or_chunked_and_a_small_chunked_one_is_answered(server):
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 1_100_000}]}  # cap: 1 MiB
    status, _, body = http_call(server, "POST", "/v1/chat/completions", big)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert "1,048,576 bytes" in body["error"]["message"]
    data = json.dumps(big).encode()
    status, body = _chunked(server, [data[i:i + 65536] for i in range(0, len(data), 65536)])
    assert status == 413 and body["error"]["code"] == "request_too_large"
    small = json.dumps(CHAT).encode()
    status, body = _chunked(server, [small[:10], small[10:]])
    assert status == 200 and body["choices"][0]["message"]["content"]


def test_context_overflow_is_400_before_the_queue_naming_the_counts(server):
    long = {**CHAT, "messages": [{"role": "user", "content": "parcel tracking " * 100}],
            "max_tokens": 400}
    with pytest.raises(openai.BadRequestError) as e:
        server.client().chat.completions.create(**long)
    err = e.value.body
    assert err["code"] == "context_length_exceeded" and "512" in err["message"]
    assert "400 in the completion" in err["message"]
    with pytest.raises(openai.BadRequestError) as e:
        server.client().chat.completions.create(**{**CHAT, "max_tokens": 5000})
    assert e.value.body["param"] == "max_tokens" and "1024" in e.value.body["message"]


# --- limits -----------------------------------------------------------------------------

def test_a_full_queue_is_429_with_retry_after(one_slot):
    body = {**CHAT, "max_tokens": 450}

    def call(_):
        return http_call(one_slot, "POST", "/v1/chat/completions", body)

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(call, range(6)))
    codes = sorted(r[0] for r in results)
    assert 200 in codes and 429 in codes, codes
    refused = next(r for r in results if r[0] == 429)
    assert int(refused[1]["retry-after"]) >= 1
    assert _error_shape(refused[2])["code"] == "queue_full"
    with pytest.raises(openai.RateLimitError):  # the client sees the same
        with ThreadPoolExecutor(3) as pool:
            for f in [pool.submit(one_slot.client().chat.completions.create, **body)
                      for _ in range(3)]:
                f.result()


def _wait_idle(server: Server, timeout: float = 5.0) -> float:
    """Seconds until the engine runs and queues nothing."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if metric(server, "tunelab_running_sequences", model="tiny") == 0 \
                and metric(server, "tunelab_queue_depth", model="tiny") == 0:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError("the engine did not become idle")


def test_a_client_that_leaves_a_stream_frees_its_slot(server):
    _wait_idle(server)
    body = {**CHAT, "max_tokens": 480}
    conn, resp = open_stream(server, body)
    for _ in range(3):
        assert next_event(resp) is not None
    assert metric(server, "tunelab_running_sequences", model="tiny") == 1
    conn.sock.close()  # the client goes away mid-answer
    conn.close()
    assert _wait_idle(server) < 1.0
    row = _rows(server, where=_left)[0]
    assert row.finish_reason == "cancelled" and 0 < row.completion_tokens < 480 and row.stream


def test_a_client_that_leaves_a_plain_request_frees_its_slot(one_slot):
    _wait_idle(one_slot)
    with pytest.raises(TimeoutError):
        http_call(one_slot, "POST", "/v1/chat/completions", {**CHAT, "max_tokens": 480},
                  timeout=0.3)
    assert _wait_idle(one_slot) < 1.0
    row = _rows(one_slot, where=_left)[0]
    assert row.finish_reason == "cancelled" and row.completion_tokens < 480


def test_the_blocklist_filters_answers_and_marks_them_and_text_stays_out_of_the_log(one_slot):
    _wait_idle(one_slot)
    r = one_slot.client().chat.completions.create(**{**CHAT, "max_tokens": 40})
    text = r.choices[0].message.content
    assert not any(v in text.replace("[blocked]", "") for v in "aeiou")
    streamed = "".join(c.choices[0].delta.content or "" for c in
                       one_slot.client().chat.completions.create(**{**CHAT, "max_tokens": 40},
                                                                 stream=True) if c.choices)
    assert streamed == text
    rows = _rows(one_slot, expect=2, where=lambda r: r.status_code == 200)
    if "[blocked]" in text:
        assert rows[0].filtered == "blocklist"
    assert all(r.prompt is None and r.answer is None for r in _rows(one_slot))


# --- the request log and metrics ----------------------------------------------------------

def test_requests_are_logged_with_counts_and_text(server):
    client = server.client()
    r = client.chat.completions.create(**CHAT, user="user-7")
    row = _rows(server, where=lambda x: x.request_id == r.id)[0]
    rows = _rows(server)
    assert row.endpoint == "chat.completions" and row.model == "tiny" and row.user == "user-7"
    assert row.status_code == 200 and row.answer == r.choices[0].message.content
    assert json.loads(row.prompt) == CHAT["messages"]
    assert row.prompt_tokens == r.usage.prompt_tokens
    assert row.completion_tokens == r.usage.completion_tokens and row.latency_ms > 0
    assert row.time_to_first_token_ms is not None and not row.stream
    assert any(x.status_code == 404 and x.model == "gpt-4" for x in rows)
    assert any(x.status_code == 400 for x in rows)
    log = server.output()
    assert "Where is my parcel" not in log and r.id in log  # ids and counts, never text


def test_metrics_count_requests_tokens_and_time_to_first_token(server):
    assert metric(server, "tunelab_requests_total", model="tiny", endpoint="chat.completions",
                  status="200") >= 1
    assert metric(server, "tunelab_generated_tokens_total", model="tiny") > 0
    assert metric(server, "tunelab_time_to_first_token_seconds_count", model="tiny") >= 1
    assert metric(server, "tunelab_batch_size_count", engine="tiny") >= 1
    assert metric(server, "tunelab_request_errors_total", model="unknown",
                  type="not_found_error") >= 1


# --- the drain --------------------------------------------------------------------------

def test_sigterm_drains_in_flight_requests_and_exits_0(tmp_path, tiny_model_dir):
    s = start_server(tmp_path / "drain", [], {"aliases": {"tiny": str(tiny_model_dir)},
                                              "max_batch_size": 1, "max_queue": 8,
                                              "drain_timeout": 60})
    try:
        body = {**CHAT, "max_tokens": 450}
        results: list = [None] * 3
        started = threading.Event()

        def stream(i: int) -> None:
            conn, resp = open_stream(s, body)
            events = []
            while (e := next_event(resp)) is not None:
                events.append(e)
                if i == 0 and len(events) == 3:
                    started.set()
            conn.close()
            results[i] = (resp.status, events)

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(3)]
        threads[0].start()
        assert started.wait(60)
        for t in threads[1:]:
            t.start()
        time.sleep(0.3)  # the other two are queued behind the first (one slot)
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        status, _, body503 = http_call(s, "POST", "/v1/chat/completions", CHAT)
        assert status == 503 and _error_shape(body503)["code"] == "server_draining"
        assert http_call(s, "GET", "/ready", key=None)[0] == 503
        for t in threads:
            t.join(120)
        assert s.proc.wait(60) == 0, s.output()
        for status, events in results:
            assert status == 200 and events[-1] == "[DONE]"
            assert json.loads(events[-2])["choices"][0]["finish_reason"] in ("stop", "length")
        assert "Traceback" not in s.output()
        rows = _rows(s, expect=4)
        assert sorted(r.status_code for r in rows) == [200, 200, 200, 503]
    finally:
        s.stop()
