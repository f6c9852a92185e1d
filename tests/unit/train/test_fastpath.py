"""The fast training path computes exactly what the reference path computes.

Reference: the rows right-padded into one batch, the model's own full-vocabulary logits
and ``F.cross_entropy`` over the answer tokens, peft's own LoRA forward. Fast: the same
rows packed into one padding-free sequence, packed attention, the fused LoRA linear and
the chunked head + cross-entropy. Loss and every gradient agree within 1e-5.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers.models.llama import modeling_llama

from tunelab.data.example import Example, Message
from tunelab.data.template import IGNORE_INDEX, tokenize_example
from tunelab.train import loss as loss_mod
from tunelab.train.batching import collate, pack
from tunelab.train.fastpath import (
    PACKED_ATTENTION,
    fast_training,
    is_packed,
    supports_packing,
)
from tunelab.train.kernels import _fast_rotary, _RmsNorm
from tunelab.train.loss import batch_loss_sum, linear_cross_entropy

TOL = 1e-5


def make_rows(tok, n=5):
    exs = []
    for i in range(n):
        user = " ".join(f"word{(i * 7 + j) % 50}" for j in range(3 + 5 * i))
        answer = " ".join(f"team{(i + j) % 9}" for j in range(2 + 3 * (i % 3)))
        exs.append(Example([Message("user", user), Message("assistant", answer)]))
    return [tokenize_example(tok, e) for e in exs]


def reference_loss(model, rows, pad_id):
    """Full logits of the padded batch, mean cross-entropy over answer tokens."""
    mb = collate(rows, list(range(len(rows))), pad_id)
    logits = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits
    lg = logits[:, :-1].reshape(-1, logits.shape[-1])
    tg = mb.labels[:, 1:].reshape(-1)
    return F.cross_entropy(lg.float(), tg, ignore_index=IGNORE_INDEX, reduction="sum") / (tg != IGNORE_INDEX).sum()


def fast_loss(model, rows, **kw):
    with fast_training(model, **kw) as fp:
        assert fp.packing == supports_packing(model)
        mb = pack(rows, list(range(len(rows))))
        s, n, _ = batch_loss_sum(model, mb)
        return s / n, fp


def grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(ref_model, ref_loss, fast_model, f_loss):
    assert float(f_loss) == pytest.approx(float(ref_loss), abs=TOL)
    g_ref, g_fast = grads(ref_model), grads(fast_model)
    assert g_ref and g_ref.keys() == g_fast.keys()
    for name in g_ref:
        diff = (g_ref[name] - g_fast[name]).abs().max().item()
        assert diff <= TOL, f"{name}: gradients differ by {diff}"


def lora(model, dropout=0.0):
    from peft import LoraConfig, get_peft_model

    m = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                                         target_modules="all-linear", task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    with torch.no_grad():  # peft starts B at zero; make the adapter's path matter
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    return m


def tiny_of_type(kind, tok):
    import transformers as tf

    common = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  tie_word_embeddings=True, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    if kind == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(**common))
    if kind == "mistral":
        return tf.MistralForCausalLM(tf.MistralConfig(**common, sliding_window=None))
    if kind == "qwen2":
        return tf.Qwen2ForCausalLM(tf.Qwen2Config(**common))
    if kind == "qwen3":
        return tf.Qwen3ForCausalLM(tf.Qwen3Config(**common, head_dim=8))
    if kind == "gemma3_text":  # one sliding-window layer of 6 keys: rows are longer than that
        return tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(**common, head_dim=8, sliding_window=6,
                                                        layer_types=["sliding_attention", "full_attention"]))
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["llama", "mistral", "qwen2", "qwen3", "gemma3_text"])
def test_packed_fused_lora_equals_padded_peft(kind, tiny_tokenizer):
    model = lora(tiny_of_type(kind, tiny_tokenizer))
    rows = make_rows(tiny_tokenizer)
    assert max(len(r) for r in rows) > 6 and len({len(r) for r in rows}) > 1
    ref, fast = model, copy.deepcopy(model)
    ref_l = reference_loss(ref, rows, tiny_tokenizer.pad_token_id)
    ref_l.backward()
    f_l, fp = fast_loss(fast, rows)
    f_l.backward()
    assert fp.packing and fp.fused_lora_layers == 14  # 7 linears x 2 layers
    assert fp.lean_mlps == (0 if kind == "gemma3_text" else 2)
    # 2 per layer and the final norm; Qwen3 also normalizes q and k; Gemma's norm differs.
    assert fp.lean_norms == {"gemma3_text": 0, "qwen3": 9}.get(kind, 5)
    assert fp.fast_rotary
    assert_same(ref, ref_l, fast, f_l)


def test_full_finetune_with_tied_head_equals_reference(tiny_tokenizer, tiny_model):
    """The chunked head computes the (tied) head weight's gradient too."""
    rows = make_rows(tiny_tokenizer)
    ref, fast = tiny_model, copy.deepcopy(tiny_model)
    ref_l = reference_loss(ref, rows, tiny_tokenizer.pad_token_id)
    ref_l.backward()
    f_l, fp = fast_loss(fast, rows)
    f_l.backward()
    assert fp.packing and fp.fused_lora_layers == 0
    assert_same(ref, ref_l, fast, f_l)


def test_lora_dropout_is_fused_with_the_same_masks(tiny_tokenizer, tiny_model):
    model = lora(tiny_model, dropout=0.3)
    model.train()
    rows = make_rows(tiny_tokenizer)
    ref, fast = model, copy.deepcopy(model)
    mb = pack(rows, list(range(len(rows))))
    # Same packed input for both: only the LoRA computation differs.
    with fast_training(ref, fused_lora=False):
        torch.manual_seed(5)
        s, n, _ = batch_loss_sum(ref, mb)
        ref_l = s / n
    ref_l.backward()
    with fast_training(fast) as fp:
        assert fp.fused_lora_layers == 14
        torch.manual_seed(5)
        s, n, _ = batch_loss_sum(fast, mb)
        f_l = s / n
    f_l.backward()
    assert_same(ref, ref_l, fast, f_l)


def test_packed_loss_equals_the_rows_unpacked_one_by_one(tiny_tokenizer, tiny_model):
    """No token sees another row: each row's loss is what it is on its own."""
    rows = make_rows(tiny_tokenizer)
    with torch.no_grad():
        sums = []
        for r in rows:
            mb = collate([r], [0], tiny_tokenizer.pad_token_id)
            s, _, _ = batch_loss_sum(tiny_model, mb)
            sums.append(float(s))
        packed, _ = fast_loss(tiny_model, rows)
    total = sum(r.num_loss_tokens for r in rows)
    assert float(packed) == pytest.approx(sum(sums) / total, abs=TOL)


def test_linear_cross_entropy_in_several_chunks(monkeypatch):
    torch.manual_seed(0)
    h = torch.randn(37, 16, requires_grad=True)
    w = torch.randn(50, 16, requires_grad=True)
    t = torch.randint(0, 50, (37,))
    monkeypatch.setattr(loss_mod, "CHUNK_ELEMENTS", 50 * 5)  # chunks of 16 rows (the minimum)
    s, correct = linear_cross_entropy(h, w, t)
    (s * 0.5).backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    logits = h @ w.t()
    ref = F.cross_entropy(logits, t, reduction="sum")
    (ref * 0.5).backward()
    assert float(s) == pytest.approx(float(ref), rel=1e-6)
    assert correct == int((logits.argmax(-1) == t).sum())
    assert torch.allclose(gh, h.grad, atol=TOL) and torch.allclose(gw, w.grad, atol=TOL)


def test_pack_layout(tiny_tokenizer):
    rows = make_rows(tiny_tokenizer, 3)
    mb = pack(rows, [4, 5, 6])
    lens = [len(r) for r in rows]
    assert mb.input_ids.shape == (1, sum(lens)) and mb.packed
    assert mb.cu_seqlens.tolist() == [0, lens[0], lens[0] + lens[1], sum(lens)]
    assert mb.position_ids[0, lens[0]].item() == 0 and mb.position_ids[0, lens[0] - 1].item() == lens[0] - 1
    # No row's first token is a target of the previous row's last token.
    for b in mb.cu_seqlens.tolist()[:-1]:
        assert mb.labels[0, b].item() == IGNORE_INDEX
    assert mb.num_loss_tokens == sum(r.num_loss_tokens for r in rows)
    assert mb.num_tokens == sum(lens) and mb.row_ids == [4, 5, 6]


def test_fast_training_restores_the_model(tiny_tokenizer, tiny_model):
    model = lora(tiny_model)
    original_rotary = modeling_llama.apply_rotary_pos_emb
    before = model.base_model.model.config._attn_implementation
    with fast_training(model):
        assert is_packed(model)
        assert model.base_model.model.config._attn_implementation == PACKED_ATTENTION
        assert modeling_llama.apply_rotary_pos_emb is not original_rotary
    assert model.base_model.model.config._attn_implementation == before
    assert not is_packed(model)
    assert all("forward" not in m.__dict__ for m in model.modules())  # LoRA linears, MLPs, norms
    assert modeling_llama.apply_rotary_pos_emb is original_rotary


def test_lean_rmsnorm_matches_the_library_with_gradients():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(0)
    ref = LlamaRMSNorm(24, eps=1e-5)
    ref.weight.data.uniform_(0.5, 1.5)
    x = (torch.randn(2, 7, 24) * 3).requires_grad_()
    g = torch.randn(2, 7, 24)
    ref(x).backward(g)
    gx, gw = x.grad.clone(), ref.weight.grad.clone()
    x.grad = ref.weight.grad = None
    y = _RmsNorm.apply(x, ref.weight, 1e-5)
    y.backward(g)
    with torch.no_grad():
        assert torch.allclose(y, ref(x), atol=TOL)
    assert torch.allclose(x.grad, gx, atol=TOL) and torch.allclose(ref.weight.grad, gw, atol=TOL)


def test_half_wise_rotary_matches_the_library_with_gradients():
    torch.manual_seed(0)
    # q and k as the attention module makes them: (batch, heads, tokens, dim) views of
    # (batch, tokens, heads, dim); cos and sin with unequal halves, to test the general form.
    q = torch.randn(1, 6, 4, 8).transpose(1, 2).requires_grad_()
    k = torch.randn(1, 6, 2, 8).transpose(1, 2).requires_grad_()
    cos, sin = torch.randn(1, 6, 8), torch.randn(1, 6, 8)
    gq, gk = torch.randn(1, 4, 6, 8), torch.randn(1, 2, 6, 8)
    original = modeling_llama.apply_rotary_pos_emb
    rq, rk = original(q, k, cos, sin)
    torch.autograd.backward([rq, rk], [gq, gk])
    ref_gq, ref_gk = q.grad.clone(), k.grad.clone()
    q.grad = k.grad = None
    fq, fk = _fast_rotary(original)(q, k, cos, sin)
    assert fq.stride() == q.stride()  # the projections' layout, no copy into another
    torch.autograd.backward([fq, fk], [gq, gk])
    assert torch.allclose(fq, rq, atol=TOL) and torch.allclose(fk, rk, atol=TOL)
    assert torch.allclose(q.grad, ref_gq, atol=TOL) and torch.allclose(k.grad, ref_gk, atol=TOL)
    # Other dtypes go to the library's function.
    hq, hk = _fast_rotary(original)(q.detach().double(), k.detach().double(), cos.double(), sin.double())
    assert torch.allclose(hq, original(q.double(), k.double(), cos.double(), sin.double())[0])


def test_packing_off_or_unsupported_falls_back_to_padding(tiny_tokenizer, tiny_model):
    with fast_training(tiny_model, packing=False) as fp:
        assert not fp.packing and not is_packed(tiny_model)
    tiny_model.config.model_type = "some_new_arch"
    tiny_model.config.__class__ = type("C", (type(tiny_model.config),), {"model_type": "some_new_arch"})
    assert not supports_packing(tiny_model)
    with fast_training(tiny_model) as fp:
        assert not fp.packing
