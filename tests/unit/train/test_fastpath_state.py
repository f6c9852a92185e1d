"""The fast path's changes outside the model are undone, and validation sees the library's model.

``fast_training`` changes transformers' attention registry, the rotary function of the
model type's modeling module, glibc's malloc settings and the model's own forwards and
attention implementation. These tests look at each before, during and after a training
run (also one that fails), and at the model an ``on_validation`` hook is handed.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface
from transformers.models.llama import modeling_llama

import tunelab
from tunelab.config.schema import LoraSettings, TrainSettings
from tunelab.data.example import Example, Message
from tunelab.data.template import tokenize_example
from tunelab.models import adapters
from tunelab.train import fastpath
from tunelab.train.fastpath import PACKED_ATTENTION, fast_training, is_packed, malloc_tuning
from tunelab.train.loop import TrainLoop

TUNED = {p.name: value for p, value in fastpath._KEEP_FREED}


def registry():
    """Both layers of transformers' attention registry: the class-wide one and the shared instance's."""
    return dict(AttentionInterface._global_mapping), dict(ALL_ATTENTION_FUNCTIONS._local_mapping)


def rotary_functions():
    """``apply_rotary_pos_emb`` of every modeling module the fast path may swap (those imported)."""
    return {name: sys.modules[name].apply_rotary_pos_emb
            for name in fastpath._ROTARY_MODULES.values() if name in sys.modules}


def own_forwards(model):
    """Modules with a forward of their own (an instance attribute): the fast path's patches."""
    return [name for name, m in model.named_modules() if "forward" in m.__dict__]


def snapshot(model):
    return {"registry": registry(), "rotary": rotary_functions(), "malloc": dict(malloc_tuning.in_effect),
            "attn": model.config._attn_implementation, "forwards": own_forwards(model)}


def model_state(model):
    """What the fast path has changed right now, as seen from inside a run."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    lora = [m for m in model.modules() if isinstance(m, LoraLinear)]
    return {
        "rotary_is_library": modeling_llama.apply_rotary_pos_emb is ORIGINAL_ROTARY,
        "packed": is_packed(model),
        "attn": model.config._attn_implementation,
        "own_forwards": own_forwards(model),
        "lora_forwards_are_peft": bool(lora) and all(m.forward.__func__ is type(m).forward for m in lora),
        "registered": PACKED_ATTENTION in ALL_ATTENTION_FUNCTIONS,
        "malloc": dict(malloc_tuning.in_effect),
    }


ORIGINAL_ROTARY = modeling_llama.apply_rotary_pos_emb


class RecordingSink:
    def __init__(self, model):
        self.model = model
        self.states = []  # (split, step, model_state) at each log call

    def log(self, split, step, metrics):
        self.states.append((split, step, model_state(self.model)))


def rows(tok, n):
    exs = [Example([Message("user", f"ticket {i} " * (1 + i % 4)),
                    Message("assistant", ["billing", "technical", "shipping team"][i % 3])])
           for i in range(n)]
    return [tokenize_example(tok, e) for e in exs]


def lora_model(tiny_model):
    model = adapters.apply_lora(tiny_model, LoraSettings(r=4, alpha=8))
    assert any(fastpath._fusable(m) for m in model.modules())
    return model


def train(model, tok, on_validation=None, should_stop=None, max_steps=4):
    """A few steps with validation every 2 steps, at the start and at the end."""
    from accelerate import Accelerator

    settings = TrainSettings(batch_size=2, max_steps=max_steps, eval_every=2, save_every=0,
                             learning_rate=1e-3)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    sink = RecordingSink(model)
    loop = TrainLoop(model, opt, sched, Accelerator(cpu=True), rows(tok, 8), rows(tok, 3), settings,
                     tok.pad_token_id, sink, on_validation=on_validation, should_stop=should_stop)
    return loop, loop.run(), sink


@pytest.fixture
def no_context_open():
    """The fast path's process-wide changes are undone only when no other context holds them."""
    assert malloc_tuning.in_effect == {} or fastpath._glibc() is None
    assert PACKED_ATTENTION not in ALL_ATTENTION_FUNCTIONS
    assert modeling_llama.apply_rotary_pos_emb is ORIGINAL_ROTARY


def test_importing_the_fast_path_changes_no_registry_rotary_or_malloc():
    """In a fresh interpreter: importing the module (and the loop) changes none of them."""
    code = (
        "from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface\n"
        "from transformers.models.llama import modeling_llama\n"
        "def state():\n"
        "    return (dict(AttentionInterface._global_mapping), dict(ALL_ATTENTION_FUNCTIONS._local_mapping),\n"
        "            modeling_llama.apply_rotary_pos_emb)\n"
        "before = state()\n"
        "from tunelab.train import fastpath, loop\n"
        "assert state() == before, 'registry or rotary changed'\n"
        "assert fastpath.PACKED_ATTENTION not in ALL_ATTENTION_FUNCTIONS\n"
        # mallopt goes through _glibc(): not even loaded means no malloc setting was touched
        "assert fastpath._glibc.cache_info().currsize == 0, 'libc was loaded'\n"
        "assert fastpath.malloc_tuning.in_effect == {}\n"
    )
    src = str(Path(tunelab.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_a_training_run_puts_back_the_attention_registry_rotary_and_model(
        tiny_model, tiny_tokenizer, no_context_open):
    model = lora_model(tiny_model)
    before = snapshot(model)
    loop, _, sink = train(model, tiny_tokenizer)
    during = [s for split, _, s in sink.states if split == "train"]
    # The run did change them (else the comparison below would prove nothing) ...
    assert loop.fast_path.packing and loop.fast_path.fast_rotary and loop.fast_path.fused_lora_layers
    assert all(s["registered"] and s["packed"] and not s["rotary_is_library"] for s in during)
    assert all(s["own_forwards"] for s in during)
    # ... and everything is as before now.
    assert snapshot(model) == before
    assert PACKED_ATTENTION not in ALL_ATTENTION_FUNCTIONS


@pytest.mark.skipif(fastpath._glibc() is None, reason="malloc is tuned on glibc only")
def test_a_training_run_sets_malloc_back_to_the_start_values_it_recorded(
        tiny_model, tiny_tokenizer, no_context_open, monkeypatch):
    """glibc cannot report its settings: this checks the calls the fast path made and its record."""
    calls = []

    def recording_mallopt(param, value):
        calls.append((param, value))
        return real(param, value)

    real = fastpath._mallopt
    monkeypatch.setattr(fastpath, "_mallopt", recording_mallopt)
    model = lora_model(tiny_model)
    _, _, sink = train(model, tiny_tokenizer)
    assert all(s["malloc"] == TUNED for split, _, s in sink.states if split == "train")
    start = {p.name: fastpath._start_value(p) for p, _ in fastpath._KEEP_FREED}
    assert malloc_tuning.in_effect == {}
    assert malloc_tuning.restored == start
    numbers = {p.number: p.name for p, _ in fastpath._KEEP_FREED}
    assert [(numbers[n], v) for n, v in calls[:2]] == list(TUNED.items())  # set once, at the start
    last = {numbers[n]: v for n, v in calls}  # the value glibc holds now, per parameter
    assert last == start and len(calls) == 4


def test_on_validation_sees_the_unpatched_model_and_training_resumes_patched(
        tiny_model, tiny_tokenizer, no_context_open):
    model = lora_model(tiny_model)
    impl = model.config._attn_implementation
    seen = []

    def hook(step, metrics):
        seen.append((step, model_state(model)))
        return False

    loop, result, sink = train(model, tiny_tokenizer, on_validation=hook)
    assert [step for step, _ in seen] == [2, 4]
    for _, s in seen:
        assert s["rotary_is_library"] and s["lora_forwards_are_peft"]
        assert not s["packed"] and s["attn"] == impl != PACKED_ATTENTION
        assert s["own_forwards"] == []  # no LoRA linear, MLP or norm keeps a fast-path forward
    # The validation loss itself was computed unpatched too (the start, mid-run and last ones).
    validations = [(step, s) for split, step, s in sink.states if split == "validation"]
    assert [step for step, _ in validations] == [0, 2, 4]
    assert all(s["rotary_is_library"] and not s["packed"] and not s["own_forwards"] for _, s in validations)
    # Training after the mid-run validation is back on the fast path.
    after = [s for split, step, s in sink.states if split == "train" and step > 2]
    assert after and all(s["packed"] and not s["rotary_is_library"] and s["own_forwards"] for s in after)
    assert result.steps == 4


@pytest.mark.parametrize("where", ["on_validation", "a training step"])
def test_a_run_that_raises_still_puts_everything_back(tiny_model, tiny_tokenizer, no_context_open, where):
    model = lora_model(tiny_model)
    before = snapshot(model)

    def boom(*args):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        if where == "on_validation":
            train(model, tiny_tokenizer, on_validation=boom)
        else:
            train(model, tiny_tokenizer, should_stop=boom)
    assert snapshot(model) == before


def test_suspended_unpatches_and_repatches_the_same_modules(tiny_model, no_context_open):
    model = lora_model(tiny_model)
    with fast_training(model) as fp:
        patched = own_forwards(model)
        assert patched and is_packed(model)
        with pytest.raises(RuntimeError), fp.suspended():
            assert own_forwards(model) == [] and not is_packed(model)
            assert modeling_llama.apply_rotary_pos_emb is ORIGINAL_ROTARY
            assert malloc_tuning.in_effect == TUNED or fastpath._glibc() is None  # speed only: kept
            raise RuntimeError("an evaluation hook failed")
        assert own_forwards(model) == patched and is_packed(model)
        assert modeling_llama.apply_rotary_pos_emb is not ORIGINAL_ROTARY
    assert own_forwards(model) == [] and not is_packed(model)


def test_overlapping_contexts_undo_the_shared_changes_when_the_last_closes(tiny_model, no_context_open):
    a, b = tiny_model, copy.deepcopy(tiny_model)
    with fast_training(a) as fa:
        with fast_training(b):
            with fa.suspended():
                # a is the library's model; the rotary function stays swapped for b.
                assert not is_packed(a) and own_forwards(a) == [] and is_packed(b)
                assert modeling_llama.apply_rotary_pos_emb is not ORIGINAL_ROTARY
        assert own_forwards(b) == [] and is_packed(a)
        assert PACKED_ATTENTION in ALL_ATTENTION_FUNCTIONS  # a still needs them
        assert modeling_llama.apply_rotary_pos_emb is not ORIGINAL_ROTARY
        assert malloc_tuning.in_effect == TUNED or fastpath._glibc() is None
    assert PACKED_ATTENTION not in ALL_ATTENTION_FUNCTIONS
    assert modeling_llama.apply_rotary_pos_emb is ORIGINAL_ROTARY
    assert malloc_tuning.in_effect == {}


@pytest.mark.parametrize("layer", ["class-wide", "instance"])
def test_an_earlier_registry_entry_of_the_same_name_comes_back(tiny_model, no_context_open, monkeypatch, layer):
    def theirs(*args, **kwargs):
        raise AssertionError("not called")

    mapping = AttentionInterface._global_mapping if layer == "class-wide" else ALL_ATTENTION_FUNCTIONS._local_mapping
    monkeypatch.setitem(mapping, PACKED_ATTENTION, theirs)  # removed again after the test
    before = registry()
    with fast_training(tiny_model):
        assert ALL_ATTENTION_FUNCTIONS[PACKED_ATTENTION] is fastpath.packed_attention
    assert registry() == before


def test_malloc_start_values_come_from_the_environment_else_the_glibc_default(monkeypatch):
    mmap, trim = fastpath._M_MMAP_THRESHOLD, fastpath._M_TRIM_THRESHOLD
    for name in ("GLIBC_TUNABLES", mmap.env, trim.env):
        monkeypatch.delenv(name, raising=False)
    assert fastpath._start_value(mmap) == fastpath._start_value(trim) == 128 * 1024
    monkeypatch.setenv(trim.env, "300000")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=0x40000:glibc.malloc.tcache_count=0")
    assert fastpath._start_value(mmap) == 0x40000 and fastpath._start_value(trim) == 300000
    monkeypatch.setenv(mmap.env, "not a number")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=99999999999")  # beyond a C int
    assert fastpath._start_value(mmap) == 128 * 1024
