"""The Reporter lower layers talk through: silent by default, recordable, bar-less."""

import pickle

from tunelab.tracking.reporter import SILENT, Progress, Recorder, WithoutBars


def test_silent_says_nothing_and_its_bar_is_a_no_op():
    SILENT.info("x")
    SILENT.warning("y")
    with SILENT.bar(3, "phase") as bar:
        bar.update(2)
        bar.set_postfix(loss=1.0)
    assert isinstance(bar, Progress)


def test_recorder_keeps_lines_in_order_with_warnings_marked():
    r = Recorder()
    r.info("reading data")
    r.warning("2 rows dropped")
    assert r.lines == ["reading data", "warning: 2 rows dropped"]


def test_without_bars_passes_lines_on_draws_no_bar_and_pickles():
    inner = Recorder()
    r = WithoutBars(inner)
    r.info("trial 3")
    r.warning("SIGINT: finishing this step")
    assert inner.lines == ["trial 3", "warning: SIGINT: finishing this step"]
    assert type(r.bar(10, "train")) is Progress  # a search's trials show no per-step bar
    copy = pickle.loads(pickle.dumps(r))  # handed to `tunelab tune --workers N` processes
    assert copy.inner.lines == inner.lines
