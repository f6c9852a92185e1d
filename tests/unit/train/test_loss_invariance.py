"""The step loss is the mean over answer tokens of the whole step, however it is split."""

import copy

import pytest
import torch
import torch.nn.functional as F

from tunelab.config.schema import TrainSettings
from tunelab.data.example import Example, Message
from tunelab.data.template import IGNORE_INDEX, tokenize_example
from tunelab.train.batching import collate, iter_steps
from tunelab.train.loop import TrainLoop


class Sink:
    def __init__(self):
        self.records = []

    def log(self, split, step, metrics):
        self.records.append((split, step, dict(metrics)))


def rows(tok):
    answers = ["billing", "technical support team", "shipping", "the account team please"]
    exs = [Example([Message("user", f"ticket {i} " * (i + 1)), Message("assistant", a)])
           for i, a in enumerate(answers)]
    return [tokenize_example(tok, e) for e in exs]


def independent_loss(model, tok, rs):
    """Full-logits cross-entropy over every answer token of all rows, one mean."""
    mb = collate(rs, list(range(len(rs))), tok.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits
    lg = logits[:, :-1].reshape(-1, logits.shape[-1])
    tg = mb.labels[:, 1:].reshape(-1)
    return float(F.cross_entropy(lg, tg, ignore_index=IGNORE_INDEX, reduction="sum")
                 / (tg != IGNORE_INDEX).sum())


def one_step(model, tok, rs, batch_size, accum):
    from accelerate import Accelerator

    settings = TrainSettings(batch_size=batch_size, gradient_accumulation_steps=accum, max_steps=1,
                             max_grad_norm=None)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    loop = TrainLoop(model, opt, sched, Accelerator(cpu=True), rs, [], settings,
                     tok.pad_token_id, Sink())
    micro = next(iter_steps(rs, batch_size, accum, seed=0, epoch=0, pad_id=tok.pad_token_id,
                            group_by_length=False))
    assert len(micro) == accum
    return loop._optimizer_step(micro, 1)["loss"]


def test_loss_equals_independent_computation_and_split_invariance(tiny_tokenizer, tiny_model):
    rs = rows(tiny_tokenizer)
    expected = independent_loss(tiny_model, tiny_tokenizer, rs)
    a, b = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
    loss_4x1 = one_step(a, tiny_tokenizer, rs, batch_size=4, accum=1)
    loss_1x4 = one_step(b, tiny_tokenizer, rs, batch_size=1, accum=4)
    assert loss_4x1 == pytest.approx(expected, abs=1e-5)
    assert loss_1x4 == pytest.approx(expected, abs=1e-5)
    # the update (hence the gradient) is the same too
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6), n


def test_answer_rows_of_unequal_length_are_not_averaged_per_row(tiny_tokenizer, tiny_model):
    """A per-row mean would weight the 1-token answer as much as the 4-token one: we don't."""
    rs = rows(tiny_tokenizer)[:2]
    per_row = []
    for r in rs:
        per_row.append(independent_loss(tiny_model, tiny_tokenizer, [r]))
    mean_of_rows = sum(per_row) / 2
    step = one_step(copy.deepcopy(tiny_model), tiny_tokenizer, rs, batch_size=2, accum=1)
    assert step == pytest.approx(independent_loss(tiny_model, tiny_tokenizer, rs), abs=1e-5)
    assert abs(step - mean_of_rows) > 1e-4
