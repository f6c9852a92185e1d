"""merge_adapter: the merged folder behaves like base + adapter, with plain transformers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunelab.errors import ModelError, StoreError
from tunelab.models.export import adapter_vocab_size, merge_adapter

PROMPTS = [
    "My invoice was charged twice",
    "The app crashes when I open",
    "Where is my parcel?",
    "<|im_start|>user\nreset my password<|im_end|>\n<|im_start|>assistant\n",
    "0 1 2 3",
]


def _lora_model(base_dir: Path, tokenizer=None, seed: int = 1, new_token_rows: bool = False):
    """A peft LoRA model on the tiny base whose lora_B is random, so merging changes weights.

    With ``tokenizer``, the embeddings are resized to it first (added special tokens);
    ``new_token_rows`` trains the added rows with peft's trainable-token deltas.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    old_rows = base.get_input_embeddings().weight.shape[0]
    extra = {}
    if tokenizer is not None and len(tokenizer) != old_rows:
        base.resize_token_embeddings(len(tokenizer))
        if new_token_rows:
            extra["trainable_token_indices"] = {
                "embed_tokens": list(range(old_rows, len(tokenizer)))
            }
    cfg = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
        **extra,
    )
    model = get_peft_model(base, cfg)
    model.eval()
    return model


def _assert_same_behaviour(reference, merged, tokenizer):
    for prompt in PROMPTS:
        enc = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            ref_logits = reference(**enc).logits
            got_logits = merged(**enc).logits
        torch.testing.assert_close(got_logits, ref_logits, atol=1e-5, rtol=0)
        kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        ref_ids = reference.generate(**enc, **kwargs)
        got_ids = merged.generate(**enc, **kwargs)
        assert torch.equal(ref_ids, got_ids), prompt


def test_merged_model_matches_the_adapter_model(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    peft_model = _lora_model(tiny_model_dir)
    peft_model.save_pretrained(tmp_path / "adapter")

    out = merge_adapter(tiny_model_dir, tmp_path / "adapter", tmp_path / "merged")
    assert out == tmp_path / "merged"
    assert (out / "config.json").is_file() and any(out.glob("*.safetensors"))
    assert not (out / "adapter_config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "merged"]  # no temp dirs

    merged = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(merged).__name__ == "LlamaForCausalLM"
    _assert_same_behaviour(peft_model, merged, tokenizer)

    # merging mattered: the merged model is not the base model
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    enc = tokenizer(PROMPTS[0], return_tensors="pt")
    with torch.no_grad():
        assert (base(**enc).logits - merged(**enc).logits).abs().max() > 1e-3


@pytest.mark.parametrize("new_token_rows", [False, True], ids=["resized", "trainable-tokens"])
def test_resized_vocab_is_restored_before_merging(tiny_model_dir, tmp_path, new_token_rows):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|tool|>", "<|think|>"]})
    peft_model = _lora_model(tiny_model_dir, tokenizer=tokenizer, new_token_rows=new_token_rows)
    with torch.no_grad():  # a train-like change to the new rows, which the merge must keep
        deltas = [p for n, p in peft_model.named_parameters() if "trainable_tokens_delta" in n]
        if new_token_rows:
            assert deltas
            for delta in deltas:
                delta += torch.randn_like(delta)
        else:
            peft_model.get_input_embeddings().weight[-2] += 0.5
            peft_model.get_input_embeddings().weight[-1] -= 0.3  # distinct: no argmax ties
    peft_model.save_pretrained(tmp_path / "adapter")
    tokenizer.save_pretrained(tmp_path / "adapter")
    assert adapter_vocab_size(tmp_path / "adapter") == len(tokenizer)

    out = merge_adapter(tiny_model_dir, tmp_path / "adapter", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    merged_tok = AutoTokenizer.from_pretrained(out)
    assert len(merged_tok) == len(tokenizer)
    assert merged.get_input_embeddings().weight.shape[0] == len(tokenizer)
    _assert_same_behaviour(peft_model, merged, merged_tok)
    enc = merged_tok("<|tool|> billing <|think|>", return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(
            merged(**enc).logits, peft_model(**enc).logits, atol=1e-5, rtol=0
        )


def test_existing_output_is_not_overwritten(tiny_model_dir, tmp_path):
    _lora_model(tiny_model_dir).save_pretrained(tmp_path / "adapter")
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "keep.txt").write_text("mine")
    with pytest.raises(StoreError, match="already exists"):
        merge_adapter(tiny_model_dir, tmp_path / "adapter", tmp_path / "merged")
    assert (tmp_path / "merged" / "keep.txt").read_text() == "mine"

    merge_adapter(tiny_model_dir, tmp_path / "adapter", tmp_path / "merged", overwrite=True)
    assert not (tmp_path / "merged" / "keep.txt").exists()
    assert (tmp_path / "merged" / "config.json").is_file()


def test_not_an_adapter_folder(tiny_model_dir, tmp_path):
    with pytest.raises(ModelError, match="adapter_config.json"):
        merge_adapter(tiny_model_dir, tiny_model_dir, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_adapter_for_another_base_leaves_no_output(tiny_model_dir, tmp_path):
    from tiny import make_tiny_model, make_tiny_tokenizer

    # an adapter trained on a wider model (hidden 64) cannot apply to the hidden-32 base
    other = tmp_path / "other"
    tok = make_tiny_tokenizer()
    make_tiny_model(tok, hidden=64).save_pretrained(other)
    tok.save_pretrained(other)
    _lora_model(other).save_pretrained(tmp_path / "adapter")

    with pytest.raises(ModelError, match="cannot apply the adapter"):
        merge_adapter(tiny_model_dir, tmp_path / "adapter", tmp_path / "merged")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "other"]
