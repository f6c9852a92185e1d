"""Loading models and tokenizers from local folders, refusing what could run code.

Two things in a model folder can execute code on load: pickle weights (``*.bin``,
``*.pt``, ...; unpickling can call any function) and remote code (``auto_map`` in the
config plus ``*.py`` files). Pickle is always refused; remote code only with
``trust_remote_code=True``. Weights are read with ``use_safetensors=True`` only.

This module never touches the network (``local_files_only=True``) and does not know
where folders come from; ``resolve_model`` turns a user's reference into a folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tunelab.errors import ModelError, ModelNotFoundError, UnsafeModelError
from tunelab.models.hardware import resolve_dtype

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_DTYPES = ("float32", "bfloat16", "float16", "auto")

_PICKLE_WHY = (
    "pickle files can run arbitrary code when they are loaded, so tunelab never loads them"
)
_PICKLE_HOW = (
    "convert it once, in an environment you trust: load it with transformers "
    "(`AutoModelForCausalLM.from_pretrained(path)`) and call "
    "`model.save_pretrained(out_dir, safe_serialization=True)` to write *.safetensors"
)


def refuse_pickle_file(path: Path) -> None:
    """Refuse a path that names a pickle file.

    Args:
        path: any path a user gave.

    Raises:
        UnsafeModelError: the path ends in a pickle suffix (``.bin``, ``.pt``, ...).
    """
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise UnsafeModelError(
            f"{path} is a pickle file ({path.suffix}); {_PICKLE_WHY}", hint=_PICKLE_HOW
        )


def check_safe_folder(path: Path, trust_remote_code: bool = False) -> None:
    """Check that loading the model folder at ``path`` cannot run code we did not allow.

    Args:
        path: a Hugging Face model (or adapter) folder.
        trust_remote_code: allow ``auto_map`` / custom ``*.py`` files in the folder.

    Raises:
        UnsafeModelError: ``path`` is a pickle file; the folder holds pickle weights and
            no ``*.safetensors``; or it asks for remote code and ``trust_remote_code``
            is False.
        ModelNotFoundError: ``path`` is not a folder.
    """
    path = Path(path)
    refuse_pickle_file(path)
    if not path.is_dir():
        raise ModelNotFoundError(
            f"model folder {path} does not exist or is not a folder",
            hint="give a folder holding config.json and *.safetensors",
        )
    has_safetensors = any(path.glob("*.safetensors"))
    pickles = sorted(
        p.name for p in path.iterdir() if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES
    )
    # training_args.bin beside safetensors is harmless: we never open it
    if pickles and not has_safetensors:
        raise UnsafeModelError(
            f"model folder {path} has only pickle weights ({', '.join(pickles)}) and no "
            f"*.safetensors; {_PICKLE_WHY}",
            hint=_PICKLE_HOW,
        )
    _check_remote_code(path, trust_remote_code)


def _check_remote_code(path: Path, trust_remote_code: bool) -> None:
    if trust_remote_code:
        return
    reasons = []
    for name in ("config.json", "tokenizer_config.json"):
        file = path / name
        if file.is_file():
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("auto_map"):
                reasons.append(f"auto_map in {name} ({', '.join(sorted(data['auto_map']))})")
    code = sorted(p.name for p in path.glob("*.py"))
    if code:
        reasons.append(f"Python files {', '.join(code)}")
    if reasons:
        raise UnsafeModelError(
            f"model folder {path} asks to run its own code: {'; '.join(reasons)}",
            hint=(
                "read that code; if you trust its author, allow it with "
                "trust_remote_code=True (--trust-remote-code)"
            ),
        )


def load_tokenizer(path: Path, trust_remote_code: bool = False):
    """Load the tokenizer of a local folder; a missing pad token becomes the eos token.

    Args:
        path: a folder with tokenizer files.
        trust_remote_code: allow a custom tokenizer class from the folder.

    Returns:
        the ``transformers`` tokenizer.

    Raises:
        UnsafeModelError: ``path`` is a pickle file or asks for remote code not allowed.
        ModelNotFoundError: ``path`` is not a folder.
        ModelError: transformers cannot read a tokenizer from it.
    """
    path = Path(path)
    refuse_pickle_file(path)
    if not path.is_dir():
        raise ModelNotFoundError(
            f"tokenizer folder {path} does not exist or is not a folder",
            hint="give a model folder holding tokenizer.json or tokenizer_config.json",
        )
    _check_remote_code(path, trust_remote_code)
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(
            str(path), trust_remote_code=trust_remote_code, local_files_only=True
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(
            f"cannot load a tokenizer from {path}: {e}",
            hint="check that the folder holds tokenizer.json or tokenizer_config.json",
        ) from e
    if tok.pad_token is None and tok.eos_token is not None:
        # padding is masked out of attention and loss, so reusing eos is safe
        tok.pad_token = tok.eos_token
        logger.info("tokenizer at %s has no pad token; using eos %r", path, tok.eos_token)
    return tok


def load_causal_lm(path: Path, trust_remote_code: bool = False, dtype: str = "float32"):
    """Load a causal language model from a local folder of safetensors weights.

    Args:
        path: a Hugging Face model folder.
        trust_remote_code: allow the folder's own modeling code.
        dtype: one of ``float32``, ``bfloat16``, ``float16``, ``auto`` (or a torch dtype);
            ``auto`` measures whether bf16 is faster here (``tunelab.models.hardware``),
            not the checkpoint's own dtype.

    Returns:
        the ``transformers`` model, in eval mode.

    Raises:
        UnsafeModelError: see ``check_safe_folder``.
        ModelNotFoundError: ``path`` is not a folder.
        ModelError: no safetensors weights, an unknown dtype, or transformers fails.
    """
    import torch

    path = Path(path)
    check_safe_folder(path, trust_remote_code=trust_remote_code)
    if not any(path.glob("*.safetensors")):
        raise ModelError(
            f"model folder {path} has no *.safetensors weights",
            hint="give a Hugging Face model folder, or add one with `tunelab models pull`",
        )
    if isinstance(dtype, torch.dtype):
        torch_dtype = dtype
    elif dtype in _DTYPES:
        torch_dtype = getattr(torch, resolve_dtype(dtype))
    else:
        raise ModelError(f"dtype {dtype!r} is not supported", hint=f"use one of {_DTYPES}")
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path),
            use_safetensors=True,
            dtype=torch_dtype,
            trust_remote_code=trust_remote_code,
            local_files_only=True,
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(
            f"cannot load a causal language model from {path}: {e}",
            hint="check that config.json names a causal LM architecture transformers knows",
        ) from e
    model.eval()
    return model
