"""An Ollama ``Modelfile`` for an exported GGUF: template, stop tokens, parameters.

Ollama templates are Go templates, not Jinja, so the run's chat template cannot be
copied. This module knows one family, ChatML (SmolLM2's), and writes its Go template
only after checking that the run's Jinja template renders probe chats exactly as ChatML
does (a default system turn included, which becomes the Modelfile's ``SYSTEM``). Any
other template is left out: Ollama then falls back to the template stored in the GGUF
(``tokenizer.chat_template``), and the caller says so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

_CHATML_GO = (
    '{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
    '{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
    '<|im_start|>assistant\n')

_PROBES = (
    [{"role": "user", "content": "Hello there"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "One"}, {"role": "assistant", "content": "Two"},
     {"role": "user", "content": "Three"}],
)


@dataclass(frozen=True)
class Modelfile:
    """The text, and whether it carries a template of its own (False: the GGUF's is used)."""

    text: str
    has_template: bool


def _chatml(messages: list[dict], system: str | None) -> str:
    out = ""
    if system is not None and messages[0]["role"] != "system":
        out += f"<|im_start|>system\n{system}<|im_end|>\n"
    for m in messages:
        out += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
    return out + "<|im_start|>assistant\n"


def chatml_default_system(render: Callable[[list[dict]], str]) -> tuple[bool, str | None]:
    """Whether ``render`` (a chat's prompt text, generation prompt added) is ChatML, and
    the system turn it adds to a chat that has none."""
    first = render(_PROBES[0])
    system = None
    head = "<|im_start|>system\n"
    if first.startswith(head):
        system = first[len(head):first.find("<|im_end|>")]
    ok = all(render(p) == _chatml(p, system) for p in _PROBES)
    return ok, system


def _quoted(text: str) -> str:
    if '"""' in text:
        return json.dumps(text)  # a one-line string with escapes
    return f'"""{text}"""'


_PLAIN_GO = "{{ .Prompt }}"  # a model without a chat template reads the prompt as it is


def build_modelfile(gguf_name: str, render: Callable[[list[dict]], str] | None,
                    stop_tokens: list[str],
                    context_length: int, system: str | None = None) -> Modelfile:
    """The Modelfile text for ``gguf_name`` (a file beside it).

    Args:
        gguf_name: the GGUF file's name, relative to the Modelfile's folder.
        render: the run's chat template as a function of a chat (generation prompt added);
            None: a plain-text model, whose Modelfile passes the prompt through.
        stop_tokens: the text of every token generation stops at.
        context_length: the model's context, as ``num_ctx``.
        system: a system turn to use when a chat brings none (a task's system prompt);
            None: the template's own default, if it has one.
    """
    lines = [f"FROM ./{gguf_name}"]
    if render is None:
        lines.append(f"TEMPLATE {_quoted(_PLAIN_GO)}")
        lines += [f"PARAMETER stop {json.dumps(t)}" for t in stop_tokens]
        lines += ["PARAMETER temperature 0", f"PARAMETER num_ctx {context_length}"]
        return Modelfile("\n".join(lines) + "\n", True)
    ok, default_system = chatml_default_system(render)
    if ok:
        lines.append(f"TEMPLATE {_quoted(_CHATML_GO)}")
    if system is not None or (ok and default_system is not None):
        lines.append(f"SYSTEM {_quoted(system if system is not None else default_system or '')}")
    lines += [f"PARAMETER stop {json.dumps(t)}" for t in stop_tokens]
    lines += ["PARAMETER temperature 0", f"PARAMETER num_ctx {context_length}"]
    return Modelfile("\n".join(lines) + "\n", ok)
