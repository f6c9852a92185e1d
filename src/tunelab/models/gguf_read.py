"""What a GGUF file says about serving it: its chat template, EOS, context, tunelab keys.

``read_gguf_metadata`` reads the key/value header with the ``gguf`` package (no weights
are loaded): the chat template (``tokenizer.chat_template``), the EOS id, the training
context, the architecture, and the keys tunelab's own export adds (``tunelab.task``, the
run's task settings as JSON; ``tunelab.source``, the run or model it came from).
``load_gguf_tokenizer`` loads the file's tokenizer with transformers, which is how the
server renders prompts for a GGUF exactly as for the model it came from.

This module knows nothing of llama.cpp (``tunelab.models.llamacpp``), nor of how the
template or the task is used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config.task import TaskSettings
from tunelab.errors import ModelError

GGUF_MAGIC = b"GGUF"
TASK_KEY = "tunelab.task"
SOURCE_KEY = "tunelab.source"
FINGERPRINT_KEY = "tunelab.chat_template_fingerprint"  # data.template.template_fingerprint
TOOL_FORMAT_KEY = "tunelab.tool_format"  # how the run rendered tools: template or fallback


@dataclass(frozen=True)
class GgufMetadata:
    """The header fields a server needs."""

    path: Path
    architecture: str
    chat_template: str | None
    eos_id: int | None
    context_length: int | None
    task: TaskSettings | None  # from ``tunelab.task``; None when the run had no task
    source: str | None  # from ``tunelab.source``
    fingerprint: str | None = None  # from ``tunelab.chat_template_fingerprint``
    tool_format: str | None = None  # from ``tunelab.tool_format``; None: probe the template


def is_gguf(path: Path) -> bool:
    """Whether ``path`` is a file that starts with the GGUF magic bytes."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def read_gguf_metadata(path: Path) -> GgufMetadata:
    """The serving fields of the GGUF at ``path``.

    Raises:
        ModelError: the file is missing, not a GGUF, unreadable, or its ``tunelab.task``
            is not valid task settings.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path} does not exist", hint="give the path of a .gguf file")
    if not is_gguf(path):
        raise ModelError(f"{path} is not a GGUF file (it does not start with 'GGUF')",
                         hint="export one with `tunelab export RUN --gguf OUT.gguf`")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError, IndexError) as e:  # a truncated or corrupt header
        raise ModelError(f"{path} cannot be read as GGUF: {e}",
                         hint="the file is damaged or incomplete; export or copy it again"
                         ) from None
    arch = str(_field(reader, "general.architecture") or "")
    task = None
    raw = _field(reader, TASK_KEY)
    if raw:
        try:
            task = TaskSettings.model_validate(json.loads(raw))
        except ValueError as e:  # json and pydantic errors both
            raise ModelError(f"{path}: its {TASK_KEY} metadata is not valid task settings: "
                             f"{str(e).splitlines()[0]}",
                             hint="export the run again with this version of tunelab") from None
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    context = _field(reader, f"{arch}.context_length")
    return GgufMetadata(path, arch, _field(reader, "tokenizer.chat_template"),
                        None if eos is None else int(eos),
                        None if context is None else int(context), task,
                        _field(reader, SOURCE_KEY), _field(reader, FINGERPRINT_KEY),
                        _field(reader, TOOL_FORMAT_KEY))


def load_gguf_tokenizer(path: Path) -> Any:
    """The GGUF's own tokenizer, loaded by transformers (``gguf_file=``).

    Raises:
        ModelError: transformers cannot build a tokenizer from the file.
    """
    from transformers import AutoTokenizer

    path = Path(path)
    try:
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        raise ModelError(f"transformers cannot read the tokenizer of {path}: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}",
                         hint="export the GGUF again with `tunelab export`, or serve the model "
                              "folder it came from") from None
