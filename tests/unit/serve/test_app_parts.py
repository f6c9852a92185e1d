"""The server app's pure parts: stop sequences and streamed text, filters, keys, error
shapes and the serve settings. No engine, no model, no socket."""

from __future__ import annotations

import pytest

from tunelab.config.serve import FilterSettings, ServeSettings, load_serve_settings
from tunelab.errors import ConfigError, UsageError
from tunelab.serve.app.auth import (
    KEYS_ENV,
    bearer_token,
    configured_keys,
    generate_key,
    key_matches,
)
from tunelab.serve.app.filters import BLOCKED, REDACTED, OutputFilter, redact
from tunelab.serve.app.text import AnswerText, first_stop


def _decoder(pieces: dict[int, str]):
    return lambda ids: "".join(pieces[i] for i in ids)


def _stream(text: AnswerText, ids: list[int]) -> list[str]:
    out = [text.add([i]) for i in ids]
    out.append(text.finish())
    return out


def test_streamed_pieces_join_to_the_whole_answer_and_hold_back_a_stop_prefix():
    pieces = {1: "Hello", 2: " wor", 3: "ld", 4: " EN", 5: "D here"}
    t = AnswerText(_decoder(pieces), stops=["END"])
    out = _stream(t, [1, 2, 3, 4, 5])
    assert out[3] == " "  # "EN" could be the start of END: held back
    assert "".join(out) == t.text == "Hello world "
    assert t.stopped and t.ids == [1, 2, 3, 4, 5]


def test_a_held_back_prefix_that_is_not_a_stop_is_sent_later():
    t = AnswerText(_decoder({1: "a E", 2: "N", 3: "x"}), stops=["END"])
    assert _stream(t, [1, 2, 3]) == ["a ", "", "ENx", ""]
    assert not t.stopped


def test_an_incomplete_utf8_character_is_held_back():
    t = AnswerText(_decoder({1: "caf", 2: "\ufffd", 3: ""}))
    t.decode = lambda ids: {1: "caf", 2: "caf\ufffd", 3: "café"}[len(ids)]
    assert _stream(t, [1, 2, 3]) == ["caf", "", "é", ""]


def test_without_stops_everything_is_sent_at_once_and_the_end_flushes():
    t = AnswerText(_decoder({1: "x", 2: "y"}))
    assert _stream(t, [1, 2]) == ["x", "y", ""]
    assert first_stop("abcabc", ["c", "b"]) == 1 and first_stop("abc", ["z"]) is None


def test_filters_redact_personal_data_and_block_patterns():
    f = OutputFilter.from_settings(FilterSettings(redact_pii=True, blocklist=[r"(?i)secret\w*"]))
    text, changed = f.apply("Mail jane.doe@corp.io or call +44 20 7946 0958. Secrets: none")
    assert "jane.doe" not in text and "7946" not in text and REDACTED in text
    assert BLOCKED in text and "Secrets" not in text
    assert changed == ["pii", "blocklist"]
    assert f.apply("nothing to see") == ("nothing to see", [])
    assert not OutputFilter().active and redact("no pii") == "no pii"


def test_a_blocklist_pattern_must_compile_and_not_match_nothing():
    with pytest.raises(ValueError, match="not a regular expression"):
        FilterSettings(blocklist=["(unclosed"])
    with pytest.raises(ValueError, match="empty text"):
        FilterSettings(blocklist=["x*"])


def test_keys_from_the_environment_and_a_file(tmp_path, monkeypatch):
    f = tmp_path / "keys"
    f.write_text("# team keys\n\nk-file-1\n  k-file-2  \n")
    monkeypatch.setenv(KEYS_ENV, "k-env-1, k-env-2,,")
    assert configured_keys(None, f) == ["k-env-1", "k-env-2", "k-file-1", "k-file-2"]
    assert configured_keys("", None) == []
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(UsageError, match="holds no key"):
        configured_keys("", tmp_path / "empty")
    with pytest.raises(UsageError, match="cannot read"):
        configured_keys("", tmp_path / "missing")
    assert len(generate_key()) >= 40 and generate_key() != generate_key()


def test_the_key_check_is_exact_and_reads_only_a_bearer_header():
    keys = ["alpha-key", "beta-key"]
    assert key_matches("beta-key", keys) and not key_matches("Beta-key", keys)
    assert not key_matches("beta-ke", keys) and not key_matches("", keys)
    assert bearer_token({"headers": [(b"authorization", b"Bearer abc")]}) == "abc"
    assert bearer_token({"headers": [(b"authorization", b"Basic abc")]}) is None
    assert bearer_token({"headers": []}) is None


def test_the_key_check_also_closes_a_websocket_without_a_key():
    import asyncio

    from tunelab.serve.app.auth import POLICY_VIOLATION, KeyCheck

    reached, sent = [], []

    async def app(scope, receive, send):
        reached.append(scope["path"])

    async def receive():
        return {"type": "websocket.connect"}

    async def send(message):
        sent.append(message)

    check = KeyCheck(app, ["k1"], frozenset({"/health"}))
    for headers in ([], [(b"authorization", b"Bearer wrong")]):
        asyncio.run(check({"type": "websocket", "path": "/ws", "headers": headers},
                          receive, send))
    assert reached == [] and [m["code"] for m in sent] == [POLICY_VIOLATION] * 2
    asyncio.run(check({"type": "websocket", "path": "/ws",
                       "headers": [(b"authorization", b"Bearer k1")]}, receive, send))
    assert reached == ["/ws"]


def test_validation_errors_become_openai_400s_naming_the_field():
    from fastapi.exceptions import RequestValidationError

    from tunelab.serve.app.errors import validation_error

    err = validation_error(RequestValidationError([
        {"loc": ("body", "messages", 0, "role"), "msg": "Input should be 'user'", "type": "literal_error"}]))
    assert err.status == 400 and err.param == "messages.0.role"
    assert err.body()["error"]["type"] == "invalid_request_error"
    assert set(err.body()["error"]) == {"message", "type", "param", "code"}
    missing = validation_error(RequestValidationError([{"loc": ("body", "model"), "msg": "x",
                                                        "type": "missing"}]))
    assert missing.message == "model: required but missing"


def test_only_n_1_is_served():
    from pydantic import ValidationError

    from tunelab.serve.app.schemas import ChatRequest

    body = ChatRequest.model_validate({"model": "m", "messages": [
        {"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        "frequency_penalty": 0, "max_completion_tokens": 5, "max_tokens": 9})
    # parts joined with a newline, as training joins them (tunelab.data.tools.join_parts)
    msgs = body.conversation().messages
    assert [(m.role, m.content) for m in msgs] == [("system", "a\nb")]
    assert body.requested_tokens() == 5
    with pytest.raises(ValidationError, match="n=1"):
        ChatRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                    "n": 2})


@pytest.mark.parametrize("field", ["user", "model"])
def test_user_and_model_longer_than_the_log_column_are_refused_naming_the_limit(field):
    from fastapi.exceptions import RequestValidationError
    from pydantic import ValidationError

    from tunelab.db import NAME_LENGTH
    from tunelab.serve.app.errors import validation_error
    from tunelab.serve.app.schemas import ChatRequest

    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    assert getattr(ChatRequest.model_validate({**body, field: "u" * NAME_LENGTH}), field)
    with pytest.raises(ValidationError) as e:
        ChatRequest.model_validate({**body, field: "u" * (NAME_LENGTH + 1)})
    err = validation_error(RequestValidationError(
        [{**x, "loc": ("body", *x["loc"])} for x in e.value.errors()]))
    assert err.status == 400 and err.param == field
    assert err.message.startswith(f"{field}: ") and str(NAME_LENGTH) in err.message


def test_a_seed_a_generator_cannot_take_is_refused():
    from pydantic import ValidationError

    from tunelab.serve.app.schemas import SEED_MAX, SEED_MIN, CompletionRequest

    for seed in (SEED_MIN, -1, 0, SEED_MAX):
        assert CompletionRequest.model_validate({"model": "m", "prompt": "x", "seed": seed}).seed == seed
    for seed in (SEED_MIN - 1, SEED_MAX + 1, 10**30):
        with pytest.raises(ValidationError, match="seed"):
            CompletionRequest.model_validate({"model": "m", "prompt": "x", "seed": seed})


def test_fields_the_server_cannot_honour_are_refused_unless_neutral():
    from pydantic import ValidationError

    from tunelab.serve.app.schemas import ChatRequest, CompletionRequest

    chat = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    neutral = {"logprobs": False, "top_logprobs": 0, "frequency_penalty": 0,
               "presence_penalty": 0.0, "logit_bias": {}, "tools": [], "functions": None,
               "response_format": {"type": "text"}}
    ChatRequest.model_validate({**chat, **neutral})
    for field, value in [("logprobs", True), ("top_logprobs", 3), ("frequency_penalty", 0.5),
                         ("presence_penalty", -1), ("logit_bias", {"50256": -100}),
                         ("functions", [{"name": "f"}]),  # tools are served (test_serve_tools)
                         ("response_format", {"type": "json_object"})]:
        with pytest.raises(ValidationError) as e:
            ChatRequest.model_validate({**chat, field: value})
        assert e.value.errors()[0]["loc"] == (field,) and "not supported" in str(e.value)
    completion = {"model": "m", "prompt": "x"}
    CompletionRequest.model_validate({**completion, "best_of": 1, "suffix": "", "logprobs": 0,
                                      "tools": []})
    for field, value in [("best_of", 2), ("suffix", "end"), ("logprobs", 5),
                         ("tools", [{"type": "function", "function": {"name": "f"}}])]:
        with pytest.raises(ValidationError, match=field):
            CompletionRequest.model_validate({**completion, field: value})


def test_serve_settings_from_a_file_and_flags(tmp_path):
    (tmp_path / "model-a").mkdir()
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("models: [model-a, smollm2-store-name]\nport: 9000\nmax_queue: 3\n"
                   "filters: {redact_pii: true}\n")
    s = load_serve_settings(cfg, {"port": 9100, "host": None})
    assert s.models == [str(tmp_path / "model-a"), "smollm2-store-name"]
    assert s.port == 9100 and s.host == "127.0.0.1" and s.max_queue == 3
    assert s.filters.redact_pii and ServeSettings().public_metrics is False
    cfg.write_text("prot: 9000\nmax_tokens: 10\ndefault_max_tokens: 20\n")
    with pytest.raises(ConfigError) as e:
        load_serve_settings(cfg)
    assert "did you mean 'port'" in str(e.value) and "above max_tokens" in str(e.value)


def test_engine_settings_are_built_from_the_serve_settings():
    from tunelab.recipes.serve import engine_settings
    from tunelab.serve.app.server import is_loopback

    e = engine_settings(ServeSettings(max_batch_size=3, max_queue=5, prefill_tokens=7))
    assert (e.max_batch_size, e.max_queue, e.prefill_tokens) == (3, 5, 7)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0")


def test_a_stop_sequence_over_the_length_cap_is_refused():
    from pydantic import ValidationError

    from tunelab.serve.app.schemas import MAX_STOP_CHARS, ChatRequest

    base = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    assert ChatRequest.model_validate({**base, "stop": "x" * MAX_STOP_CHARS}).stops()
    with pytest.raises(ValidationError) as e:
        ChatRequest.model_validate({**base, "stop": ["ok", "x" * (MAX_STOP_CHARS + 1)]})
    assert f"at most {MAX_STOP_CHARS} characters" in str(e.value)
