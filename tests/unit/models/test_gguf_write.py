"""GGUF files written from tiny Llama models read back (transformers, llama.cpp) and
answer token for token like the model they came from; what cannot be written is refused
with no file left behind."""

from __future__ import annotations

import json
import os

import pytest
import torch

from gguf_files import needs_llamacpp
from tiny import make_tiny_model, make_tiny_tokenizer
from tunelab.errors import StoreError
from tunelab.eval.gguf_parity import HfGreedy, compare, reference_answers
from tunelab.models.gguf_write import UnsupportedModelError, pre_tokenizer_name, write_gguf

PROMPTS = ["Where is my parcel?", "My invoice was charged twice", "reset my password",
           "The app crashes when I open settings", "0 1 2 3 + 4", "the quick brown fox",
           "refund the payment please", "change the account email", "tracking number",
           "lazy dog"]


def _lively(tok, seed=0):
    model = make_tiny_model(tok, seed=seed)
    torch.manual_seed(seed)
    with torch.no_grad():  # the default init repeats one token whatever the prompt
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.5)
    return model.eval()


def _prompts(tok):
    return [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                    tokenize=True, return_dict=True)["input_ids"] for p in PROMPTS]


def _read_back(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                dtype=torch.float32).eval()


def _fields(path) -> dict:
    from gguf import GGUFReader

    r = GGUFReader(str(path))
    return {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}


@pytest.fixture(scope="module")
def tiny():
    tok = make_tiny_tokenizer()
    return tok, _lively(tok)


@pytest.mark.parametrize("ftype", ["f32", "f16"])  # q8_0: tests/integration/test_cli_export_gguf.py
def test_read_back_by_transformers_answers_the_same(tmp_path, tiny, ftype):
    tok, model = tiny
    stop = frozenset({tok.eos_token_id})
    out = write_gguf(model, tok, tmp_path / f"t-{ftype}.gguf", ftype=ftype,
                     chat_template=tok.chat_template, name="tiny", stop_ids=set(stop))
    ref = reference_answers(HfGreedy(model), _prompts(tok), 24, stop)
    assert len({tuple(a) for a in ref.answers}) > 3  # the answers depend on the prompt
    report = compare(ref, HfGreedy(_read_back(out)), "transformers", ftype)
    assert report.passed, report.summary()
    if ftype == "f32":
        assert report.identical == report.prompts and report.max_logprob_diff < 1e-4
    else:
        assert report.mean_logprob_diff > 0  # rounded weights: not the same numbers
    assert sorted(os.listdir(tmp_path)) == [f"t-{ftype}.gguf"]  # no temporary left


def test_file_carries_template_stop_tokens_and_metadata(tmp_path, tiny):
    tok, model = tiny
    task = json.dumps({"type": "classify", "labels": ["a", "b"]})
    out = write_gguf(model, tok, tmp_path / "t.gguf", ftype="q8_0", chat_template=tok.chat_template,
                     name="tiny", stop_ids={tok.eos_token_id}, metadata={"task": task})
    f = _fields(out)
    assert f["tokenizer.chat_template"] == tok.chat_template
    assert f["tokenizer.ggml.eos_token_id"] == tok.eos_token_id
    assert f["tokenizer.ggml.eot_token_id"] == tok.eos_token_id
    assert f["tokenizer.ggml.bos_token_id"] == tok.bos_token_id
    assert f["tokenizer.ggml.padding_token_id"] == tok.pad_token_id
    assert f["tokenizer.ggml.pre"] == "gpt-2" and f["tokenizer.ggml.model"] == "gpt2"
    assert f["tokenizer.ggml.tokens"][tok.eos_token_id] == "<|im_end|>"
    assert f["tokenizer.ggml.token_type"][tok.eos_token_id] == 3  # control
    assert len(f["tokenizer.ggml.tokens"]) == model.get_input_embeddings().weight.shape[0]
    assert f["tunelab.task"] == task
    assert f["general.architecture"] == "llama" and f["general.file_type"] == 7  # MOSTLY_Q8_0


def test_llama_cpp_reads_the_file_and_answers_the_same(tmp_path, tiny):
    needs_llamacpp()
    from tunelab.models.llamacpp import LlamaCppModel

    tok, model = tiny
    stop = frozenset({tok.eos_token_id})
    out = write_gguf(model, tok, tmp_path / "t.gguf", chat_template=tok.chat_template,
                     name="tiny", stop_ids=set(stop))
    ref = reference_answers(HfGreedy(model), _prompts(tok), 24, stop)
    llama = LlamaCppModel(out)
    report = compare(ref, llama, "llama.cpp", "f32")
    assert report.passed, report.summary()
    for p in PROMPTS:  # llama.cpp splits text into the same tokens as the tokenizer trained on
        assert llama.tokenize(p) == tok(p, add_special_tokens=False)["input_ids"]


def test_an_architecture_it_cannot_write_is_refused_and_nothing_is_left(tmp_path, tiny):
    from transformers import GPT2Config, GPT2LMHeadModel

    tok, _ = tiny
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2))
    with pytest.raises(UnsupportedModelError, match="GPT2LMHeadModel") as e:
        write_gguf(gpt2, tok, tmp_path / "g.gguf", chat_template=tok.chat_template, name="g")
    assert "--merge" in e.value.hint
    assert os.listdir(tmp_path) == []


def test_a_pre_tokenizer_llama_cpp_does_not_know_is_refused():
    assert pre_tokenizer_name({"pre_tokenizer": {"type": "ByteLevel", "use_regex": True,
                                                 "add_prefix_space": False}}) == "gpt-2"
    smollm = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "use_regex": True, "add_prefix_space": False}]}
    assert pre_tokenizer_name({"pre_tokenizer": smollm}) == "smollm"
    with pytest.raises(UnsupportedModelError, match="pre-tokenizer"):
        pre_tokenizer_name({"pre_tokenizer": {"type": "Whitespace"}})
    with pytest.raises(UnsupportedModelError, match="normalizer"):
        pre_tokenizer_name({"normalizer": {"type": "NFC"}, "pre_tokenizer": None})


def test_a_missing_folder_is_named(tmp_path, tiny):
    tok, model = tiny
    with pytest.raises(StoreError, match="does not exist") as e:
        write_gguf(model, tok, tmp_path / "nope" / "t.gguf", chat_template="x", name="t")
    assert "create it" in e.value.hint
    assert not (tmp_path / "nope").exists()
