from tunelab.data.example import Example, Message
from tunelab.data.template import (
    IGNORE_INDEX,
    render_prompt_ids,
    tokenize_example,
)


def _chat(*turns, weights=None):
    roles = ["system", "user", "assistant"] if len(turns) == 3 else ["user", "assistant"] * 3
    w = weights or [None] * len(turns)
    return Example([Message(r, c, wt) for r, c, wt in zip(roles, turns, w, strict=False)])


def trained_text(tok, ex):
    return tok.decode([t for t in ex.labels if t != IGNORE_INDEX])


def test_only_the_answer_and_end_of_turn_train(tiny_tokenizer):
    ex = tokenize_example(tiny_tokenizer, _chat("be brief", "my invoice", "billing"))
    assert trained_text(tiny_tokenizer, ex) == "billing<|im_end|>"
    # the ids are exactly what the chat template renders
    full = tiny_tokenizer.apply_chat_template(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "my invoice"},
         {"role": "assistant", "content": "billing"}], tokenize=False)
    assert tiny_tokenizer.decode(ex.input_ids) == full


def test_prompt_tokens_equal_serving_prompt(tiny_tokenizer):
    msgs = [Message("system", "be brief"), Message("user", "my invoice")]
    ex = tokenize_example(tiny_tokenizer, Example(msgs + [Message("assistant", "billing")]))
    prompt = render_prompt_ids(tiny_tokenizer, msgs)
    assert ex.input_ids[:len(prompt)] == prompt
    assert all(x == IGNORE_INDEX for x in ex.labels[:len(prompt)])


def test_eos_trained_when_pad_equals_eos(tiny_tokenizer):
    tok = tiny_tokenizer
    old = tok.pad_token
    tok.pad_token = tok.eos_token
    try:
        ex = tokenize_example(tok, _chat("s", "u", "a"))
        assert ex.labels[-2] == tok.eos_token_id  # last is the untrained "\n"
    finally:
        tok.pad_token = old


def test_weight_zero_turn_is_not_trained(tiny_tokenizer):
    ex = tokenize_example(tiny_tokenizer, _chat("q1", "first", "q2", "second", weights=[None, 0, None, 1]))
    assert trained_text(tiny_tokenizer, ex) == "second<|im_end|>"


def test_multi_turn_trains_every_answer(tiny_tokenizer):
    ex = tokenize_example(tiny_tokenizer, _chat("q1", "first", "q2", "second"))
    assert trained_text(tiny_tokenizer, ex) == "first<|im_end|>second<|im_end|>"


def test_plain_text_trains_everything_with_eos(tiny_tokenizer):
    ex = tokenize_example(tiny_tokenizer, Example([], text="the quick brown fox"))
    assert ex.labels == ex.input_ids
    assert ex.input_ids[-1] == tiny_tokenizer.eos_token_id


def test_template_without_end_token_gets_eos(tiny_tokenizer):
    plain = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
             "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
    ex = tokenize_example(tiny_tokenizer, _chat("hi", "yo"), plain)
    assert [t for t in ex.labels if t != IGNORE_INDEX][-1] == tiny_tokenizer.eos_token_id


def test_end_of_turn_ids_are_those_in_the_vocabulary(tiny_tokenizer):
    import copy

    from tunelab.data.template import _END_OF_TURN_TOKENS, end_of_turn_ids

    tok = copy.deepcopy(tiny_tokenizer)
    tok.unk_token = "<|pad|>"  # a missing "</s>" looks up as this id: it must not count
    vocab = tok.get_vocab()
    present = {vocab[t] for t in _END_OF_TURN_TOKENS if t in vocab}
    assert "</s>" not in vocab and tok.convert_tokens_to_ids("</s>") == vocab["<|pad|>"]
    assert end_of_turn_ids(tok) == present | {tok.eos_token_id}
    assert vocab["<|pad|>"] not in end_of_turn_ids(tok)
