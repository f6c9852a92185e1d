"""GGUF files for the llama.cpp tests, written by tunelab's own exporter from a model folder.

``write_model_gguf`` loads a Hugging Face folder (a tiny model from ``tiny.py``, or the
real one from the store) and writes it with ``tunelab.models.gguf_write.write_gguf``,
carrying the tokenizer's chat template and, when given, ``tunelab.*`` metadata.
``needs_llamacpp`` skips a module when llama-cpp-python (the ``llamacpp`` extra) is absent
(fails it under ``make test``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def needs_llamacpp() -> None:
    """Skip the calling module unless llama-cpp-python is installed; under `make test`
    (``TUNELAB_REQUIRE_LLAMACPP=1``, which installs it) a missing one fails instead."""
    if os.environ.get("TUNELAB_REQUIRE_LLAMACPP") == "1":
        import llama_cpp  # noqa: F401 - an ImportError here fails the module
        return
    pytest.importorskip("llama_cpp", reason="the llamacpp extra: pip install 'tunelab[llamacpp]'")


def write_model_gguf(model_dir: Path, out: Path, ftype: str = "f32",
                     metadata: dict[str, str] | None = None) -> Path:
    """``model_dir`` as a GGUF at ``out``, with its tokenizer's template and stop ids."""
    from tunelab.data.template import end_of_turn_ids
    from tunelab.models.gguf_write import write_gguf
    from tunelab.models.loading import load_causal_lm, load_tokenizer

    tok = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir, False, "float32").eval()
    stop = set(end_of_turn_ids(tok)) | {tok.eos_token_id}
    return write_gguf(model, tok, out, ftype=ftype, chat_template=tok.chat_template,
                      name=model_dir.name, stop_ids=stop, metadata=metadata)
