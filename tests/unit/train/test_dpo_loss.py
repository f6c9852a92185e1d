"""The DPO loss and log-probs equal TRL's trainer on the same batch; the reference pass."""

from __future__ import annotations

import pytest
import torch

from tunelab.config.schema import DpoSettings
from tunelab.data.formats import to_example
from tunelab.data.pairs import tokenize_pair
from tunelab.data.template import IGNORE_INDEX
from tunelab.train.batching import MicroBatch
from tunelab.train.preference import (
    DpoObjective,
    ScoredPair,
    dpo_loss,
    pair_batch,
    preference_margin,
    reference_logps,
    sequence_logps,
)

ROWS = [{"prompt": "I was charged twice", "chosen": "billing", "rejected": "shipping please"},
        {"prompt": "the app crashes on start", "chosen": "technical", "rejected": "account"},
        {"prompt": "my parcel is late", "chosen": "shipping", "rejected": "billing twice"}]


def pairs_of(tokenizer):
    return [tokenize_pair(tokenizer, to_example(r, "preference", "p.jsonl", i + 1)[0])
            for i, r in enumerate(ROWS)]


def _answer_span(side):
    at = [i for i, x in enumerate(side.labels) if x != IGNORE_INDEX]
    return side.input_ids[:at[0]], side.input_ids[at[0]:at[-1] + 1]


def test_loss_and_rewards_equal_trl_on_the_same_batch(tmp_path, tiny_tokenizer):
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    from tiny import make_tiny_model

    policy, ref = make_tiny_model(tiny_tokenizer, seed=1), make_tiny_model(tiny_tokenizer, seed=2)
    pairs = pairs_of(tiny_tokenizer)
    rows = []
    for p in pairs:
        prompt, chosen = _answer_span(p.chosen)
        same, rejected = _answer_span(p.rejected)
        assert prompt == same
        rows.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
    beta = 0.3
    args = trl.DPOConfig(output_dir=str(tmp_path), beta=beta, per_device_train_batch_size=3,
                         report_to=[], use_cpu=True, bf16=False, precompute_ref_log_probs=False,
                         max_length=None, save_strategy="no")
    trainer = trl.DPOTrainer(model=policy, ref_model=ref, args=args, processing_class=tiny_tokenizer,
                             train_dataset=datasets.Dataset.from_list(ROWS))
    trainer.model.train()
    want = float(trainer.compute_loss(trainer.model, trainer.data_collator(rows)).detach())
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}

    mb = pair_batch(pairs, [0, 1, 2], tiny_tokenizer.pad_token_id, packed=False)
    with torch.no_grad():
        pl, rl = sequence_logps(policy, mb.sequences), sequence_logps(ref, mb.sequences)
    losses, rc, rr = dpo_loss(pl[:3], pl[3:], rl[:3], rl[3:], beta)
    assert abs(float(losses.mean()) - want) < 1e-5
    assert abs(float(rc.mean()) - metrics["rewards/chosen"]) < 1e-5
    assert abs(float(rr.mean()) - metrics["rewards/rejected"]) < 1e-5
    assert abs(float((rc - rr).mean()) - metrics["rewards/margins"]) < 1e-5
    assert abs(float(pl[:3].mean()) - metrics["logps/chosen"]) < 1e-4  # nats, ~25 in size
    assert abs(want - 0.6931) > 1e-3  # two different models: not the trivial log 2


def test_packed_log_probs_equal_padded(tiny_tokenizer, tiny_model):
    pairs = pairs_of(tiny_tokenizer)
    from tunelab.train.fastpath import fast_training

    padded = pair_batch(pairs, [0, 1, 2], tiny_tokenizer.pad_token_id, packed=False)
    with torch.no_grad():
        want = sequence_logps(tiny_model, padded.sequences)
        with fast_training(tiny_model, packing=True, fused_lora=False) as fp:
            assert fp.packing
            got = sequence_logps(tiny_model, pair_batch(pairs, [0, 1, 2], 0, packed=True).sequences)
    assert torch.allclose(got, want, atol=1e-5)


def test_log_probs_sum_the_answer_tokens_only(tiny_tokenizer, tiny_model):
    (pair,) = pairs_of(tiny_tokenizer)[:1]
    side = pair.chosen
    ids = torch.tensor([side.input_ids])
    with torch.no_grad():
        logits = tiny_model(input_ids=ids).logits[0, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None]).squeeze(1)
        trained = torch.tensor(side.labels[1:]) != IGNORE_INDEX
        got = sequence_logps(tiny_model, MicroBatch(ids, torch.ones_like(ids),
                                                    torch.tensor([side.labels]), [0]))
    assert torch.allclose(got, lp[trained].sum()[None], atol=1e-5)


def test_objective_at_the_reference_is_log_2_and_its_gradient_favours_chosen(tiny_tokenizer):
    from tiny import make_tiny_model
    from tunelab.config.schema import LoraSettings
    from tunelab.models.adapters import apply_lora

    model = apply_lora(make_tiny_model(tiny_tokenizer), LoraSettings(r=4, alpha=8), [])
    pairs = pairs_of(tiny_tokenizer)
    refs = reference_logps(model, pairs, 2, tiny_tokenizer.pad_token_id)
    with torch.no_grad(), model.disable_adapter():  # a new adapter: the reference is the base
        base = reference_logps(model, pairs, 3, tiny_tokenizer.pad_token_id)
    assert torch.allclose(torch.tensor(refs), torch.tensor(base), atol=1e-5)
    scored = [ScoredPair(p, c, r) for p, (c, r) in zip(pairs, refs, strict=True)]
    obj = DpoObjective(DpoSettings(beta=0.5))
    s, n, sums = obj.loss_sum(model, obj.batch(scored, [0, 1, 2], tiny_tokenizer.pad_token_id, False), None)
    assert n == 3 and abs(float(s) / 3 - 0.693147) < 1e-4 and abs(sums["reward_margin"]) < 1e-4
    s.backward()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    opt.step()
    after = obj.evaluate(model, scored, 2, tiny_tokenizer.pad_token_id, torch.device("cpu"))
    assert after["loss"] < 0.693 and after["reward_margin"] > 0 and after["pairs"] == 3
    margin = preference_margin(model, tiny_tokenizer, [to_example(r, "preference", "p", 1)[0]
                                                       for r in ROWS], batch_size=2)
    assert margin.pairs == 3 and margin.margin > 0
    assert abs(margin.margin * 0.5 - after["reward_margin"]) < 1e-4  # beta-scaled the same
