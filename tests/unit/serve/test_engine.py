"""The generation engine: batching does not change answers; stopping and decoding."""

import pytest
import torch

from tunelab.data.example import Message
from tunelab.data.template import render_prompt_ids
from tunelab.serve.engine import GenerationEngine, GenerationSettings

CHATS = [
    [Message("user", "Hi")],
    [Message("system", "You route tickets."),
     Message("user", "My invoice was charged twice, please refund the payment.")],
    [{"role": "user", "content": "The app crashes when I open settings on my phone."}],
    [Message("user", "Where is my parcel? The tracking number does not work. "
                     "I want to reset my password and change the account email.")],
    [Message("user", "0 1 2 3")],
]


@pytest.fixture
def lively_model(tiny_tokenizer):
    """The tiny model with weights redrawn larger: at the default init it repeats one
    token for every prompt, which would make batched-vs-single comparisons vacuous."""
    from tiny import make_tiny_model

    model = make_tiny_model(tiny_tokenizer, seed=0)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.5)
    return model


@pytest.fixture
def engine(lively_model, tiny_tokenizer):
    return GenerationEngine(lively_model, tiny_tokenizer)


def _reference_greedy(model, tokenizer, prompt, max_new_tokens, stop_ids):
    """Plain token-by-token greedy decoding without padding or cache."""
    ids = list(prompt)
    new = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            t = int(logits.argmax())
            new.append(t)
            ids.append(t)
            if t in stop_ids:
                break
    return new


def test_prompts_have_different_lengths(engine):
    lengths = {len(engine.render(c)) for c in CHATS}
    assert len(lengths) == len(CHATS)


def test_batched_greedy_equals_one_at_a_time(engine):
    batched = engine.generate(CHATS, max_new_tokens=12, batch_size=4)
    single = [engine.generate([c], max_new_tokens=12, batch_size=1)[0] for c in CHATS]
    assert len(set(single)) == len(CHATS)  # the answers depend on the prompt
    assert batched == single
    assert engine.generate(CHATS, max_new_tokens=12, batch_size=len(CHATS)) == single


def test_batched_ids_equal_unpadded_reference_decoding(engine, lively_model, tiny_tokenizer):
    prompts = [engine.render(c) for c in CHATS]
    got = engine.complete_ids(prompts, max_new_tokens=10, batch_size=3)
    for prompt, ids in zip(prompts, got, strict=True):
        assert ids == _reference_greedy(lively_model, tiny_tokenizer, prompt, 10, engine.stop_ids)


def test_prompts_are_rendered_with_the_shared_template(engine, tiny_tokenizer):
    assert engine.render(CHATS[1]) == render_prompt_ids(tiny_tokenizer, CHATS[1])
    assert tiny_tokenizer.decode(engine.render(CHATS[0])).endswith("<|im_start|>assistant\n")


def test_stops_at_end_of_turn_and_keeps_order(tiny_tokenizer):
    """A model that always says 'billing' then <|im_end|>, then junk, stops at <|im_end|>."""
    word = tiny_tokenizer("billing", add_special_tokens=False)["input_ids"]
    im_end = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    script = [*word, im_end] + tiny_tokenizer("fox", add_special_tokens=False)["input_ids"] * 5

    class Scripted(torch.nn.Module):
        """Says ``script`` one token per step: each id is chosen by the row's last id."""

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.generation_config = None
            self.seen_attention_masks = []

        def forward(self, input_ids, attention_mask, logits_to_keep=1, **kwargs):
            self.seen_attention_masks.append(attention_mask.clone())
            logits = torch.zeros((input_ids.shape[0], 1, len(tiny_tokenizer)))
            for row, last in enumerate(input_ids[:, -1].tolist()):
                k = script.index(last) + 1 if last in script else 0
                logits[row, 0, script[k]] = 1.0
            return type("Out", (), {"logits": logits})()

    model = Scripted()
    engine = GenerationEngine(model, tiny_tokenizer)
    assert im_end in engine.stop_ids
    out = engine.generate(CHATS, max_new_tokens=20, batch_size=2)
    assert out == ["billing"] * len(CHATS)
    ids = engine.complete_ids([engine.render(CHATS[0])], max_new_tokens=20)
    assert ids == [[*word, im_end]]
    # Left padding: every row's mask ends in ones, and the padded rows start with zeros.
    for mask in model.seen_attention_masks:
        assert bool(mask[:, -1].all())
    assert any(not bool(m[:, 0].all()) for m in model.seen_attention_masks)
    cut = engine.complete_ids([engine.render(CHATS[0])], max_new_tokens=1)
    assert cut == [word[:1]]  # cut at max_new_tokens: the last id is no stop id


def test_restores_training_mode_and_uses_inference_mode(tiny_model, tiny_tokenizer):
    tiny_model.train()
    seen = {}

    def spy(module, args):
        seen["training"] = module.training
        seen["inference"] = torch.is_inference_mode_enabled()

    tiny_model.register_forward_pre_hook(spy)
    GenerationEngine(tiny_model, tiny_tokenizer).generate(CHATS[:1], max_new_tokens=2)
    assert seen == {"training": False, "inference": True}
    assert tiny_model.training


def test_sampling_is_repeatable_with_a_seed_and_leaves_global_rng(engine):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = engine.generate(CHATS, max_new_tokens=8, do_sample=True, temperature=1.5, seed=7)
    b = engine.generate(CHATS, max_new_tokens=8, do_sample=True, temperature=1.5, seed=7)
    assert a == b
    assert torch.equal(torch.get_rng_state(), before)


def test_empty_inputs_and_bad_settings(engine):
    assert engine.generate([]) == []
    assert engine.complete_ids([]) == []
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        engine.complete_ids([[1, 2], []])
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1.*batch_size must be >= 1"):
        engine.generate(CHATS, max_new_tokens=0, batch_size=0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        engine.generate(CHATS, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        engine.generate(CHATS, do_sample=True, top_p=1.5)


def test_settings_object_and_keywords_are_one_api(engine):
    greedy = GenerationSettings(max_new_tokens=6, batch_size=2)
    by_keywords = engine.generate(CHATS, max_new_tokens=6, batch_size=2)
    assert engine.generate(CHATS, greedy) == by_keywords
    assert engine.generate(CHATS, greedy, batch_size=5) == by_keywords  # an override wins
    assert engine.complete_ids([[1, 2, 3]], greedy, max_new_tokens=1)[0] == \
        engine.complete_ids([[1, 2, 3]], max_new_tokens=1)[0]
    with pytest.raises(TypeError, match="max_tokens"):
        engine.generate(CHATS, max_tokens=3)  # a misspelt setting is not ignored
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        GenerationSettings(batch_size=0)  # checked when made, before any prompt is rendered


def test_progress_bar(engine, capsys):
    from tunelab.cli.reporter import StderrReporter

    engine.generate(CHATS, max_new_tokens=2, batch_size=2, progress=StderrReporter().bar)
    assert "5/5" in capsys.readouterr().err


def test_tokenizer_without_pad_falls_back_to_eos(lively_model, tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.pad_token = None
    engine = GenerationEngine(lively_model, tok)
    assert engine.pad_token_id == tok.eos_token_id
    ref = GenerationEngine(lively_model, tiny_tokenizer)
    assert engine.generate(CHATS, max_new_tokens=6) == ref.generate(CHATS, max_new_tokens=6)
