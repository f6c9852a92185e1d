"""The few-rows linear path: the same product, taken only while decoding without gradients."""

import torch

from tunelab.serve.linear import MAX_ROWS, decoding, fast_decode_linears


def test_patched_linears_give_the_same_product_and_only_while_decoding(monkeypatch):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(24, 40), torch.nn.ReLU(), torch.nn.Linear(40, 8, bias=False))
    x = torch.randn(4, 1, 24)
    with torch.no_grad():
        expected = model(x)
    assert fast_decode_linears(model) == 2 and fast_decode_linears(model) == 0  # once
    calls = []
    real_mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda a, b: calls.append(a.shape) or real_mm(a, b))
    with torch.no_grad():
        assert torch.allclose(model(x), expected, atol=1e-6)
        assert calls == []  # outside decoding(): F.linear
        with decoding():
            got = model(x)
        assert got.is_contiguous() and got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-5)
        assert calls == [(40, 24), (8, 40)]  # W @ x^T
        with decoding():
            model(torch.randn(MAX_ROWS + 1, 24))  # many rows (prefill): F.linear
            model(torch.randn(1, 24))  # one row: F.linear
    assert len(calls) == 2
    with decoding():
        y = model(x)  # gradients on (training): F.linear, and backward works
        y.sum().backward()
    assert len(calls) == 2 and model[0].weight.grad is not None


def test_layers_whose_output_meets_only_elementwise_ops_keep_the_transposed_layout():
    torch.manual_seed(0)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj = torch.nn.Linear(24, 24)
            self.down_proj = torch.nn.Linear(24, 24)

    model = torch.nn.Module()
    model.block = Block()
    model.lm_head = torch.nn.Linear(24, 40, bias=False)
    x = torch.randn(8, 1, 24)
    with torch.no_grad():
        expected = [model.block.q_proj(x), model.block.down_proj(x), model.lm_head(x)]
        fast_decode_linears(model)
        with decoding():
            got = [model.block.q_proj(x), model.block.down_proj(x), model.lm_head(x)]
    assert got[0].is_contiguous()  # q/k/v feed attention: the usual layout
    assert not got[1].is_contiguous() and not got[2].is_contiguous()  # no copy made
    for g, e in zip(got, expected, strict=True):
        assert torch.allclose(g, e, atol=1e-5)
