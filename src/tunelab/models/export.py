"""Merging a LoRA adapter into its base model, written as a plain Hugging Face folder.

The merged folder loads with ``AutoModelForCausalLM.from_pretrained`` alone, no peft. It
is written to a hidden folder beside ``out_dir`` and renamed into place, so a failed or
interrupted merge leaves no half-written output. This module does not know how the
adapter was trained; it reads what the adapter folder holds.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from tunelab.errors import ModelError, StoreError
from tunelab.files import set_new_file_mode
from tunelab.models.loading import check_safe_folder, load_causal_lm, load_tokenizer

_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")


def merge_adapter(
    base_path: Path,
    adapter_dir: Path,
    out_dir: Path,
    tokenizer_dir: Path | None = None,
    overwrite: bool = False,
    trust_remote_code: bool = False,
) -> Path:
    """Merge the LoRA adapter in ``adapter_dir`` into the base model and save the result.

    When the adapter run grew the vocabulary (added special tokens), the base model's
    embeddings are resized first: to the size stored in the adapter's embedding weights,
    else to the tokenizer's length when that is larger.

    Args:
        base_path: the base model folder (safetensors).
        adapter_dir: a peft adapter folder (``adapter_config.json``, safetensors).
        out_dir: where the merged model goes; must not exist unless ``overwrite``.
        tokenizer_dir: the tokenizer to save with it; default: the adapter folder when it
            holds a tokenizer, else the base folder.
        overwrite: replace an existing ``out_dir``.
        trust_remote_code: allow the base model's (and tokenizer's) own code.

    Returns:
        ``out_dir``.

    Raises:
        ModelError: ``adapter_dir`` is not a peft adapter, or peft cannot apply it.
        UnsafeModelError: either folder holds only pickle weights.
        StoreError: ``out_dir`` exists and ``overwrite`` is False, or is not writable.
    """
    base_path, adapter_dir, out_dir = Path(base_path), Path(adapter_dir), Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise StoreError(
            f"output folder {out_dir} already exists",
            hint="choose another output folder, or overwrite it (--overwrite)",
        )
    check_safe_folder(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ModelError(
            f"{adapter_dir} has no adapter_config.json, so it is not a peft adapter folder",
            hint="give the adapter folder a training run wrote (it holds adapter_config.json)",
        )
    if tokenizer_dir is None:
        has_tok = any((adapter_dir / f).is_file() for f in _TOKENIZER_FILES)
        tokenizer_dir = adapter_dir if has_tok else base_path
    tokenizer = load_tokenizer(Path(tokenizer_dir), trust_remote_code=trust_remote_code)
    model = load_causal_lm(base_path, trust_remote_code=trust_remote_code, dtype="float32")
    _match_vocab(model, adapter_dir, len(tokenizer))
    merged = _merge(model, adapter_dir)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        merged.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        set_new_file_mode(tmp)  # safetensors writes 0600 files
        swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _merge(model, adapter_dir: Path):
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ModelError(
            f"cannot apply the adapter in {adapter_dir} to the base model: {e}",
            hint="check that the adapter was trained on this base model",
        ) from e
    merged = peft_model.merge_and_unload()
    merged.eval()
    return merged


def adapter_vocab_size(adapter_dir: Path) -> int | None:
    """Rows of the full embedding matrix an adapter saved (when training resized it).

    Args:
        adapter_dir: a peft adapter folder.

    Returns:
        the number of rows, or None when the adapter holds no full embedding weights.
    """
    from safetensors import safe_open

    file = Path(adapter_dir) / "adapter_model.safetensors"
    if not file.is_file():
        return None
    with safe_open(str(file), framework="numpy") as f:
        for key in f.keys():
            if "lora_" in key or not key.endswith(".weight"):
                continue
            if "embed" in key or "lm_head" in key or key.endswith("wte.weight"):
                shape = f.get_slice(key).get_shape()
                if len(shape) == 2:
                    return int(shape[0])
    return None


def _match_vocab(model, adapter_dir: Path, tokenizer_len: int) -> None:
    current = model.get_input_embeddings().weight.shape[0]
    target = adapter_vocab_size(adapter_dir)
    if target is None and tokenizer_len > current:
        target = tokenizer_len  # tokens were added; their rows come from the adapter, if any
    if target is not None and target != current:
        # the adapter's saved rows replace these, so a plain init is enough
        model.resize_token_embeddings(target, mean_resizing=False)


def swap_in(tmp: Path, out_dir: Path) -> None:
    """Put the finished folder ``tmp`` at ``out_dir``; an old ``out_dir`` goes only after.

    Raises:
        StoreError: the rename failed (the old folder is put back).
    """
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except OSError as e:
        if old is not None and not out_dir.exists():
            os.rename(old, out_dir)
        raise StoreError(
            f"cannot move the merged model to {out_dir}: {e}",
            hint="check that its parent folder is writable",
        ) from e
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
