"""What Gemma 3 (text only, ``Gemma3ForCausalLM``) needs to become a GGUF llama.cpp reads
the same way: its hyper-parameters, its tensors, and its SentencePiece-style vocabulary.

Read in llama.cpp's ``convert_hf_to_gguf.py`` (``Gemma3Model``) and its gemma3 graph:

- The architecture is ``gemma3``. llama.cpp rotates with NeoX RoPE, which is Hugging
  Face's rotate-half layout, so Q and K are written as they are (no permutation).
- Every RMSNorm weight (layer norms, the Q/K norms, the final norm) is stored with the 1
  Gemma adds at run time already added: Hugging Face computes ``x * (1 + w)``, llama.cpp
  ``x * w``.
- llama.cpp fixes some things the Hugging Face config leaves free, so a config that
  differs is refused rather than written to answer differently: the attention scale is
  ``1/sqrt(head_dim)`` (``query_pre_attn_scalar`` must equal ``head_dim``; the 62-layer
  27B uses ``hidden/heads``), sliding and full layers follow one period (every P-th layer
  full), a sliding layer's window counts the current token as Hugging Face's does,
  attention logits are not soft-capped, and with sliding layers the final logits are not
  soft-capped either. RoPE scaling (Gemma 3 4B and up) is not written yet.
- The embedding scale ``sqrt(hidden)`` is applied by both sides; nothing is written.

The vocabulary is written as llama.cpp's SentencePiece tokenizer (``llama``): whole text,
spaces as ``▁``, no prefix space, the pair whose joined text has the highest score merged
first, bytes as ``<0xXX>`` tokens when nothing matches. That equals a Hugging Face
byte-fallback BPE exactly when its merges are every split of every token into two tokens,
ranked token by token; then a token's score is minus the rank of its first merge. This
module checks that property on the whole vocabulary and refuses a tokenizer without it
(a trained BPE whose merges are a subset would split some text differently).

This module writes no file and checks no answers; ``tunelab.models.gguf_write`` writes,
``tunelab.eval.gguf_parity`` checks.
"""

from __future__ import annotations

import re
from typing import Any

from tunelab.errors import ModelError

GEMMA3_ARCHITECTURE = "Gemma3ForCausalLM"
GEMMA3_MODEL_TYPE = "gemma3_text"
SPACE = "\u2581"  # SentencePiece's visible space, "▁"
_BYTE_TOKEN = re.compile(r"^<0x[0-9A-F]{2}>$")
_HINT = "export a Hugging Face folder with `tunelab export RUN --merge OUT` instead"
# llama.cpp's token types (gguf.TokenType)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


class GemmaUnsupportedError(ModelError):
    """A Gemma 3 model or tokenizer llama.cpp would not run the same way."""

    def __init__(self, message: str) -> None:
        super().__init__(message, hint=_HINT)


def swa_period(cfg: Any) -> int:
    """P such that layer ``i`` is full attention exactly when ``i % P == P - 1``.

    Raises:
        GemmaUnsupportedError: the layer types follow no such period (llama.cpp's only form).
    """
    types = list(getattr(cfg, "layer_types", None) or [])
    n = int(cfg.num_hidden_layers)
    if len(types) != n or set(types) - {"sliding_attention", "full_attention"}:
        raise GemmaUnsupportedError(f"layer_types {types!r} is not one type per layer")
    full = [i for i, t in enumerate(types) if t == "full_attention"]
    period = full[0] + 1 if full else n + 1  # no full layer: a period longer than the model
    expected = ["full_attention" if i % period == period - 1 else "sliding_attention"
                for i in range(n)]
    if types != expected:
        raise GemmaUnsupportedError(
            f"the layers' sliding/full pattern {types} is not periodic (every P-th layer "
            "full), the only form llama.cpp's gemma3 reads")
    return period


def _rope(cfg: Any, kind: str) -> dict:
    params = getattr(cfg, "rope_parameters", None) or {}
    return dict(params.get(kind) or {})


def check_gemma3(cfg: Any) -> None:
    """Refuse a Gemma 3 config whose arithmetic llama.cpp's gemma3 would not reproduce.

    Raises:
        GemmaUnsupportedError: naming the setting and its value.
    """
    problems = []
    if getattr(cfg, "model_type", "") != GEMMA3_MODEL_TYPE:
        problems.append(f"model_type {getattr(cfg, 'model_type', None)!r} (expected "
                        f"{GEMMA3_MODEL_TYPE!r}, the text-only Gemma 3)")
    if getattr(cfg, "use_bidirectional_attention", False):
        problems.append("use_bidirectional_attention (an embedding model, not a causal LM)")
    if getattr(cfg, "attn_logit_softcapping", None) is not None:
        problems.append(f"attn_logit_softcapping={cfg.attn_logit_softcapping} (llama.cpp's "
                        "gemma3 does not soft-cap attention)")
    if getattr(cfg, "final_logit_softcapping", None) is not None:
        problems.append(f"final_logit_softcapping={cfg.final_logit_softcapping} (llama.cpp's "
                        "gemma3 ignores it when layers slide)")
    if getattr(cfg, "attention_bias", False):
        problems.append("attention_bias=True (llama.cpp's gemma3 has no attention biases)")
    if getattr(cfg, "hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
        problems.append(f"hidden_activation={cfg.hidden_activation!r} (llama.cpp uses tanh GELU)")
    if not getattr(cfg, "sliding_window", None):
        problems.append(f"sliding_window={getattr(cfg, 'sliding_window', None)!r}")
    for kind in ("full_attention", "sliding_attention"):
        rope_type = _rope(cfg, kind).get("rope_type", "default")
        if rope_type not in ("default", None):
            problems.append(f"{kind} RoPE scaling {rope_type!r} (not written yet)")
    head_dim = int(cfg.head_dim)
    # llama.cpp: 1/sqrt(head_dim), except the 62-layer 27B: 1/sqrt(hidden/heads)
    scalar = (cfg.hidden_size // cfg.num_attention_heads if cfg.num_hidden_layers == 62
              else head_dim)
    if float(cfg.query_pre_attn_scalar) != float(scalar):
        problems.append(f"query_pre_attn_scalar={cfg.query_pre_attn_scalar} (llama.cpp scales "
                        f"queries by 1/sqrt({scalar}))")
    try:
        if swa_period(cfg) != 6:  # llama.cpp's gemma3 loader fixes the period at 6
            problems.append(f"a sliding/full period of {swa_period(cfg)} (llama.cpp runs every "
                            "Gemma 3 with 6)")
    except GemmaUnsupportedError as e:
        problems.append(e.message)
    local_base = float(_rope(cfg, "sliding_attention").get("rope_theta", 10_000.0))
    if local_base != 10_000.0:  # ... and the local RoPE base at 10000, whatever the file says
        problems.append(f"a local RoPE base of {local_base:g} (llama.cpp runs every Gemma 3 "
                        "with 10000)")
    if problems:
        raise GemmaUnsupportedError("this Gemma 3 cannot be written as a GGUF llama.cpp runs the "
                                    "same way: " + "; ".join(problems))


def add_gemma3_hparams(w: Any, cfg: Any) -> None:
    """Write the ``gemma3.*`` keys (``w``: a ``gguf.GGUFWriter`` for arch ``gemma3``)."""
    w.add_context_length(int(cfg.max_position_embeddings))
    w.add_embedding_length(int(cfg.hidden_size))
    w.add_block_count(int(cfg.num_hidden_layers))
    w.add_feed_forward_length(int(cfg.intermediate_size))
    w.add_head_count(int(cfg.num_attention_heads))
    w.add_head_count_kv(int(cfg.num_key_value_heads or cfg.num_attention_heads))
    w.add_key_length(int(cfg.head_dim))
    w.add_value_length(int(cfg.head_dim))
    w.add_rope_freq_base(float(_rope(cfg, "full_attention").get("rope_theta", 1_000_000.0)))
    # llama.cpp's loader ignores these two (it fixes 10000 and 6; check_gemma3 refuses
    # others), but other readers of the file may not.
    w.add_rope_freq_base_swa(float(_rope(cfg, "sliding_attention").get("rope_theta", 10_000.0)))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_sliding_window(int(cfg.sliding_window))
    w.add_sliding_window_pattern(swa_period(cfg))


def norm_shift(hf_name: str) -> float:
    """What to add to a Gemma 3 tensor before writing: 1 for every RMSNorm weight."""
    return 1.0 if hf_name.endswith("norm.weight") else 0.0


def spm_vocab(data: dict, n_rows: int) -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types for llama.cpp's SentencePiece tokenizer.

    Args:
        data: the tokenizer's ``tokenizer.json`` (a byte-fallback BPE over ``▁``-spaced text).
        n_rows: the model's embedding rows (one token each; the rest are unused padding).

    Raises:
        GemmaUnsupportedError: the tokenizer would split some text differently in llama.cpp.
    """
    _check_shape(data)
    model = data["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    merges = [tuple(m) if not isinstance(m, str) else tuple(m.split(" ")) for m in model["merges"]]
    added = {a["id"]: a for a in data.get("added_tokens", [])}
    first = _merge_ranks(vocab, merges, {a["content"] for a in added.values()})
    missing = [f"<0x{b:02X}>" for b in range(256) if f"<0x{b:02X}>" not in vocab]
    if missing:
        raise GemmaUnsupportedError(f"the vocabulary lacks byte tokens {missing[:4]}..., which "
                                    "llama.cpp needs to spell text it has no token for")
    for a in added.values():
        if a.get("normalized") or a.get("lstrip") or a.get("rstrip") or a.get("single_word"):
            raise GemmaUnsupportedError(
                f"the added token {a['content']!r} is matched with options llama.cpp does not "
                "have (normalized, lstrip, rstrip or single_word)")
        vocab[a["content"]] = a["id"]
    if max(vocab.values()) >= n_rows:
        raise GemmaUnsupportedError(f"the tokenizer has ids up to {max(vocab.values())} but the "
                                    f"model only {n_rows} embedding rows")
    unk = model.get("unk_token")
    tokens = [f"[PAD{i}]" for i in range(n_rows)]
    scores = [0.0] * n_rows
    types = [UNUSED] * n_rows
    for text, i in vocab.items():
        tokens[i] = text
        # a merge's rank orders it; tokens no merge makes never compete, so 0 is arbitrary
        scores[i] = -float(first[text]) if text in first else 0.0
        a = added.get(i)
        if text == unk:
            types[i] = UNKNOWN
        elif a is not None:
            types[i] = CONTROL if a.get("special") else USER_DEFINED
        elif _BYTE_TOKEN.match(text):
            types[i] = BYTE
        else:
            types[i] = NORMAL
    return tokens, scores, types


def _check_shape(data: dict) -> None:
    model = data.get("model") or {}
    wrong = []
    if model.get("type") != "BPE" or not model.get("byte_fallback"):
        wrong.append(f"model {model.get('type')} (byte_fallback={model.get('byte_fallback')})")
    if model.get("ignore_merges") or model.get("dropout") or model.get("continuing_subword_prefix") \
            or model.get("end_of_word_suffix"):
        wrong.append("BPE options llama.cpp lacks (ignore_merges, dropout or affixes)")
    if data.get("normalizer") != {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}:
        wrong.append(f"normalizer {data.get('normalizer')} (expected spaces replaced by ▁, "
                     "nothing prepended)")
    pre = data.get("pre_tokenizer")
    # Splitting at " " after the normalizer removed every " " splits nothing.
    if pre is not None and not (pre.get("type") == "Split" and pre.get("pattern") == {"String": " "}):
        wrong.append(f"pre-tokenizer {pre}")
    if wrong:
        raise GemmaUnsupportedError("the tokenizer is not the SentencePiece-style BPE llama.cpp "
                                    "reproduces: " + "; ".join(wrong))


def _merge_ranks(vocab: dict[str, int], merges: list[tuple[str, ...]],
                 added: set[str]) -> dict[str, int]:
    """Each merged token's first merge rank, after checking that llama.cpp's rule (merge
    the best-scored pair whose join is a token) picks the same pairs as these merges."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    count: dict[str, int] = {}
    pairs = set()
    for r, m in enumerate(merges):
        if len(m) != 2 or m[0] + m[1] not in vocab:
            raise GemmaUnsupportedError(f"merge {m!r} does not make a token of the vocabulary")
        t = m[0] + m[1]
        first.setdefault(t, r)
        last[t] = r
        count[t] = count.get(t, 0) + 1
        pairs.add(m)
    split = [t for t in first if last[t] - first[t] + 1 != count[t]]
    if split:
        raise GemmaUnsupportedError(
            f"the merges making {split[0]!r} are not ranked together, so no one score per token "
            "orders them as the BPE does")
    for t in vocab:
        if t in added:
            continue  # matched whole before either side merges anything
        for k in range(1, len(t)):
            left, right = t[:k], t[k:]
            # llama.cpp's symbols are tokens or single characters (tokens or not)
            if (left in vocab or k == 1) and (right in vocab or len(right) == 1) \
                    and (left, right) not in pairs:
                raise GemmaUnsupportedError(
                    f"the BPE never merges {left!r} + {right!r} although {t!r} is a token; "
                    "llama.cpp's SentencePiece would, and split such text differently")
    return first
