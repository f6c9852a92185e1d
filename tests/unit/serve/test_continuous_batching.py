"""Continuous batching: joining mid-flight, mixed adapters, cancelling, limits, the thread."""

import os
import threading

import pytest
import torch

from tunelab.data.example import Message
from tunelab.data.template import render_prompt_ids
from tunelab.errors import UsageError
from tunelab.serve.batching import (
    BASE_ADAPTER,
    BatchScheduler,
    ContextLengthError,
    EngineClosedError,
    EngineSettings,
    PrefixCache,
    QueueFullError,
    SamplingParams,
    ServingEngine,
)

TEXTS = ["Hi", "My invoice was charged twice, please refund the payment.",
         "The app crashes when I open settings on my phone.", "0 1 2 3",
         "Where is my parcel? The tracking number does not work."]
STOP = frozenset()  # no stop ids: every answer runs to max_new_tokens (lengths are known)


def _lively(tokenizer, seed=0):
    from tiny import make_tiny_model

    model = make_tiny_model(tokenizer, seed=seed)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.5)
    return model.eval()


@pytest.fixture
def prompts(tiny_tokenizer):
    return [render_prompt_ids(tiny_tokenizer, [Message("user", t)]) for t in TEXTS]


def _reference(model, prompt, n):
    """Token-by-token greedy decoding of one prompt: no padding, no cache, no batch."""
    ids, new = list(prompt), []
    with torch.no_grad():
        for _ in range(n):
            t = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            new.append(t)
            ids.append(t)
    return new


def _scheduler(model, batch=4, queue=16, context=512, prefill=4096):
    return BatchScheduler(model, STOP, 0, context, EngineSettings(batch, queue, prefill))


def _run(s):
    for _ in range(10_000):
        if not s.has_work():
            return
        s.step()
    raise AssertionError("the scheduler did not finish")


def test_requests_joining_mid_flight_get_their_answer_alone(tiny_tokenizer, prompts):
    model = _lively(tiny_tokenizer)
    s = _scheduler(model, batch=3)
    lengths = [9, 6, 12, 6, 7]
    seqs = [s.submit(prompts[0], SamplingParams(lengths[0])),
            s.submit(prompts[1], SamplingParams(lengths[1]))]
    for _ in range(3):
        s.step()
    # a step prefills newcomers (their first token) and decodes one token for every row
    assert s.running == 2 and len(seqs[1].output_ids) == 4  # both mid-answer
    seqs += [s.submit(p, SamplingParams(n)) for p, n in zip(prompts[2:], lengths[2:], strict=True)]
    s.step()
    assert s.running == 3 and len(s.waiting) == 2  # the batch is full; two wait
    _run(s)
    answers = [q.output_ids for q in seqs]
    assert len({tuple(a[:4]) for a in answers}) > 1  # answers depend on the prompt
    for q, p, n in zip(seqs, prompts, lengths, strict=True):
        assert q.finish_reason == "length"
        assert q.output_ids == _reference(model, p, n)


def test_each_row_gets_its_own_adapter_in_a_mixed_batch(tiny_tokenizer, prompts):
    from peft import LoraConfig, get_peft_model

    model = _lively(tiny_tokenizer)
    cfg = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"],
                     init_lora_weights=False)  # random B: the adapters change answers
    torch.manual_seed(1)
    peft_model = get_peft_model(model, cfg, adapter_name="one")
    torch.manual_seed(2)
    peft_model.add_adapter("two", cfg)
    peft_model.eval()
    plan = [("one", 0), ("two", 0), (BASE_ADAPTER, 0), ("two", 1), ("one", 2), (None, 2)]
    alone = []
    for adapter, i in plan:
        s = _scheduler(peft_model, batch=1)
        seq = s.submit(prompts[i], SamplingParams(8), adapter=adapter)
        _run(s)
        alone.append(seq.output_ids)
    assert alone[0] != alone[1] != alone[2]  # the adapters matter for one prompt
    assert alone[5] == alone[4]  # no adapter named: the active one ("one"; adding keeps it)
    s = _scheduler(peft_model, batch=6)
    mixed = [s.submit(prompts[i], SamplingParams(8), adapter=a) for a, i in plan]
    _run(s)
    assert [q.output_ids for q in mixed] == alone
    with torch.no_grad(), peft_model.disable_adapter():
        assert alone[2] == _reference(peft_model, prompts[0], 8)


def test_a_cancelled_sequence_frees_its_row_at_the_next_step(tiny_tokenizer, prompts):
    s = _scheduler(_lively(tiny_tokenizer), batch=2)
    a = s.submit(prompts[0], SamplingParams(50))
    b = s.submit(prompts[1], SamplingParams(50))
    c = s.submit(prompts[2], SamplingParams(5))
    s.step()
    assert s.running == 2 and list(s.waiting) == [c]
    a.cancel()
    s.step()
    assert a.finish_reason == "cancelled" and s.running == 2 and c.output_ids  # c took the row
    _run(s)
    assert b.finish_reason == c.finish_reason == "length"


def test_stop_ids_end_an_answer_and_are_not_kept(tiny_tokenizer, prompts):
    model = _lively(tiny_tokenizer)
    ref = _reference(model, prompts[1], 6)
    s = BatchScheduler(model, frozenset({ref[3]}), 0, 512, EngineSettings(2, 4, 1024))
    seq = s.submit(prompts[1], SamplingParams(6))
    _run(s)
    first = ref.index(ref[3])
    assert seq.finish_reason == "stop" and seq.output_ids == ref[:first] and seq.stop_id == ref[3]


def test_sampling_is_repeatable_with_a_seed(tiny_tokenizer, prompts):
    model = _lively(tiny_tokenizer)
    outs = []
    for _ in range(2):
        s = _scheduler(model)
        seqs = [s.submit(p, SamplingParams(10, temperature=1.5, top_p=0.9, seed=7)) for p in prompts[:3]]
        _run(s)
        outs.append([q.output_ids for q in seqs])
    assert outs[0] == outs[1]
    assert outs[0][0] != _reference(model, prompts[0], 10)  # sampled, not greedy


def test_limits_are_checked_when_submitting(tiny_tokenizer, prompts):
    s = _scheduler(_lively(tiny_tokenizer), queue=2, context=40)
    with pytest.raises(ContextLengthError) as e:
        s.submit(prompts[1], SamplingParams(40))
    assert e.value.prompt_tokens == len(prompts[1]) and "40" in e.value.message
    s.submit(prompts[0], SamplingParams(2))
    s.submit(prompts[0], SamplingParams(2))
    with pytest.raises(QueueFullError) as q:
        s.submit(prompts[0], SamplingParams(2))
    assert q.value.retry_after >= 1
    with pytest.raises(UsageError):
        s.submit([], SamplingParams(2))
    with pytest.raises(UsageError):
        s.submit(prompts[0], SamplingParams(2), adapter="nope")
    with pytest.raises(UsageError):
        SamplingParams(0)


def test_the_engine_thread_answers_streams_and_drains(tiny_tokenizer, prompts):
    model = _lively(tiny_tokenizer)
    engine = ServingEngine(BatchScheduler(model, STOP, 0, 512, EngineSettings(4, 8, 2048)))
    steps = []
    engine.on_step = lambda batch, new, seconds: steps.append(batch)
    engine.start()
    try:
        events: dict[int, list] = {}
        done = threading.Event()
        finished = []

        def on_event(seq, new, fin):
            events.setdefault(seq.id, []).extend(new)
            if fin:
                finished.append(seq)
                if len(finished) == 3:
                    done.set()

        seqs = [engine.submit(p, SamplingParams(6), on_event=on_event) for p in prompts[:3]]
        assert done.wait(30)
        for q, p in zip(seqs, prompts, strict=False):
            assert events[q.id] == q.output_ids == _reference(model, p, 6)
            assert q.first_token_at is not None and q.finished_at >= q.first_token_at
        assert steps and max(steps) <= 4
        assert engine.drain(5.0)
        with pytest.raises(EngineClosedError):
            engine.submit(prompts[0], SamplingParams(2))
    finally:
        engine.close()


def test_a_shared_prompt_beginning_is_prefilled_once_and_answers_do_not_change(tiny_tokenizer):
    model = _lively(tiny_tokenizer)
    system = "You route tickets for billing technical shipping account returns. " * 2
    prompts = [render_prompt_ids(tiny_tokenizer, [Message("system", system), Message("user", t)])
               for t in TEXTS]
    shared = len(os.path.commonprefix(prompts))
    assert shared >= PrefixCache.MIN_TOKENS
    s = _scheduler(model, batch=2)
    first = [s.submit(p, SamplingParams(6)) for p in prompts[:2]]  # prefilled together: learnt
    _run(s)
    assert len(s.prefixes) == 1 and s.prefixes.hits == 0
    later = [s.submit(p, SamplingParams(6)) for p in prompts[2:]]  # these start from it
    _run(s)
    assert s.prefixes.hits == 3 and s.prefixes.saved_tokens == 3 * shared
    for q, p in zip(first + later, prompts, strict=True):
        assert q.output_ids == _reference(model, p, 6)
    assert s.prefixes.find(None, prompts[0]) is not None
    assert s.prefixes.find("another-adapter", prompts[0]) is None  # keys differ per adapter


def test_rows_prefilled_from_a_kept_beginning_keep_it_when_a_neighbour_leaves(tiny_tokenizer):
    # A row prefilled from a kept beginning has padding between that beginning and the rest
    # of its prompt; dropping a finished neighbour must not cut its beginning away.
    model = _lively(tiny_tokenizer)
    system = "You route tickets for billing technical shipping account returns. " * 2
    prompts = [render_prompt_ids(tiny_tokenizer, [Message("system", system), Message("user", t)])
               for t in TEXTS]
    s = _scheduler(model, batch=4)
    for p in prompts[:2]:
        s.submit(p, SamplingParams(2))
    _run(s)  # learns the shared beginning
    rest = prompts[2:]
    longest = max(range(len(rest)), key=lambda i: len(rest[i]))
    assert len({len(p) for p in rest}) == len(rest)
    # the longest prompt (the only row without padding) leaves first; the others decode on
    lengths = [3 if i == longest else 9 + i for i in range(len(rest))]
    seqs = [s.submit(p, SamplingParams(n)) for p, n in zip(rest, lengths, strict=True)]
    _run(s)
    assert s.prefixes.hits == 3
    for q, p, n in zip(seqs, rest, lengths, strict=True):
        assert q.output_ids == _reference(model, p, n)
