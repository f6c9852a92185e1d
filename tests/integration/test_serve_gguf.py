"""`tunelab serve` on a GGUF file (llama.cpp) as a client sees it: the official `openai`
client and raw HTTP against a real process on 127.0.0.1.

One server holds the same tiny Llama twice: as its Hugging Face folder (transformers) and
as an f32 GGUF written by tunelab's exporter (llama.cpp), plus an experiment whose only
weighted variant is the GGUF. Greedy answers must be the same text from both backends
(same rendering, same stops); keys, the request log, experiments, feedback and the
context limit behave as for the transformers backend.
"""

from __future__ import annotations

import json
import time

import openai
import pytest
from serve_server import Server, http_call, start_server

from gguf_files import needs_llamacpp, write_model_gguf

needs_llamacpp()
pytestmark = pytest.mark.slow

CHATS = [[{"role": "user", "content": "Where is my parcel?"}],
         [{"role": "system", "content": "Be brief."},
          {"role": "user", "content": "My invoice was charged twice."}]]


@pytest.fixture(scope="module")
def server(tmp_path_factory, lively_model_dir):
    folder = tmp_path_factory.mktemp("serve-gguf")
    gguf = write_model_gguf(lively_model_dir, folder / "tiny.gguf")
    s = start_server(folder, [], {
        "aliases": {"tiny-hf": str(lively_model_dir), "tiny-gguf": str(gguf)},
        "max_batch_size": 4, "max_queue": 16,
        "experiments": [{"name": "exp", "variants": [
            {"name": "a", "model": "tiny-hf", "weight": 0},
            {"name": "b", "model": "tiny-gguf", "weight": 1}]}]})
    yield s
    s.stop()


def _rows(server: Server, where, timeout: float = 10.0) -> list:
    """Request-log rows passing ``where``, once one is written (the writer flushes every second)."""
    from tunelab.db import open_database, recent_requests

    with open_database(server.db_url) as db:
        deadline = time.monotonic() + timeout
        while True:
            rows = [r for r in recent_requests(db, limit=1000) if where(r)]
            if rows or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)


def test_chat_answers_as_the_transformers_backend_does(server):
    client = server.client()
    assert sorted(m.id for m in client.models.list().data) == ["exp", "tiny-gguf", "tiny-hf"]
    for chat in CHATS:
        hf = client.chat.completions.create(model="tiny-hf", messages=chat, temperature=0,
                                            max_tokens=16)
        gg = client.chat.completions.create(model="tiny-gguf", messages=chat, temperature=0,
                                            max_tokens=16)
        assert gg.model == "tiny-gguf" and gg.choices[0].message.content
        assert gg.choices[0].message.content == hf.choices[0].message.content
        assert gg.choices[0].finish_reason == hf.choices[0].finish_reason
        assert (gg.usage.prompt_tokens, gg.usage.completion_tokens) == \
            (hf.usage.prompt_tokens, hf.usage.completion_tokens)


def test_completions_and_streaming(server):
    client = server.client()
    want = client.completions.create(model="tiny-hf", prompt="The quick brown fox", max_tokens=12,
                                     temperature=0)
    got = client.completions.create(model="tiny-gguf", prompt="The quick brown fox", max_tokens=12,
                                    temperature=0)
    assert got.choices[0].text == want.choices[0].text and got.object == "text_completion"
    whole = client.chat.completions.create(model="tiny-gguf", messages=CHATS[0], temperature=0,
                                           max_tokens=16)
    stream = client.chat.completions.create(model="tiny-gguf", messages=CHATS[0], temperature=0,
                                            max_tokens=16, stream=True,
                                            stream_options={"include_usage": True})
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(pieces) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


def test_seeded_sampling_repeats(server):
    client = server.client()
    ask = dict(model="tiny-gguf", messages=CHATS[1], temperature=1.2, max_tokens=16, seed=11)
    first = client.chat.completions.create(**ask).choices[0].message.content
    assert client.chat.completions.create(**ask).choices[0].message.content == first


def test_a_bad_key_and_a_long_prompt_are_refused(server):
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="wrong").chat.completions.create(model="tiny-gguf",
                                                              messages=CHATS[0], max_tokens=4)
    status, _, body = http_call(server, "POST", "/v1/chat/completions", {
        "model": "tiny-gguf", "messages": [{"role": "user", "content": "parcel " * 400}],
        "max_tokens": 200})
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"


def test_the_request_is_logged_and_takes_feedback(server):
    r = server.client().chat.completions.create(model="tiny-gguf", messages=CHATS[0],
                                                temperature=0, max_tokens=8, user="ann")
    (row,) = _rows(server, lambda x: x.request_id == r.id)
    assert row.model == "tiny-gguf" and row.status_code == 200 and row.user == "ann"
    assert row.completion_tokens == r.usage.completion_tokens
    assert row.answer == r.choices[0].message.content
    status, _, body = http_call(server, "POST", "/v1/feedback",
                                {"response_id": r.id, "rating": "up", "user": "ann"})
    assert status == 200 and body["response_id"] == r.id


def test_an_experiment_routes_to_the_gguf(server):
    status, headers, body = http_call(server, "POST", "/v1/chat/completions", {
        "model": "exp", "messages": CHATS[0], "max_tokens": 6, "temperature": 0, "user": "bob"})
    assert status == 200, body
    assert body["model"] == "tiny-gguf" and headers["x-tunelab-variant"] == "b"
    (row,) = _rows(server, lambda x: x.request_id == body["id"])
    assert (row.experiment, row.variant, row.model) == ("exp", "b", "tiny-gguf")
    metrics = http_call(server, "GET", "/metrics")[2]
    assert 'tunelab_requests_total{endpoint="chat.completions",model="tiny-gguf",status="200"}' \
        in metrics, json.dumps(metrics[:200])
