"""Writing a loaded causal LM and its tokenizer as one GGUF file (llama.cpp, Ollama).

The file carries everything llama.cpp needs to answer as the model does here: the
weights (``f32``, ``f16`` or ``q8_0``), the hyper-parameters, the whole vocabulary with
its merges and token types, the pre-tokenizer name, the chat template, and the BOS, EOS,
end-of-turn and padding ids. Extra ``tunelab.*`` string keys record what tunelab needs
to serve the file as it served the run (its task, its source).

Only what we can prove is written. The architecture must be Llama (SmolLM2 among them)
with a byte-level BPE tokenizer whose pre-tokenizer is one llama.cpp knows by name
(``_PRE_TOKENIZERS``): a wrong name is the most common cause of an exported model that
loads but answers differently, so an unknown one is refused rather than guessed. Or it is
text-only Gemma 3, whose hyper-parameters, norm offsets and SentencePiece-style
vocabulary ``tunelab.models.gguf_gemma`` knows, refusing what llama.cpp would not run
the same way.

How llama.cpp wants the tensors was read in its ``convert_hf_to_gguf.py``: names come
from ``gguf``'s own tensor map, Q and K rows are permuted from Hugging Face's rotate-half
layout to llama.cpp's interleaved RoPE, norms and other 1-D tensors stay f32, and a
matrix whose rows do not split into Q8_0 blocks falls back to f16.

The file is written under a hidden temporary name beside ``out`` and renamed into place
when complete, so a failure (a full disk included) leaves no partial file. This module
checks nothing about answers; ``tunelab.eval.gguf_parity`` does.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.config.schema import GGUF_TYPES
from tunelab.errors import ModelError, StoreError
from tunelab.files import fsync_dir, fsync_file, set_new_file_mode
from tunelab.models import gguf_gemma

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", gguf_gemma.GEMMA3_ARCHITECTURE)
META_PREFIX = "tunelab."  # our own keys: task, source, chat-template fingerprint

# Hugging Face pre-tokenizers (tokenizer.json) that llama.cpp implements, by its name.
_GPT2_BYTE_LEVEL = {"type": "ByteLevel", "use_regex": True}
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?"
                 r"[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


_TURN_END = re.compile(r"im_end|end_of_turn|eot_id", re.IGNORECASE)


class UnsupportedModelError(ModelError):
    """The model or its tokenizer cannot be written as a GGUF llama.cpp reads the same way."""


@dataclass(frozen=True)
class Vocab:
    """The tokenizer as GGUF stores it."""

    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str
    bos: int | None
    eos: int | None
    eot: int | None
    unk: int | None
    pad: int | None
    add_bos: bool
    model: str = "gpt2"  # llama.cpp's tokenizer: "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    scores: list[float] | None = None  # "llama" only: the merge order


@contextmanager
def _as_unsupported() -> Iterator[None]:
    """Gemma's refusals as this module's one exception type (same message and hint)."""
    try:
        yield
    except gguf_gemma.GemmaUnsupportedError as e:
        raise UnsupportedModelError(e.message, hint=e.hint) from e


def architecture(model: Any) -> str:
    """The Hugging Face architecture name of ``model`` (``LlamaForCausalLM``, ...)."""
    archs = getattr(model.config, "architectures", None) or [type(model).__name__]
    return str(archs[0])


def check_supported(model: Any) -> None:
    """Refuse a model this writer cannot export.

    Raises:
        UnsupportedModelError: the architecture is not one of ``SUPPORTED_ARCHITECTURES``,
            or its RoPE scaling is not plain.
    """
    arch = architecture(model)
    if arch == gguf_gemma.GEMMA3_ARCHITECTURE:
        with _as_unsupported():
            gguf_gemma.check_gemma3(model.config)
        return
    if arch not in SUPPORTED_ARCHITECTURES or getattr(model.config, "model_type", "") != "llama":
        raise UnsupportedModelError(
            f"GGUF export supports {', '.join(SUPPORTED_ARCHITECTURES)} (SmolLM2 and other "
            f"Llama-family models, text-only Gemma 3); this model is {arch}",
            hint="export it as a Hugging Face folder with `tunelab export RUN --merge OUT` and "
                 "convert that with llama.cpp's convert_hf_to_gguf.py")
    rope = _rope_parameters(model.config)
    if rope.get("rope_type", "default") not in ("default", None):
        raise UnsupportedModelError(
            f"this model uses {rope['rope_type']!r} RoPE scaling, which the GGUF export does not "
            "write yet", hint="export a Hugging Face folder with --merge instead")


def _rope_parameters(config: Any) -> dict:
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return dict(rope)


def _rope_theta(config: Any) -> float:
    theta = _rope_parameters(config).get("rope_theta", getattr(config, "rope_theta", None))
    return float(theta if theta is not None else 10000.0)  # Llama's own default


def pre_tokenizer_name(tokenizer_json: dict) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer.

    Raises:
        UnsupportedModelError: a normalizer, or a pre-tokenizer llama.cpp has no match for.
    """
    if tokenizer_json.get("normalizer") is not None:
        raise UnsupportedModelError(
            "the tokenizer has a normalizer, which a byte-level BPE GGUF cannot carry",
            hint="export a Hugging Face folder with --merge instead")
    pre = tokenizer_json.get("pre_tokenizer") or {}
    if _is_gpt2(pre):
        return "gpt-2"
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    if len(parts) == 2 and parts[0].get("type") == "Digits" and parts[0].get("individual_digits") \
            and _is_gpt2(parts[1]):
        return "smollm"  # each digit alone, then GPT-2's split (SmolLM's tokenizer.json)
    if len(parts) == 2 and parts[0].get("type") == "Split" \
            and parts[0].get("pattern", {}).get("Regex") == _LLAMA3_SPLIT \
            and parts[1].get("type") == "ByteLevel" and not parts[1].get("use_regex", True):
        return "llama-bpe"
    raise UnsupportedModelError(
        f"llama.cpp has no pre-tokenizer known to match this tokenizer's "
        f"({json.dumps(pre)[:200]}); a guessed one would split text differently",
        hint="export a Hugging Face folder with --merge, and convert it with llama.cpp's "
             "convert_hf_to_gguf.py, which knows more tokenizers by hash")


def _is_gpt2(part: dict) -> bool:
    return all(part.get(k) == v for k, v in _GPT2_BYTE_LEVEL.items()) \
        and not part.get("add_prefix_space", False)


def vocab_of(tokenizer: Any, n_rows: int, stop_ids: set[int]) -> Vocab:
    """The tokenizer's vocabulary padded to the model's ``n_rows`` embedding rows.

    Args:
        tokenizer: a fast (``tokenizers``) byte-level BPE tokenizer.
        n_rows: rows of the model's embedding matrix (llama.cpp needs one token each).
        stop_ids: the end-of-turn ids generation stops at; the first that is not EOS
            becomes GGUF's end-of-turn id.

    Raises:
        UnsupportedModelError: not a byte-level BPE, or more tokens than embedding rows.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise UnsupportedModelError("the tokenizer is not a fast (tokenizers) tokenizer",
                                    hint="export a Hugging Face folder with --merge instead")
    data = json.loads(backend.to_str())
    model = data.get("model", {})
    if model.get("type") != "BPE" or (data.get("decoder") or {}).get("type") != "ByteLevel":
        raise UnsupportedModelError(
            f"the GGUF export writes byte-level BPE tokenizers; this one is "
            f"{model.get('type')} with a {(data.get('decoder') or {}).get('type')} decoder",
            hint="export a Hugging Face folder with --merge instead")
    pre = pre_tokenizer_name(data)
    vocab: dict[str, int] = dict(model["vocab"])
    added = {a["id"]: a for a in data.get("added_tokens", [])}
    for i, a in added.items():
        vocab[a["content"]] = i
    if vocab and max(vocab.values()) >= n_rows:
        raise UnsupportedModelError(
            f"the tokenizer has ids up to {max(vocab.values())} but the model only "
            f"{n_rows} embedding rows", hint="the run's tokenizer and weights do not match")
    tokens = [f"[PAD{i}]" for i in range(n_rows)]
    types = [5] * n_rows  # UNUSED: rows the tokenizer never produces
    for text, i in vocab.items():
        tokens[i] = text
        a = added.get(i)
        types[i] = 1 if a is None else (3 if a.get("special") else 4)  # NORMAL, CONTROL, USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    eos, eot, add_bos = _special_ids(tokenizer, stop_ids)
    return Vocab(tokens, types, merges, pre, tokenizer.bos_token_id, eos, eot,
                 tokenizer.unk_token_id, tokenizer.pad_token_id, add_bos)


def _special_ids(tokenizer: Any, stop_ids: set[int]) -> tuple[int | None, int | None, bool]:
    """EOS, the end-of-turn id (a stop token named like one, ``<|im_end|>`` or
    ``<end_of_turn>``; else EOS), and whether the tokenizer puts BOS before a text."""
    eos = tokenizer.eos_token_id
    named = [i for i in sorted(stop_ids) if i != eos
             and _TURN_END.search(str(tokenizer.convert_ids_to_tokens(i)) or "")]
    eot = named[0] if named else eos
    probe = tokenizer("a")["input_ids"]
    add_bos = bool(probe) and tokenizer.bos_token_id is not None and probe[0] == tokenizer.bos_token_id
    return eos, eot, add_bos


def gemma_vocab_of(tokenizer: Any, n_rows: int, stop_ids: set[int]) -> Vocab:
    """Gemma 3's tokenizer as llama.cpp's SentencePiece vocabulary (``gguf_gemma.spm_vocab``).

    Raises:
        UnsupportedModelError: not a fast tokenizer, or one llama.cpp would split differently.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise UnsupportedModelError("the tokenizer is not a fast (tokenizers) tokenizer",
                                    hint="export a Hugging Face folder with --merge instead")
    with _as_unsupported():
        tokens, scores, types = gguf_gemma.spm_vocab(json.loads(backend.to_str()), n_rows)
    eos, eot, add_bos = _special_ids(tokenizer, stop_ids)
    return Vocab(tokens, types, [], "default", tokenizer.bos_token_id, eos, eot,
                 tokenizer.unk_token_id, tokenizer.pad_token_id, add_bos, "llama", scores)


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Rows from Hugging Face's rotate-half RoPE order to llama.cpp's interleaved one."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _tensors(model: Any) -> list[tuple[str, np.ndarray]]:
    import gguf
    import torch

    cfg = model.config
    gemma = architecture(model) == gguf_gemma.GEMMA3_ARCHITECTURE
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3 if gemma else gguf.MODEL_ARCH.LLAMA,
                                        cfg.num_hidden_layers)
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    out = []
    for hf_name, t in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reads the output from token_embd when output.weight is absent
        if "rotary_emb" in hf_name:
            continue
        name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise UnsupportedModelError(f"the model has a tensor GGUF has no name for: {hf_name}",
                                        hint="export a Hugging Face folder with --merge instead")
        data = t.detach().to(torch.float32).cpu().numpy()
        if gemma:  # NeoX RoPE, as Hugging Face's: no permutation; norms carry Gemma's + 1
            shift = gguf_gemma.norm_shift(hf_name)
            out.append((name, data + np.float32(shift) if shift else data))
            continue
        if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            data = _permute(data, cfg.num_attention_heads)
        elif hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            data = _permute(data, cfg.num_key_value_heads or cfg.num_attention_heads)
        out.append((name, data))
    return out


def _encoded(name: str, data: np.ndarray, ftype: str) -> tuple[np.ndarray, Any]:
    import gguf

    qt = gguf.GGMLQuantizationType
    if data.ndim <= 1 or name.endswith("_norm.weight") or ftype == "f32":
        return data.astype(np.float32), qt.F32
    if ftype == "q8_0":
        try:
            return gguf.quants.quantize(data, qt.Q8_0), qt.Q8_0
        except gguf.QuantError:
            pass  # rows not a multiple of the 32-value block: f16, as llama.cpp's converter does
    return data.astype(np.float16), qt.F16


def write_gguf(model: Any, tokenizer: Any, out: Path, *, ftype: str = "f32", chat_template: str | None,
               name: str, stop_ids: set[int] | None = None, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model`` and ``tokenizer`` as the GGUF file ``out``, whole or not at all.

    Args:
        model: a loaded Hugging Face causal LM (adapters already merged), in float32.
        tokenizer: its tokenizer.
        out: the file to write; its folder must exist. An existing file is replaced only
            once the new one is complete.
        ftype: the weights' type: ``f32``, ``f16`` or ``q8_0`` (norms stay f32).
        chat_template: the Jinja chat template the model was trained with; None: a model
            prompted with plain text (a base model), and the file carries no template.
        name: the model's name inside the file (``general.name``).
        stop_ids: the ids generation stops at (EOS and end-of-turn tokens); None: EOS only.
        metadata: extra strings, stored under ``tunelab.<key>``.

    Returns:
        ``out``.

    Raises:
        UnsupportedModelError: the architecture, tokenizer or a tensor cannot be written.
        StoreError: the folder is missing or the file cannot be written (no partial file
            is left).
    """
    import gguf

    if ftype not in GGUF_TYPES:
        raise ModelError(f"unknown GGUF type {ftype!r}", hint=f"use one of {', '.join(GGUF_TYPES)}")
    check_supported(model)
    out = Path(out)
    if not out.parent.is_dir():
        raise StoreError(f"the folder {out.parent} does not exist",
                         hint="create it first, or write the file somewhere else")
    cfg = model.config
    gemma = architecture(model) == gguf_gemma.GEMMA3_ARCHITECTURE
    n_rows = model.get_input_embeddings().weight.shape[0]
    vocab = (gemma_vocab_of if gemma else vocab_of)(tokenizer, n_rows,
                                                    stop_ids or {tokenizer.eos_token_id} - {None})
    tensors = _tensors(model)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        w = gguf.GGUFWriter(str(tmp), "gemma3" if gemma else "llama")
        w.add_name(name)
        w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                         "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[ftype])
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_vocab_size(n_rows)
        if gemma:
            gguf_gemma.add_gemma3_hparams(w, cfg)
        else:
            _add_llama_hparams(w, cfg)
        _add_vocab(w, vocab)
        if chat_template is not None:
            w.add_chat_template(chat_template)
        for key, value in (metadata or {}).items():
            w.add_string(META_PREFIX + key, value)
        for tname, data in tensors:
            encoded, qtype = _encoded(tname, data, ftype)
            w.add_tensor(tname, encoded, raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        set_new_file_mode(tmp)
        fsync_file(tmp)
        os.replace(tmp, out)
        fsync_dir(out.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"{out}: cannot be written ({e.strerror or e})",
                         hint=f"check that you may write to {out.parent} and that the disk has "
                              "room for the file") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _add_llama_hparams(w: Any, cfg: Any) -> None:
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads or cfg.num_attention_heads)
    w.add_rope_dimension_count(head_dim)
    if head_dim != cfg.hidden_size // cfg.num_attention_heads:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_rope_freq_base(_rope_theta(cfg))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))


def _add_vocab(w: Any, v: Vocab) -> None:
    w.add_tokenizer_model(v.model)
    w.add_tokenizer_pre(v.pre)
    w.add_token_list(v.tokens)
    if v.scores is not None:
        w.add_token_scores(v.scores)
    w.add_token_types(v.types)
    if v.model == "llama":
        w.add_add_space_prefix(False)  # Gemma's normalizer puts no "▁" before the text
    else:
        w.add_token_merges(v.merges)
    for value, add in ((v.bos, w.add_bos_token_id), (v.eos, w.add_eos_token_id),
                       (v.eot, w.add_eot_token_id), (v.unk, w.add_unk_token_id),
                       (v.pad, w.add_pad_token_id)):
        if value is not None:
            add(int(value))
    w.add_add_bos_token(v.add_bos)
