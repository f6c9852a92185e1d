"""Likelihood scoring on a tiny model agrees with a plain full forward pass."""

from __future__ import annotations

import pytest
import torch

from tunelab.data.example import Example, Message
from tunelab.data.template import IGNORE_INDEX, tokenize_example
from tunelab.eval.callables import build_callables, token_nll
from tunelab.eval.perplexity import run_perplexity
from tunelab.eval.rows import row_from_example


def reference_nll(model, ids: list[int], labels: list[int]) -> tuple[float, int]:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
    targets = torch.tensor(labels[1:])
    keep = targets != IGNORE_INDEX
    logp = torch.log_softmax(logits.float(), -1)[keep].gather(1, targets[keep, None])
    return float(-logp.sum()), int(keep.sum())


def chats():
    return [Example([Message("user", "my parcel is late"), Message("assistant", "shipping")]),
            Example([Message("system", "route it"), Message("user", "I was charged twice"),
                     Message("assistant", "billing")]),
            Example([], text="The quick brown fox jumps over the lazy dog.")]


def test_token_nll_matches_a_full_forward_pass(tiny_model, tiny_tokenizer):
    rows = [tokenize_example(tiny_tokenizer, ex) for ex in chats()]
    got = token_nll(tiny_model, rows, tiny_tokenizer.pad_token_id, batch_size=2)
    for (s, n), row in zip(got, rows, strict=True):
        ref_s, ref_n = reference_nll(tiny_model, row.input_ids, row.labels)
        assert n == ref_n and s == pytest.approx(ref_s, rel=1e-4, abs=1e-4)


def test_score_choices_and_perplexity(tiny_model, tiny_tokenizer):
    m = build_callables(tiny_model, tiny_tokenizer, None, "tiny", max_new_tokens=4, batch_size=2)
    chat = [Message("user", "my parcel is late")]
    scores = m.score_choices([chat, chat], [["shipping", "billing"], ["billing"]])
    assert len(scores[0]) == 2 and len(scores[1]) == 1
    assert scores[0][1] == pytest.approx(scores[1][0], abs=1e-4)  # batching does not matter
    full = tokenize_example(tiny_tokenizer, Example([*chat, Message("assistant", "shipping")]))
    ref_s, _ = reference_nll(tiny_model, full.input_ids, full.labels)
    assert scores[0][0] == pytest.approx(-ref_s, rel=1e-4, abs=1e-4)
    rows = [row_from_example(ex) for ex in chats()]
    r = run_perplexity(m, rows, chunk=2)
    refs = [reference_nll(tiny_model, t.input_ids, t.labels)
            for t in (tokenize_example(tiny_tokenizer, ex) for ex in chats())]
    loss = sum(s for s, _ in refs) / sum(n for _, n in refs)
    assert r.metrics["loss"] == pytest.approx(loss, rel=1e-4)
    assert r.metrics["tokens"] == sum(n for _, n in refs)
    assert len(m.predict([chat])) == 1


def test_shared_prompt_scoring_equals_one_forward_pass_per_answer(tiny_model, tiny_tokenizer):
    """Prompts of different lengths (left padding), answers of different token counts, a
    peft-free model: the cached continuation gives each answer's full-pass log-likelihood."""
    m = build_callables(tiny_model, tiny_tokenizer, None, "tiny", max_new_tokens=4, batch_size=3)
    prompts = [[Message("user", "late")],
               [Message("system", "route the ticket"), Message("user", "I was charged twice")],
               [Message("user", "the quick brown fox jumps over the lazy dog, my parcel")]]
    choices = [["shipping", "billing technical account", "a"], ["billing", "returns"],
               ["account", "shipping and returns"]]
    scores = m.score_choices(prompts, choices)
    for chat, cs, got in zip(prompts, choices, scores, strict=True):
        for c, g in zip(cs, got, strict=True):
            full = tokenize_example(tiny_tokenizer, Example([*chat, Message("assistant", c)]))
            ref_s, _ = reference_nll(tiny_model, full.input_ids, full.labels)
            assert g == pytest.approx(-ref_s, rel=1e-4, abs=1e-4), (chat, c)
