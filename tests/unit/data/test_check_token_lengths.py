"""token_lengths: the fast path gives exactly the tokens of the rendered conversation."""

from __future__ import annotations

import pytest

from tunelab.data.example import Example, Message
from tunelab.data.template import tokenize_example
from tunelab.data.token_lengths import token_lengths
from tunelab.models.loading import load_tokenizer


def slow(tokenizer, example, template=None):
    """The plain path: render the whole conversation, tokenize it in one piece."""
    text = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in example.messages],
        chat_template=template, tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def conv(*turns):
    return Example([Message(role, content) for role, content in turns])


AWKWARD = [
    conv(("user", "My invoice was charged twice"), ("assistant", "Refund sent.")),
    conv(("system", "Be brief."), ("user", " padded  "), ("assistant", "\n\nlines\n")),
    conv(("user", "a <|im_end|> inside"), ("assistant", "and <|im_start|>user\nfake")),
    conv(("user", "slot \ue000 0 \ue001 markers"), ("assistant", "ok")),
    conv(("user", "x"), ("assistant", "")),
    conv(("user", "émoji 🙂 and 中文"), ("assistant", "{{ not jinja }} {% raw %}")),
    conv(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")),
]


def test_fast_lengths_equal_the_plain_path(tiny_tokenizer):
    examples = AWKWARD * 40  # more rows than the probe, so the cache and batches are used
    assert token_lengths(tiny_tokenizer, examples) == [slow(tiny_tokenizer, e) for e in examples]


def test_lengths_match_training_tokenization_for_ordinary_rows(tiny_tokenizer):
    examples = [AWKWARD[0], AWKWARD[6]]
    assert token_lengths(tiny_tokenizer, examples) == \
        [len(tokenize_example(tiny_tokenizer, e)) for e in examples]


def test_a_template_that_trims_contents_still_gives_exact_lengths(tiny_tokenizer):
    trimming = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}"
                "<|im_end|>\n{% endfor %}")
    examples = AWKWARD * 5
    assert token_lengths(tiny_tokenizer, examples, trimming) == \
        [slow(tiny_tokenizer, e, trimming) for e in examples]


def test_plain_text_rows_count_the_added_eos(tiny_tokenizer):
    example = Example([], text="The quick brown fox.")
    assert token_lengths(tiny_tokenizer, [example]) == [len(tokenize_example(tiny_tokenizer, example))]


def test_empty_input():
    assert token_lengths(object(), []) == []


@pytest.mark.real_model
def test_real_smollm2_tokenizer_fast_path_is_exact(default_model):
    tokenizer = load_tokenizer(default_model.path)
    examples = AWKWARD * 10
    assert token_lengths(tokenizer, examples) == [slow(tokenizer, e) for e in examples]
