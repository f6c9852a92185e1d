"""The llama.cpp backend on a tiny Llama exported to GGUF (f32): the model wrapper against
transformers, and the scheduler's behaviour (limits, cancel, stops, batching)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from gguf_files import needs_llamacpp, write_model_gguf
from tunelab.data.template import end_of_turn_ids, render_prompt_ids
from tunelab.errors import UsageError
from tunelab.models.llamacpp import LlamaCppModel, pick_token
from tunelab.models.loading import load_causal_lm, load_tokenizer
from tunelab.serve.batching import (
    ContextLengthError,
    EngineSettings,
    QueueFullError,
    SamplingParams,
    ServingEngine,
    run_engines,
)
from tunelab.serve.engine import GenerationEngine
from tunelab.serve.llamacpp_engine import LlamaCppScheduler

needs_llamacpp()

QUESTIONS = ["Where is my parcel?", "My invoice was charged twice.", "The app crashes.",
             "I want to reset my password and change the account email."]


@pytest.fixture(scope="module")
def tiny(lively_model_dir, tmp_path_factory):
    """(transformers model, tokenizer, llama.cpp model, stop ids, prompts)."""
    path = write_model_gguf(lively_model_dir, tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    tok = load_tokenizer(lively_model_dir)
    hf = load_causal_lm(lively_model_dir, False, "float32").eval()
    llm = LlamaCppModel(path, n_threads=1)
    stop = frozenset(end_of_turn_ids(tok) | {tok.eos_token_id})
    prompts = [render_prompt_ids(tok, [{"role": "user", "content": q}]) for q in QUESTIONS]
    yield hf, tok, llm, stop, prompts
    llm.close()


def _scheduler(tiny, batch: int = 4, queue: int = 8, cells: int | None = None) -> LlamaCppScheduler:
    _, _, llm, stop, _ = tiny
    return LlamaCppScheduler(llm, stop, 512, EngineSettings(batch, queue, 2048), cells=cells)


def _run(s: LlamaCppScheduler, limit: int = 500) -> None:
    for _ in range(limit):  # bounded: a scheduler that never finishes fails the test
        if not s.has_work():
            return
        s.step()
    raise AssertionError("the scheduler did not finish")


# --- the model wrapper ----------------------------------------------------------------

def test_greedy_answers_token_for_token_as_transformers(tiny):
    hf, tok, llm, stop, prompts = tiny
    want = GenerationEngine(hf, tok).complete_ids(prompts, max_new_tokens=12)
    got = [llm.greedy(p, 12, stop) for p in prompts]
    assert got == want
    assert len({tuple(g) for g in got}) > 1  # the prompts get different answers


def test_token_logprobs_match_transformers(tiny):
    hf, _, llm, _, prompts = tiny
    prompt, cont = prompts[0], [5, 17, 40, 9]
    with torch.inference_mode():
        logits = hf(torch.tensor([prompt + cont])).logits[0].float()
    ref = torch.log_softmax(logits, -1)
    want = [float(ref[len(prompt) - 1 + i, t]) for i, t in enumerate(cont)]
    got = llm.token_logprobs(prompt, cont)
    # f32 both, but different kernels: the lively model's large activations leave ~3e-3
    assert len(got) == len(cont) and max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-2
    assert max(want) - min(want) > 1  # the tokens' log-probs differ by far more than that


def test_tokenize_is_the_files_vocabulary(tiny):
    _, tok, llm, _, _ = tiny
    text = "<|im_start|>user\nWhere is my parcel?<|im_end|>\n"
    assert llm.tokenize(text) == tok(text, add_special_tokens=False)["input_ids"]


def test_sampling_is_repeatable_with_a_seed(tiny):
    _, _, llm, stop, prompts = tiny
    a = llm.generate(prompts[1], 16, stop, temperature=1.5, seed=7)
    assert a == llm.generate(prompts[1], 16, stop, temperature=1.5, seed=7)
    logits = np.array([0.0, 5.0, 1.0, 4.9])
    draws = {pick_token(logits, 1.0, 0.5, np.random.default_rng(i)) for i in range(50)}
    assert draws == {1}  # top_p 0.5: only the most likely token is left
    assert pick_token(logits, 0.0, 1.0, None) == 1


# --- the scheduler ----------------------------------------------------------------------

def test_each_answer_is_the_models_greedy_answer_in_a_batch(tiny):
    _, _, llm, stop, prompts = tiny
    s = _scheduler(tiny)
    seqs = [s.submit(p, SamplingParams(max_new_tokens=12)) for p in prompts]
    _run(s)
    for p, seq in zip(prompts, seqs, strict=True):
        want = llm.greedy(p, 12, stop)
        got = seq.output_ids + ([seq.stop_id] if seq.stop_id is not None else [])
        assert got == want
        assert seq.finish_reason == ("stop" if want[-1] in stop else "length")
    assert s.running == 0 and sorted(s._free) == [0, 1, 2, 3]


def test_prompts_that_begin_alike_share_cells_and_answer_the_same(tiny):
    _, tok, llm, stop, _ = tiny
    system = {"role": "system", "content": "My invoice was charged twice, please refund the payment."}
    prompts = [render_prompt_ids(tok, [system, {"role": "user", "content": q}]) for q in QUESTIONS]
    s = _scheduler(tiny, batch=4)
    early = s.submit(prompts[0], SamplingParams(max_new_tokens=40))
    s.step()  # running: the later prompts take their beginning from it
    seqs = [early] + [s.submit(p, SamplingParams(max_new_tokens=12)) for p in prompts[1:3]]
    s.step()
    from_running = s.shared_tokens
    assert from_running >= 2 * 16
    seqs.append(s.submit(prompts[3], SamplingParams(max_new_tokens=12)))
    _run(s)
    for p, seq, n in zip(prompts, seqs, (40, 12, 12, 12), strict=True):
        got = seq.output_ids + ([seq.stop_id] if seq.stop_id is not None else [])
        assert got == llm.greedy(p, n, stop)
    # all arriving together: the first is prefilled alone, the others from its cells
    s = _scheduler(tiny, batch=4)
    seqs = [s.submit(p, SamplingParams(max_new_tokens=12)) for p in prompts]
    _run(s)
    assert s.shared_tokens == from_running // 2 * 3
    for p, seq in zip(prompts, seqs, strict=True):
        assert seq.output_ids + ([seq.stop_id] if seq.stop_id is not None else []) == \
            llm.greedy(p, 12, stop)


def test_a_stop_id_ends_the_answer_and_is_not_kept(tiny):
    _, _, llm, _, prompts = tiny
    free = llm.greedy(prompts[2], 10, frozenset())
    stop_at = free[3]
    k = free.index(stop_at)
    s = LlamaCppScheduler(llm, frozenset({stop_at}), 512, EngineSettings(2, 4, 2048))
    seq = s.submit(prompts[2], SamplingParams(max_new_tokens=10))
    _run(s)
    assert seq.finish_reason == "stop" and seq.stop_id == stop_at and seq.output_ids == free[:k]


def test_a_full_queue_and_a_long_prompt_are_refused(tiny):
    prompts = tiny[4]
    s = _scheduler(tiny, batch=1, queue=2)
    s.submit(prompts[0], SamplingParams(max_new_tokens=4))
    s.submit(prompts[1], SamplingParams(max_new_tokens=4))
    with pytest.raises(QueueFullError):
        s.submit(prompts[2], SamplingParams(max_new_tokens=4))
    with pytest.raises(ContextLengthError) as e:
        s.submit([5] * 500, SamplingParams(max_new_tokens=20))
    assert e.value.context_length == 512
    with pytest.raises(UsageError, match="no adapters"):
        s.submit(prompts[0], SamplingParams(max_new_tokens=4), adapter="other")
    with pytest.raises(UsageError, match="empty"):
        s.submit([], SamplingParams(max_new_tokens=4))
    _run(s)


def test_a_cancelled_sequence_leaves_and_frees_its_slot(tiny):
    prompts = tiny[4]
    s = _scheduler(tiny, batch=2)
    events: list[tuple[int, bool]] = []
    gone = s.submit(prompts[0], SamplingParams(max_new_tokens=200),
                    on_event=lambda seq, new, done: events.append((len(new), done)))
    stays = s.submit(prompts[1], SamplingParams(max_new_tokens=6))
    s.step()
    s.step()
    assert s.running == 2 and events and not events[-1][1]
    gone.cancel()
    s.step()
    assert gone.finish_reason == "cancelled" and events[-1][1] and s.running == 1
    waiting = s.submit(prompts[2], SamplingParams(max_new_tokens=200))
    waiting.cancel()  # gone before it was admitted
    _run(s)
    assert waiting.finish_reason == "cancelled" and waiting.output_ids == []
    assert stays.finish_reason in ("stop", "length") and sorted(s._free) == [0, 1]


def test_a_request_waits_until_the_cache_has_room_for_it(tiny):
    prompts = tiny[4]
    s = _scheduler(tiny, batch=4, cells=256)  # llama.cpp rounds a context up to 256 cells
    assert s.decoder.cells == 256
    new = 256 - len(prompts[0]) - 10  # room for one such request at a time, not two
    seqs = [s.submit(prompts[0], SamplingParams(max_new_tokens=new)) for _ in range(3)]
    most = 0
    for _ in range(2000):
        if not s.has_work():
            break
        s.step()
        most = max(most, s.running)
    assert most == 1 and all(q.finish_reason in ("stop", "length") for q in seqs)
    assert seqs[0].output_ids == seqs[2].output_ids  # the slot's old cells were freed


def test_the_serving_engine_drives_it_from_another_thread(tiny):
    _, _, llm, stop, prompts = tiny
    engine = ServingEngine(_scheduler(tiny))
    done = threading.Event()
    seq = engine.submit(prompts[3], SamplingParams(max_new_tokens=8),
                        on_event=lambda s, new, finished: finished and done.set())
    stepper = threading.Thread(target=run_engines, args=([engine],), kwargs={"poll": 0.01})
    stepper.start()
    try:
        assert done.wait(30)
    finally:
        engine.close()
        stepper.join(30)
    assert seq.output_ids + ([seq.stop_id] if seq.stop_id is not None else []) == \
        llm.greedy(prompts[3], 8, stop)
