"""Chat-template rendering with loss masks, shared by training and serving.

Training and generation render chats with the same functions here, so the prompt a
model is trained on and the prompt it is served with cannot drift apart.

A conversation is rendered in segments split at assistant turns: the text before an
assistant answer (rendered with ``add_generation_prompt=True``, exactly what serving
sends) is not trained; the answer, through its end-of-turn token, is. Segments are
tokenized separately, so the prompt tokens equal the tokens ``render_prompt_ids``
gives at inference time.

Tool use (``tunelab.data.tools``): a chat with declarations, calls or results is rendered
by the template itself (``tools=``) when it renders tools (``resolve_tool_format``
probes it), else in the one fallback layout (``tool_text.fallback_messages``). The choice
is stored with a run, so evaluation and serving render the same way. Calls are
assistant turns and trained; results are ``tool`` turns and never are.

This module receives a tokenizer object; it never loads a model or a tokenizer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.data.example import Example, Message, ToolCall
from tunelab.data.tool_text import (
    FALLBACK,
    TEMPLATE,
    TOOL_FORMATS,
    fallback_messages,
    template_dicts,
    template_tools,
    uses_tools,
)
from tunelab.errors import DataError

IGNORE_INDEX = -100  # label value the loss skips (PyTorch's cross_entropy default)

# Templates that can be named in a config instead of written out.
BUILTIN_TEMPLATES = {
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
}

# Tokens that close a turn in common templates; the last trained token must be one of
# these (or EOS), else EOS is appended so the model learns to stop.
_END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "</s>", "<|end|>", "<|endoftext|>")


@dataclass
class TokenizedExample:
    """Token ids and labels of one example; labels are IGNORE_INDEX where not trained."""

    input_ids: list[int]
    labels: list[int]
    source: str = ""
    line: int = 0

    @property
    def num_loss_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)

    def __len__(self) -> int:
        return len(self.input_ids)


def resolve_chat_template(tokenizer: Any, template: str | None) -> str:
    """The Jinja chat template to use.

    Args:
        tokenizer: a Hugging Face tokenizer.
        template: None (the tokenizer's own), a builtin name (``chatml``), a path to a
            ``.jinja`` file, or a Jinja template string.

    Raises:
        DataError: no template is given and the tokenizer has none.
    """
    if template is None:
        own = getattr(tokenizer, "chat_template", None)
        if not own:
            raise DataError(
                "the tokenizer has no chat template, so chats cannot be rendered",
                hint="set `data.chat_template: chatml` (or a path to a .jinja file) in the config",
            )
        return own
    if template in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[template]
    if template.endswith(".jinja") and Path(template).is_file():
        return Path(template).read_text(encoding="utf-8")
    if "{%" in template or "{{" in template:
        return template
    raise DataError(
        f"chat template {template!r} is neither a builtin ({', '.join(BUILTIN_TEMPLATES)}), "
        "an existing .jinja file, nor a Jinja template",
        hint="fix `data.chat_template` in the config",
    )


def _as_dicts(messages: Sequence[Message | dict]) -> list[dict]:
    out = []
    for m in messages:
        if isinstance(m, Message):
            out.append({"role": m.role, "content": m.content})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    return out


def _as_messages(messages: Sequence[Message | dict]) -> list[Message]:
    return [m if isinstance(m, Message) else Message(m["role"], m["content"]) for m in messages]


def render_text(tokenizer: Any, messages: Sequence[Message | dict], template: str,
                add_generation_prompt: bool, tools: Sequence[dict] | None = None,
                with_tools: bool = False) -> str:
    """Render messages with a Jinja chat template to a string.

    Args:
        tools: declarations to pass as the template's ``tools`` (template tool format
            only; the fallback has already put them in the messages). Turns with calls
            or results are passed with them in transformers' shape.
        with_tools: the conversation uses tools (in either layout): a template failure
            is then a ``DataError`` about tool turns.

    Raises:
        DataError: the template fails on these turns (a role it refuses, say).
    """
    dicts = (template_dicts(_as_messages(messages)) if tools is not None
             else _as_dicts(messages))
    try:
        return tokenizer.apply_chat_template(
            dicts, chat_template=template, tokenize=False,
            add_generation_prompt=add_generation_prompt,
            **({"tools": template_tools(tools) or None} if tools is not None else {}))
    except Exception as e:  # jinja2's TemplateError and the template's own raise_exception
        if not with_tools and not any(d["role"] == "tool" or "tool_calls" in d for d in dicts):
            raise
        other = ("or `data.tool_format: fallback`" if tools is not None else
                 "(the fallback layout adds the declarations to a system turn and the results "
                 "as 'tool' turns)")
        raise DataError(
            f"the chat template cannot render this conversation with tools: {e}",
            hint="set `data.chat_template` to one that renders a system turn and a 'tool' "
                 f"role (chatml does), {other}") from e


def prepare_chat(messages: Sequence[Message | dict], tools: Sequence[dict], tool_format: str,
                 ) -> tuple[list[Message | dict], list[dict] | None]:
    """The turns to render and the ``tools`` argument for one conversation.

    Without tools, calls or results the turns are rendered as they are (``None``: no
    ``tools`` argument). With them, the ``template`` format passes them to the
    template, and the ``fallback`` format rewrites the turns (``tool_text.fallback_messages``).
    """
    msgs = _as_messages(messages)
    if not uses_tools(msgs, tools):
        return list(messages), None
    if tool_format == TEMPLATE:
        return list(msgs), list(tools)
    return list(fallback_messages(msgs, tools)), None


def _encode(tokenizer: Any, text: str) -> list[int]:
    # The template already carries BOS and specials; never let the tokenizer add its own.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def render_prompt_ids(tokenizer: Any, messages: Sequence[Message | dict],
                      template: str | None = None, tools: Sequence[dict] = (),
                      tool_format: str | None = None) -> list[int]:
    """Token ids of a prompt ready for generation (the generation prompt appended).

    Args:
        tokenizer: a Hugging Face tokenizer.
        messages: the conversation so far (system/user/assistant/tool turns).
        template: as for ``resolve_chat_template``.
        tools: the functions the model may call (``Example.tools``).
        tool_format: ``template`` or ``fallback`` (a run's stored choice); None: as
            ``resolve_tool_format`` picks for this template.
    """
    tmpl = resolve_chat_template(tokenizer, template)
    fmt = resolve_tool_format(tokenizer, tmpl, tool_format)
    msgs, tools_arg = prepare_chat(messages, tools, fmt)
    return _encode(tokenizer, render_text(tokenizer, msgs, tmpl, add_generation_prompt=True,
                                          tools=tools_arg,
                                          with_tools=uses_tools(_as_messages(messages), tools)))


# A declaration and a call whose name and argument value a template that renders tools
# shows; one that ignores ``tools`` and ``tool_calls`` (SmolLM2's, Gemma 3's) does not.
_PROBE_TOOLS = ({"name": "probe_lookup_7", "description": "Look a code up.",
                 "parameters": {"type": "object", "properties": {"code": {"type": "string"}},
                                "required": ["code"]}},)
_PROBE_CALL = (Message("user", "Look up Q7."),
               Message("assistant", "", tool_calls=(ToolCall("probe_lookup_7", {"code": "zq81x"}, "c0"),)),
               Message("tool", "result-k4v9", tool_call_id="c0"))
_tool_formats: dict[tuple[str, str], str] = {}


def template_renders_tools(tokenizer: Any, template: str) -> bool:
    """Whether a chat template renders declarations, calls and results itself
    (transformers' ``tools=``): the probe's function name, description, argument value and
    result all appear in its text (a template that drops the result is not used)."""
    key = (template, type(tokenizer).__name__)
    if key not in _tool_formats:
        try:
            text = tokenizer.apply_chat_template(
                template_dicts(_PROBE_CALL), chat_template=template, tokenize=False,
                tools=template_tools(_PROBE_TOOLS))
            ok = all(part in text for part in ("probe_lookup_7", "zq81x", "Look a code up.",
                                                   "result-k4v9"))
        except Exception:  # a template that fails on tools does not render them
            ok = False
        _tool_formats[key] = TEMPLATE if ok else FALLBACK
    return _tool_formats[key] == TEMPLATE


def resolve_tool_format(tokenizer: Any, template: str, wanted: str | None) -> str:
    """How this template renders tools: ``wanted`` when given (``auto`` and None probe).

    Raises:
        DataError: ``template`` is wanted and the template does not render tools.
    """
    if wanted in (None, "auto"):
        return TEMPLATE if template_renders_tools(tokenizer, template) else FALLBACK
    if wanted not in TOOL_FORMATS:
        raise DataError(f"tool format {wanted!r} is not one of auto, {', '.join(TOOL_FORMATS)}",
                        hint="set `data.tool_format` to auto, template or fallback")
    if wanted == TEMPLATE and not template_renders_tools(tokenizer, template):
        raise DataError("the chat template does not render tools (it ignores `tools` and "
                        "`tool_calls`), so `data.tool_format: template` cannot be used",
                        hint="set `data.tool_format: auto` (the fallback layout) or use a "
                             "template that renders tools")
    return wanted


_PROBE_CHAT = (
    {"role": "system", "content": "You are a careful assistant."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3 + 3?"},
)


def template_fingerprint(tokenizer: Any, template: str | None) -> str:
    """A short hash of how a chat is rendered and tokenized (the template's behaviour).

    Two templates that render the probe chat to the same ids share a fingerprint, so a
    reformatted but equivalent template is not flagged; any change a model would see is.

    Raises:
        DataError: as ``resolve_chat_template``.
    """
    ids = render_prompt_ids(tokenizer, _PROBE_CHAT, template)
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:16]


def end_of_turn_ids(tokenizer: Any) -> set[int]:
    """Ids that end an assistant turn for this tokenizer (EOS and known end-of-turn tokens)."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    # One lookup per token, not get_vocab(): that copies the whole vocabulary (95 ms for
    # SmolLM2's 49k, measured), and this runs once per row tokenized. A missing token
    # comes back as the unknown id (or None), which does not map back to it.
    for t in _END_OF_TURN_TOKENS:
        i = tokenizer.convert_tokens_to_ids(t)
        if i is not None and tokenizer.convert_ids_to_tokens(i) == t:
            ids.add(int(i))
    return ids


def _is_trained(m: Message) -> bool:
    return m.role == "assistant" and m.weight != 0


def tokenize_example(tokenizer: Any, example: Example, template: str | None = None,
                     tool_format: str | None = None) -> TokenizedExample:
    """Tokenize one example with labels only on trained assistant tokens.

    Plain-text examples are trained on every token, with EOS appended. In chats, an
    assistant turn is trained unless its ``weight`` is 0; its end-of-turn token is
    always trained (also when pad == eos, since labels come from the segments, not
    from padding). An assistant turn's tool calls are trained like its text; tool
    results are prompt, never trained.

    Args:
        tool_format: as for ``render_prompt_ids``.

    Raises:
        DataError: the template does not render prefixes consistently.
    """
    eot = end_of_turn_ids(tokenizer)
    if example.text is not None:
        ids = list(tokenizer(example.text, add_special_tokens=True)["input_ids"])
        if not ids or ids[-1] not in eot:
            ids.append(int(tokenizer.eos_token_id))
        return TokenizedExample(ids, list(ids), example.source, example.line)

    tmpl = resolve_chat_template(tokenizer, template)
    tooled = uses_tools(example.messages, example.tools)
    fmt = resolve_tool_format(tokenizer, tmpl, tool_format) if tooled else FALLBACK
    msgs, tools = prepare_chat(example.messages, example.tools, fmt)
    input_ids: list[int] = []
    labels: list[int] = []
    done = ""  # text already emitted

    def emit(text: str, trained: bool) -> list[int]:
        ids = _encode(tokenizer, text)
        input_ids.extend(ids)
        labels.extend(ids if trained else [IGNORE_INDEX] * len(ids))
        return ids

    for i, m in enumerate(msgs):
        assert isinstance(m, Message)  # prepare_chat keeps an example's messages
        if m.role != "assistant":
            continue
        prompt = render_text(tokenizer, msgs[:i], tmpl, add_generation_prompt=True, tools=tools,
                             with_tools=tooled)
        full = render_text(tokenizer, msgs[: i + 1], tmpl, add_generation_prompt=False,
                           tools=tools, with_tools=tooled)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise DataError(
                f"{example.source}:{example.line}: the chat template does not render message "
                f"{i} as a continuation of the earlier turns, so the answer cannot be masked",
                hint="use a prefix-consistent template (`data.chat_template: chatml`)",
            )
        emit(prompt[len(done):], trained=False)
        answer = full[len(prompt):]
        # Whitespace after the end-of-turn token is layout, not part of the answer.
        core = answer.rstrip()
        trailing = answer[len(core):]
        if _is_trained(m):
            ids = emit(core, trained=True)
            if not ids or ids[-1] not in eot:
                input_ids.append(int(tokenizer.eos_token_id))
                labels.append(int(tokenizer.eos_token_id))
        else:
            emit(core, trained=False)
        emit(trailing, trained=False)
        done = full
    rest = render_text(tokenizer, msgs, tmpl, add_generation_prompt=False, tools=tools,
                       with_tools=tooled)
    if rest.startswith(done) and len(rest) > len(done):
        emit(rest[len(done):], trained=False)
    return TokenizedExample(input_ids, labels, example.source, example.line)
