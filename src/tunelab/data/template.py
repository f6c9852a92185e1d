"""Chat-template rendering with loss masks, shared by training and serving.

Training and generation render chats with the same functions here, so the prompt a
model is trained on and the prompt it is served with cannot drift apart.

A conversation is rendered in segments split at assistant turns: the text before an
assistant answer (rendered with ``add_generation_prompt=True``, exactly what serving
sends) is not trained; the answer, through its end-of-turn token, is. Segments are
tokenized separately, so the prompt tokens equal the tokens ``render_prompt_ids``
gives at inference time.

This module receives a tokenizer object; it never loads a model or a tokenizer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.data.example import Example, Message
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


def render_text(tokenizer: Any, messages: Sequence[Message | dict], template: str,
                add_generation_prompt: bool) -> str:
    """Render messages with a Jinja chat template to a string."""
    return tokenizer.apply_chat_template(
        _as_dicts(messages), chat_template=template, tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )


def _encode(tokenizer: Any, text: str) -> list[int]:
    # The template already carries BOS and specials; never let the tokenizer add its own.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def render_prompt_ids(tokenizer: Any, messages: Sequence[Message | dict],
                      template: str | None = None) -> list[int]:
    """Token ids of a prompt ready for generation (the generation prompt appended).

    Args:
        tokenizer: a Hugging Face tokenizer.
        messages: the conversation so far (system/user/assistant turns).
        template: as for ``resolve_chat_template``.
    """
    tmpl = resolve_chat_template(tokenizer, template)
    return _encode(tokenizer, render_text(tokenizer, messages, tmpl, add_generation_prompt=True))


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


def tokenize_example(tokenizer: Any, example: Example, template: str | None = None) -> TokenizedExample:
    """Tokenize one example with labels only on trained assistant tokens.

    Plain-text examples are trained on every token, with EOS appended. In chats, an
    assistant turn is trained unless its ``weight`` is 0; its end-of-turn token is
    always trained (also when pad == eos, since labels come from the segments, not
    from padding).

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
    msgs = example.messages
    input_ids: list[int] = []
    labels: list[int] = []
    done = ""  # text already emitted

    def emit(text: str, trained: bool) -> list[int]:
        ids = _encode(tokenizer, text)
        input_ids.extend(ids)
        labels.extend(ids if trained else [IGNORE_INDEX] * len(ids))
        return ids

    for i, m in enumerate(msgs):
        if m.role != "assistant":
            continue
        prompt = render_text(tokenizer, msgs[:i], tmpl, add_generation_prompt=True)
        full = render_text(tokenizer, msgs[: i + 1], tmpl, add_generation_prompt=False)
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
    rest = render_text(tokenizer, msgs, tmpl, add_generation_prompt=False)
    if rest.startswith(done) and len(rest) > len(done):
        emit(rest[len(done):], trained=False)
    return TokenizedExample(input_ids, labels, example.source, example.line)
