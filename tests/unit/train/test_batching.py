from tunelab.data.template import TokenizedExample
from tunelab.train.batching import epoch_order, iter_steps, steps_per_epoch


def _rows(n):
    return [TokenizedExample([1] * (i % 5 + 2), [1] * (i % 5 + 2)) for i in range(n)]


def test_every_row_once_per_epoch_in_seeded_order():
    rs = _rows(21)
    seen = [i for step in iter_steps(rs, 4, 2, seed=3, epoch=0, pad_id=0, group_by_length=True)
            for mb in step for i in mb.row_ids]
    assert sorted(seen) == list(range(21))
    assert epoch_order(21, 3, 0) == epoch_order(21, 3, 0) != epoch_order(21, 3, 1)
    assert steps_per_epoch(21, 4, 2) == 3


def test_grouping_keeps_the_rows_of_each_step():
    rs = _rows(16)
    a = [sorted(i for mb in s for i in mb.row_ids) for s in iter_steps(rs, 2, 4, 0, 0, 0, True)]
    b = [sorted(i for mb in s for i in mb.row_ids) for s in iter_steps(rs, 2, 4, 0, 0, 0, False)]
    assert a == b


def test_resume_from_a_step_gives_the_remaining_steps():
    rs = _rows(16)
    full = [[mb.row_ids for mb in s] for s in iter_steps(rs, 2, 2, 0, 0, 0, True)]
    rest = [[mb.row_ids for mb in s] for s in iter_steps(rs, 2, 2, 0, 0, 0, True, start_step=2)]
    assert rest == full[2:]
