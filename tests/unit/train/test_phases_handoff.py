"""Handing a model from phase to phase: continue an adapter, or merge it first."""

import torch

from tunelab.config.schema import FreezeSettings, LoraSettings
from tunelab.models import adapters
from tunelab.train.phases import hand_over, is_adapter_model


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def trained_lora(model, lora):
    m = adapters.apply_lora(model, lora)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.add_(0.05)  # a trained adapter is not the identity
    return m


def test_same_lora_settings_continue_the_adapter(tiny_model):
    lora = LoraSettings(r=4, alpha=8)
    m = trained_lora(tiny_model, lora)
    out, how = hand_over(m, "lora", lora, lora, lambda x: adapters.apply_lora(x, lora))
    assert out is m and "continues" in how


def test_lora_to_full_merges_and_keeps_the_function(tiny_model):
    lora = LoraSettings(r=4, alpha=8)
    m = trained_lora(tiny_model, lora)
    ids = torch.tensor([[1, 5, 9, 12, 7]])
    before = logits(m, ids)
    out, how = hand_over(m, "full", lora, lora, adapters.apply_full)
    assert not is_adapter_model(out) and "merged" in how
    assert all(p.requires_grad for p in out.parameters())
    assert torch.allclose(logits(out, ids), before, atol=1e-5)


def test_new_rank_merges_then_attaches_a_fresh_adapter(tiny_model):
    old, new = LoraSettings(r=4, alpha=8), LoraSettings(r=2, alpha=4)
    m = trained_lora(tiny_model, old)
    ids = torch.tensor([[3, 4, 5]])
    before = logits(m, ids)
    out, how = hand_over(m, "lora", new, old, lambda x: adapters.apply_lora(x, new))
    assert is_adapter_model(out) and "merged" in how
    assert torch.allclose(logits(out, ids), before, atol=1e-5)  # a fresh adapter adds zero


def test_full_to_freeze_attaches_on_the_weights(tiny_model):
    out, how = hand_over(tiny_model, "freeze", LoraSettings(), None,
                         lambda x: adapters.apply_freeze(x, FreezeSettings(last_k_blocks=1)))
    assert out is tiny_model and "freeze" in how
    assert {n for n, p in out.named_parameters() if p.requires_grad} and \
        not any(p.requires_grad for n, p in out.named_parameters() if ".layers.0." in n)
