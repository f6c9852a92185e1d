"""The OpenAI request bodies the server accepts, and the response bodies it sends.

Requests accept the fields of OpenAI's chat and completions APIs that tunelab serves;
other fields are ignored, as OpenAI ignores them (clients send ``frequency_penalty: 0``
and the like). A field tunelab cannot honour with a value other than its neutral one
(``n`` other than 1, ``logprobs``, penalties, the older ``functions``, a JSON
``response_format``) is refused with 400 naming it, so a client never gets an answer that
silently ignored what it asked for. Chat requests take ``tools``, ``tool_choice``, tool
turns and content parts; they are read into the conversation training renders by
``tunelab.serve.app.tooluse``. Responses are built as plain dicts in the exact OpenAI
shapes. This module knows nothing of models or the engine.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from tunelab.db import NAME_LENGTH
from tunelab.serve.app.errors import APIError
from tunelab.serve.app.tooluse import Conversation, read_conversation

# Characters per stop sequence. Each token checks whether the answer's tail could begin a
# stop sequence, which costs about the square of its length, on the event loop.
MAX_STOP_CHARS = 256


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChatMessage(_Body):
    """One turn. A list ``content`` holds parts (text only), joined as training joins them
    (``tunelab.data.tools.join_parts``); ``tool_calls`` and ``tool_call_id`` are read by
    ``tunelab.serve.app.tooluse`` with the readers training uses, which name bad fields."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Any] | None = None
    name: str | None = None
    tool_calls: list[Any] | None = None
    tool_call_id: Any = None


class StreamOptions(_Body):
    include_usage: bool = False


SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1  # what a torch generator takes; beyond: 400, not 500


class _Sampling(_Body):
    # Both are stored in the request log's NAME_LENGTH columns: a longer one is refused
    # here (no served name is longer: the registry refuses those), never cut there.
    model: str = Field(max_length=NAME_LENGTH)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)  # OpenAI's default; 0 = greedy
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=NAME_LENGTH)
    n: int = 1
    # OpenAI fields this server cannot honour: accepted at their neutral value (clients
    # send `presence_penalty: 0`), refused otherwise, never dropped in silence.
    logprobs: Any = None
    top_logprobs: Any = None
    frequency_penalty: Any = None
    presence_penalty: Any = None
    logit_bias: Any = None
    functions: Any = None  # the older form of tools: send ``tools``
    response_format: Any = None

    @field_validator("logprobs", "top_logprobs", "frequency_penalty", "presence_penalty",
                     "logit_bias", "functions", "response_format")
    @classmethod
    def _neutral(cls, v: Any) -> Any:
        if v in (None, False, 0, {}, []) or v == {"type": "text"}:
            return v
        raise ValueError("is not supported by this server; leave it unset")

    @field_validator("user")
    @classmethod
    def _user_storable(cls, v: str | None) -> str | None:
        # the user is an experiment's unit and a stored key: PostgreSQL text holds no NUL
        if v is not None and "\x00" in v:
            raise ValueError("must not contain a NUL character")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else v or []
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("a stop sequence cannot be empty")
        if any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"a stop sequence may be at most {MAX_STOP_CHARS} characters")
        return v

    @field_validator("n")
    @classmethod
    def _one_choice(cls, v: int) -> int:
        if v != 1:
            raise ValueError("only n=1 is served (one answer per request)")
        return v

    def stops(self) -> list[str]:
        """The stop sequences as a list."""
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class ChatRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name of max_tokens; wins
    tools: Any = None  # read (and refused when malformed) by tooluse.read_conversation
    tool_choice: Any = None  # auto | none; required and named functions are refused there
    # one call or several per answer is the model's choice: only the default is honoured
    parallel_tool_calls: bool | None = None
    _conversation: Conversation | None = PrivateAttr(None)

    @field_validator("parallel_tool_calls")
    @classmethod
    def _parallel(cls, v: bool | None) -> bool | None:
        if v is False:
            raise ValueError("false cannot be honoured: the model may answer with several "
                             "calls; leave it unset")
        return v

    def conversation(self) -> Conversation:
        """The messages and tools as training renders them.

        Raises:
            APIError: 400 naming the field at fault (bad tools, arguments, tool turns).
        """
        if self._conversation is None:  # read once: the log and the render both need it
            self._conversation = read_conversation(self.messages, self.tools, self.tool_choice)
        return self._conversation

    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def tokens_param(self) -> str:
        """The field that set the answer's length, for messages."""
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"

    def prompt_param(self) -> str:
        return "messages"

    def log_prompt(self) -> str:
        """The prompt as the request log keeps it: the messages as JSON
        (``Conversation.log_text``); the raw messages when they do not read."""
        try:
            return self.conversation().log_text()
        except APIError:
            return json.dumps([m.model_dump(exclude_none=True) for m in self.messages],
                              ensure_ascii=False)


class CompletionRequest(_Sampling):
    """``POST /v1/completions``: a raw text prompt, no chat template."""

    prompt: str | list[str]
    echo: bool = False
    best_of: int | None = Field(None, ge=1, le=1)  # one answer per request
    suffix: str | None = None
    tools: Any = None  # a raw prompt has no template to declare them in

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, v: Any) -> Any:
        if v:
            raise ValueError("is not supported on /v1/completions (a raw prompt has no chat "
                             "template to declare them in); send them to /v1/chat/completions")
        return v

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, v: str | None) -> str | None:
        if v:
            raise ValueError("is not supported by this server (no insertion); leave it unset")
        return v

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("one prompt per request (a list of exactly one string)")
        return v

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, v: bool) -> bool:
        if v:
            raise ValueError("echo is not supported")
        return v

    def requested_tokens(self) -> int | None:
        return self.max_tokens

    def tokens_param(self) -> str:
        return "max_tokens"

    def prompt_param(self) -> str:
        return "prompt"

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def log_prompt(self) -> str:
        return self.text()


def new_id(prefix: str) -> str:
    """``chatcmpl-<24 hex>`` / ``cmpl-<24 hex>``."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_response(rid: str, created: int, model: str, text: str | None, finish_reason: str,
                  prompt_tokens: int, completion_tokens: int,
                  tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A chat completion; with ``tool_calls`` the message carries them (content may be null)."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": message,
                         "finish_reason": finish_reason, "logprobs": None}],
            "usage": usage(prompt_tokens, completion_tokens)}


def tool_calls_delta(tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
    """A stream delta holding whole calls, each with its ``index`` (OpenAI's chunk shape)."""
    return {"tool_calls": [{"index": i, **c} for i, c in enumerate(tool_calls)]}


def chat_chunk(rid: str, created: int, model: str, delta: dict[str, Any],
               finish_reason: str | None = None) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                         "logprobs": None}]}


def completion_response(rid: str, created: int, model: str, text: str, finish_reason: str,
                        prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {"id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish_reason,
                         "logprobs": None}],
            "usage": usage(prompt_tokens, completion_tokens)}


def completion_chunk(rid: str, created: int, model: str, text: str,
                     finish_reason: str | None = None) -> dict[str, Any]:
    return {"id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish_reason,
                         "logprobs": None}]}


def usage_chunk(rid: str, created: int, model: str, obj: str, prompt_tokens: int,
                completion_tokens: int) -> dict[str, Any]:
    """The last chunk of a stream with ``stream_options.include_usage``: no choices, the usage."""
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [],
            "usage": usage(prompt_tokens, completion_tokens)}


def models_list(names: list[tuple[str, int]]) -> dict[str, Any]:
    return {"object": "list",
            "data": [{"id": n, "object": "model", "created": c, "owned_by": "tunelab"}
                     for n, c in names]}
