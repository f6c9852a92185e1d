"""Rank sharding of optimizer steps: the ranks together see one process's rows exactly."""

from tunelab.data.template import TokenizedExample
from tunelab.train.batching import iter_steps
from tunelab.train.distributed import SINGLE, all_reduce_sum, interleave


def rows(n):
    return [TokenizedExample([1] * (3 + i % 7), [-100] + [5] * (2 + i % 7)) for i in range(n)]


def test_rank_shards_interleave_back_to_the_single_process_order():
    rs = rows(23)
    one = [[i for mb in step for i in mb.row_ids] for step in iter_steps(rs, 2, 3, 1, 0, 0, True)]
    for world in (2, 3, 4):
        shards = [[[i for mb in step for i in mb.row_ids]
                   for step in iter_steps(rs, 2, 3, 1, 0, 0, True, rank=r, world_size=world)]
                  for r in range(world)]
        assert all(len(s) == len(one) for s in shards)  # every rank takes part in every step
        for k, step in enumerate(one):
            assert interleave([s[k] for s in shards]) == step


def test_a_short_last_step_can_leave_a_rank_without_rows():
    rs = rows(7)  # 7 rows, 6 per step: the second step has 1 row
    last = [list(iter_steps(rs, 2, 3, 0, 0, 0, False, rank=r, world_size=2))[-1] for r in range(2)]
    assert sum(len(mbs) for mbs in last) == 1 and [] in last


def test_single_process_helpers_are_identity():
    assert all_reduce_sum([1.5, 2.0], SINGLE) == [1.5, 2.0]
    assert interleave([[3, 1, 2]]) == [3, 1, 2]
