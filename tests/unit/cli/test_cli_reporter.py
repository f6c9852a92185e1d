"""The CLI reporter's progress bars: ETA from the steady pace, silence with --no-progress."""

import io

import pytest

from tunelab.cli.reporter import STEADY_WINDOW, EtaBar, StderrReporter, SteadyEta
from tunelab.tracking.reporter import Progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_eta_ignores_a_slow_first_step():
    clock = FakeClock()
    eta = SteadyEta(total=100, clock=clock)
    clock.now += 60  # step 1: one-time costs
    eta.update()
    for _ in range(4):  # steps 2-5: the steady pace
        clock.now += 1
        eta.update()
    assert eta.remaining() == pytest.approx(95.0)  # the mean from the start: 95 * 12.8 s
    assert eta.text("step") == "ETA 01:35 (1.00 s/step)"


def test_eta_estimating_until_the_first_steady_step():
    clock = FakeClock()
    eta = SteadyEta(total=10, clock=clock)
    assert eta.text("step") == "ETA estimating..."
    for _ in range(2):
        clock.now += 5
        eta.update()
        assert eta.remaining() is None and eta.text("step") == "ETA estimating..."
    clock.now += 2
    eta.update()
    assert eta.remaining() == pytest.approx(14.0)


def test_eta_median_is_not_moved_by_a_validation_step_and_follows_the_recent_pace():
    clock = FakeClock()
    eta = SteadyEta(total=1000, clock=clock)
    for d in [30, 30] + [2] * 10 + [50] + [2] * 5:  # warm-up, steps, one that validated
        clock.now += d
        eta.update()
    assert eta.seconds_per_unit() == pytest.approx(2.0)
    for _ in range(STEADY_WINDOW):  # the machine got busier: the window follows
        clock.now += 4
        eta.update()
    assert eta.seconds_per_unit() == pytest.approx(4.0)


def test_eta_per_unit_with_several_units_per_update_and_a_resumed_start():
    clock = FakeClock()
    eta = SteadyEta(total=100, initial=50, clock=clock)
    for _ in range(3):
        clock.now += 1
        eta.update(10)
    assert eta.n == 80 and eta.remaining() == pytest.approx(20 * 0.1)
    assert eta.text("row") == "ETA 00:02 (10.0 row/s)"
    for _ in range(2):
        clock.now += 1
        eta.update(10)
    assert eta.remaining() == 0 and eta.text("row") == "10.0 row/s"  # done: no ETA 00:00
    unknown = SteadyEta(total=None, clock=clock)
    for _ in range(3):
        clock.now += 2
        unknown.update()
    assert unknown.remaining() is None and unknown.text("row") == "2.00 s/row"


def test_eta_takes_a_burst_of_updates_as_one():
    # continuous batching: 16 generations finish within a millisecond, every 4 s
    clock = FakeClock()
    eta = SteadyEta(total=160, clock=clock)
    for _ in range(6):
        clock.now += 4.0
        for _ in range(16):
            eta.update()
            clock.now += 0.0001
    assert eta.seconds_per_unit() == pytest.approx(0.25, rel=0.01)
    assert eta.text("prompt") == "ETA 00:16 (4.0 prompt/s)"


def test_bar_draws_our_eta_not_tqdms():
    clock, out = FakeClock(), io.StringIO()
    bar = EtaBar(total=100, desc="train", unit="step", file=out, clock=clock)
    clock.now += 60
    bar.update()
    for _ in range(4):
        clock.now += 1
        bar.update()
    bar.set_postfix(loss="0.5000")
    bar.close()
    last = out.getvalue().replace("\r", "\n").strip().splitlines()[-1]
    assert "5/100" in last and "ETA 01:35 (1.00 s/step), loss=0.5000" in last
    assert "<" not in last  # tqdm's own remaining time ([elapsed<remaining]) is not shown


def test_no_progress_bars_are_silent(capsys):
    bar = StderrReporter(bars=False).bar(total=3, desc="train", unit="step")
    assert type(bar) is Progress
    with bar:
        bar.update(3)
        bar.set_postfix(loss=1.0)
    assert capsys.readouterr() == ("", "")
