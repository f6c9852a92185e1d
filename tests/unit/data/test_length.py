import pytest

from tunelab.data.length import apply_length_policy
from tunelab.data.template import IGNORE_INDEX, TokenizedExample
from tunelab.errors import DataError


def rows():
    return [TokenizedExample([1] * 5, [IGNORE_INDEX] * 3 + [1, 1], "f", 1),
            TokenizedExample([1] * 12, [IGNORE_INDEX] * 10 + [1, 1], "f", 2),
            TokenizedExample([1] * 4, [IGNORE_INDEX] * 4, "f", 3)]


def test_drop_counts_and_names_lines():
    kept, rep = apply_length_policy(rows(), 8, "drop")
    assert [r.line for r in kept] == [1]
    assert rep.dropped == 1 and rep.no_loss_tokens == 1 and rep.longest == 12
    assert "f:2" in rep.dropped_lines


def test_truncate_keeps_rows_that_still_train():
    kept, rep = apply_length_policy(rows(), 8, "truncate")
    # row 2 truncated to 8 tokens has no answer tokens left: set aside, counted
    assert rep.truncated == 1 and rep.no_loss_tokens == 2 and len(kept) == 1


def test_error_names_every_row():
    with pytest.raises(DataError) as ei:
        apply_length_policy(rows(), 4, "error")
    assert len(ei.value.findings) == 2 and "f:2" in ei.value.findings[1]
