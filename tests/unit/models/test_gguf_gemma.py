"""Tiny Gemma 3 text models written as GGUF read back through transformers with the same
greedy answers; the file says what llama.cpp's gemma3 needs (norms + 1, sliding window
and its period, both RoPE bases, a SentencePiece vocabulary with scores and token types);
what llama.cpp would run differently is refused, with no file left behind."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tunelab.eval.gguf_parity import HfGreedy, compare, reference_answers
from tunelab.models.gguf_gemma import BYTE, CONTROL, NORMAL, UNKNOWN, spm_vocab
from tunelab.models.gguf_write import UnsupportedModelError, write_gguf

GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>"
    "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
WORDS = ("the quick brown fox jumps over lazy dog where is my parcel invoice charged twice "
         "reset password app crashes when open settings refund payment please change account "
         "email tracking number model user hello").split()
PROMPTS = ["Where is my parcel?", "my invoice was charged twice", "reset my password",
           "The app crashes when I open settings", "0 1 2 3 + 4", "the quick brown fox",
           "refund  the   payment\n\nplease", "change the account email", "tracking number 42",
           "lazy dog \u00e9t\u00e9 \u4f60\u597d"]


def make_gemma_tokenizer():
    """A SentencePiece-style byte-fallback BPE as transformers builds Gemma's from a GGUF:
    merges are every split of every token, ranked by the token's position."""
    from tokenizers import AddedToken
    from transformers import GemmaTokenizer
    from transformers.tokenization_utils_base import generate_merges

    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    tokens += ["\n", "\u2581"] + list("abcdefghijklmnopqrstuvwxyzTWR0123456789.,?!+'")
    grown = ["\n\n", "\u2581\u2581", "\u2581\u2581\u2581"]
    for w in WORDS:  # every prefix, so each token splits into two tokens
        piece = "\u2581" + w
        grown += [piece[:k] for k in range(2, len(piece) + 1)]
    tokens += sorted(dict.fromkeys(t for t in grown if t not in tokens), key=len)
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = generate_merges(vocab, {t: -i for t, i in vocab.items()})
    tok = GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)
    tok.add_special_tokens({"additional_special_tokens": [
        AddedToken(t, normalized=False, special=True) for t in ("<start_of_turn>", "<end_of_turn>")]})
    tok.chat_template = GEMMA_TEMPLATE
    return tok


def make_gemma_model(tok, seed=0, **overrides):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    # head_dim and query_pre_attn_scalar at Gemma 3's 256: transformers' GGUF reader
    # assumes it; 6 layers so layer 5 is a full-attention one; a window of 4 tokens so the
    # prompts outrun it.
    cfg = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=6,
               num_attention_heads=2, num_key_value_heads=1, head_dim=256, sliding_window=4,
               max_position_embeddings=256, pad_token_id=tok.pad_token_id,
               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(Gemma3TextConfig(**{**cfg, **overrides}))
    with torch.no_grad():  # the default init answers one token whatever the prompt
        for p in model.parameters():
            p.normal_(0.0, 0.3 if p.dim() == 1 else 0.5 / p.shape[-1] ** 0.25)
    return model.eval()


def _read_back(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tiny():
    tok = make_gemma_tokenizer()
    return tok, make_gemma_model(tok)


def _prompts(tok):
    return [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                    tokenize=True, return_dict=True)["input_ids"] for p in PROMPTS]


def test_tiny_gemma3_f32_reads_back_with_the_same_answers(tmp_path, tiny):
    from gguf import GGUFReader

    tok, model = tiny
    stop = frozenset({tok.eos_token_id, tok.convert_tokens_to_ids("<end_of_turn>")})
    out = write_gguf(model, tok, tmp_path / "g.gguf", ftype="f32", chat_template=GEMMA_TEMPLATE,
                     name="tiny-gemma", stop_ids=set(stop))
    prompts = _prompts(tok)
    assert max(map(len, prompts)) > 4 * 2  # past the sliding window
    ref = reference_answers(HfGreedy(model), prompts, 24, stop)
    assert len({tuple(a) for a in ref.answers}) > 3  # the answers depend on the prompt
    report = compare(ref, HfGreedy(_read_back(out)), "transformers", "f32")
    assert report.identical == report.prompts, report.summary()
    assert report.max_logprob_diff < 1e-4
    assert sorted(os.listdir(tmp_path)) == ["g.gguf"]

    r = GGUFReader(str(out))
    f = {k: v.contents() for k, v in r.fields.items() if not k.startswith("GGUF.")}
    assert f["general.architecture"] == "gemma3"
    assert f["gemma3.attention.sliding_window"] == 4
    assert f["gemma3.attention.sliding_window_pattern"] == 6
    assert f["gemma3.rope.freq_base"] == 1_000_000.0 and f["gemma3.rope.freq_base_swa"] == 10_000.0
    assert f["gemma3.attention.key_length"] == 256
    assert f["tokenizer.ggml.model"] == "llama" and f["tokenizer.ggml.add_space_prefix"] is False
    assert f["tokenizer.ggml.add_bos_token"] is True
    assert f["tokenizer.ggml.eot_token_id"] == tok.convert_tokens_to_ids("<end_of_turn>")
    assert f["tokenizer.chat_template"] == GEMMA_TEMPLATE
    assert len(f["tokenizer.ggml.scores"]) == len(f["tokenizer.ggml.tokens"]) == len(tok)
    tensors = {t.name: t for t in r.tensors}
    assert "output.weight" not in tensors  # tied: llama.cpp reads token_embd
    norm = np.asarray(tensors["blk.0.attn_q_norm.weight"].data)
    assert np.allclose(norm, model.model.layers[0].self_attn.q_norm.weight.detach().numpy() + 1)
    q = np.asarray(tensors["blk.0.attn_q.weight"].data)  # NeoX RoPE: rows not permuted
    assert np.array_equal(q, model.model.layers[0].self_attn.q_proj.weight.detach().numpy())


def test_the_vocabulary_scores_follow_the_merge_order_and_types_are_marked(tiny):
    import json

    tok, _ = tiny
    data = json.loads(tok.backend_tokenizer.to_str())
    tokens, scores, types = spm_vocab(data, len(tok) + 3)
    assert tokens[-1] == f"[PAD{len(tok) + 2}]"
    ids = {t: i for i, t in enumerate(tokens)}
    assert types[ids["<0x0A>"]] == BYTE and types[ids["<unk>"]] == UNKNOWN
    assert types[ids["<end_of_turn>"]] == CONTROL and types[ids["\u2581parcel"]] == NORMAL
    # shorter tokens merge first: "▁p" before "▁pa" before "▁par"
    assert scores[ids["\u2581p"]] > scores[ids["\u2581pa"]] > scores[ids["\u2581par"]]


def test_a_bpe_whose_merges_llama_cpp_would_not_follow_is_refused(tmp_path, tiny):
    import json

    from tunelab.models.gguf_gemma import GemmaUnsupportedError

    tok, _ = tiny
    data = json.loads(tok.backend_tokenizer.to_str())
    merges = data["model"]["merges"]
    data["model"]["merges"] = [m for m in merges if m != ["\u2581pa", "r"]]
    with pytest.raises(GemmaUnsupportedError, match="never merges '▁pa' \\+ 'r'"):
        spm_vocab(data, len(tok))
    data["model"]["merges"] = merges
    data["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"}, data["normalizer"]]}
    with pytest.raises(GemmaUnsupportedError, match="normalizer"):
        spm_vocab(data, len(tok))


@pytest.mark.parametrize(("override", "named"), [
    ({"query_pre_attn_scalar": 64}, "query_pre_attn_scalar=64"),
    ({"attn_logit_softcapping": 50.0}, "attn_logit_softcapping=50.0"),
    ({"final_logit_softcapping": 30.0}, "final_logit_softcapping=30.0"),
    ({"layer_types": ["sliding_attention", "full_attention", "full_attention",
                      "sliding_attention", "sliding_attention", "full_attention"]}, "not periodic"),
    ({"rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0,
                                             "rope_theta": 1e6},
                          "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}},
     "RoPE scaling 'linear'"),
    # llama.cpp's gemma3 loader fixes the period at 6 and the local RoPE base at 10000
    ({"layer_types": ["sliding_attention"] * 3 + ["full_attention"]
      + ["sliding_attention"] * 3 + ["full_attention"], "num_hidden_layers": 8},
     "a sliding/full period of 4"),
    ({"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                          "sliding_attention": {"rope_type": "default", "rope_theta": 5e4}}},
     "a local RoPE base of 50000"),
])
def test_a_gemma3_llama_cpp_would_run_differently_is_refused(tmp_path, tiny, override, named):
    tok, _ = tiny
    model = make_gemma_model(tok, **{"num_hidden_layers": 6, "hidden_size": 32, **override})
    with pytest.raises(UnsupportedModelError, match="cannot be written as a GGUF") as e:
        write_gguf(model, tok, tmp_path / "g.gguf", chat_template=GEMMA_TEMPLATE, name="g")
    assert named in e.value.message and "--merge" in e.value.hint
    assert os.listdir(tmp_path) == []
