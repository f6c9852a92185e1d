"""Learning curves without training: fractions, slices, the verdict, the report folder."""

import json
import math

import pytest

from tunelab.errors import UsageError
from tunelab.eval.curve import (
    RULES,
    Curve,
    CurvePoint,
    format_table,
    parse_fractions,
    slices,
    verdict,
    write_curve_report,
)


def test_fractions_are_sorted_and_distinct():
    assert parse_fractions("0.1,0.25,0.5,1") == [0.1, 0.25, 0.5, 1.0]
    assert parse_fractions(" 1, 0.5 ,0.5,") == [0.5, 1.0]
    assert parse_fractions([0.75, 0.2]) == [0.2, 0.75]


@pytest.mark.parametrize(("text", "says"), [
    ("0.1,abc", "must be a number"),
    ("0,0.5", "0 outside (0, 1]"),
    ("0.5,1.5", "1.5 outside (0, 1]"),
    ("-0.1,1", "-0.1 outside"),
    ("nan,1", "nan outside"),
    ("1", "two or more distinct fractions"),
    ("0.5,0.5", "two or more distinct fractions"),
    ("", "two or more distinct fractions"),
])
def test_bad_fractions_say_what_is_wrong_with_a_hint(text, says):
    with pytest.raises(UsageError, match="--fractions") as e:
        parse_fractions(text)
    assert says in e.value.message and "--fractions 0.1,0.25,0.5,1" in e.value.hint


def test_slices_round_fractions_of_the_rows_and_merge_equal_counts():
    plan, notes = slices([0.1, 0.25, 0.5, 1.0], 1000)
    assert [(s.fraction, s.rows) for s in plan] == [(0.1, 100), (0.25, 250), (0.5, 500), (1.0, 1000)]
    assert notes == []
    plan, notes = slices([0.5, 0.51, 1.0], 10)
    assert [s.rows for s in plan] == [5, 10]
    assert notes == ["fractions 0.5 and 0.51 both give 5 rows; that slice is trained once"]


def test_slices_refuse_what_is_no_curve():
    with pytest.raises(UsageError, match="0.01 of 20 training rows is no row"):
        slices([0.01, 1.0], 20)
    with pytest.raises(UsageError, match="one point is not a curve"):
        slices([0.9, 1.0], 4)
    with pytest.raises(UsageError, match="1 training row"):
        slices([0.5, 1.0], 1)


def test_verdict_more_data_helps_when_the_last_doubling_gains_enough():
    v = verdict([100, 200, 400], [0.60, 0.70, 0.76], "accuracy")
    assert v.helps is True and v.per_doubling == pytest.approx(0.06)
    assert v.text.startswith("more data still helps: +0.0600 accuracy per doubling of rows")
    assert "200 -> 400 rows" in v.text


def test_verdict_flattened_below_the_threshold_and_per_doubling_not_per_step():
    # 250 -> 1000 rows is two doublings: +0.012 over two is +0.006 per doubling
    v = verdict([250, 1000], [0.800, 0.812], "accuracy")
    assert v.helps is False and v.per_doubling == pytest.approx(0.006)
    assert v.threshold == RULES["accuracy"].min_gain
    assert v.text.startswith("the curve has flattened: +0.0060 accuracy per doubling")
    assert v.text.endswith("more rows would mostly cost time")
    assert verdict([100, 200], [0.8, 0.7], "accuracy").helps is False  # worse is no gain


def test_verdict_of_a_loss_or_an_error_wants_it_lower_relative_to_its_size():
    helps = verdict([100, 200], [2.0, 1.5], "loss")
    assert helps.helps is True and helps.per_doubling == pytest.approx(-0.5)
    assert "-0.5000 loss per doubling" in helps.text and "lower is better" in helps.text
    flat = verdict([100, 200], [2.0, 1.99], "loss")  # 0.5% of the loss: under 2%
    assert flat.helps is False and flat.threshold == pytest.approx(0.04)
    assert verdict([100, 400], [1.0, 0.9], "mae").helps is True  # 0.05 per doubling >= 0.02
    assert verdict([100, 200], [1.0, 1.1], "mae").helps is False


def test_no_verdict_without_values_for_the_two_largest_slices():
    v = verdict([100, 200], [0.5, None], "accuracy")
    assert v.helps is None and v.per_doubling is None and v.text.startswith("no verdict")
    assert verdict([100], [0.5], "accuracy").helps is None


def _point(rows, value, seconds):
    return CurvePoint(fraction=rows / 400, rows=rows, trained_rows=rows, run=f"c/runs/rows-{rows}",
                      steps=rows // 4, epochs=1.0, train_tokens=rows * 30,
                      train_seconds=seconds, wall_seconds=seconds + 5, slice_seconds=seconds + 9,
                      eval_seconds=4.0, val_loss=1.0 - value / 2, val_token_accuracy=value,
                      final_val_loss=1.0, best_val_loss=0.9, value=value)


def test_the_report_has_the_table_two_plots_and_every_number(tmp_path):
    points = [_point(100, 0.6, 30.0), _point(200, 0.7, 60.0), _point(400, 0.705, 120.0)]
    curve = Curve(name="curve-sst2", runs="curve-sst2/runs", metric="accuracy", lower_is_better=False, total_rows=400,
                  evaluated_on="the task's accuracy on 50 rows of dev.tsv", eval_rows=50,
                  training="1 epoch(s) per slice", points=points,
                  verdict=verdict([100, 200, 400], [0.6, 0.7, 0.705], "accuracy"),
                  notes=["fractions 0.5 and 0.51 both give 200 rows; that slice is trained once"])
    index = write_curve_report(tmp_path / "curve-sst2", curve)
    text = index.read_text()
    assert "Learning curve: curve-sst2" in text and "the curve has flattened" in text
    assert text.count("data-plot=") == 2 and "rows-400" in text and "trained once" in text
    for png in ("plots/metric_by_rows.png", "plots/metric_by_minutes.png"):
        assert (index.parent / png).read_bytes().startswith(b"\x89PNG")
    saved = json.loads((index.parent / "curve.json").read_text())
    assert [p["rows"] for p in saved["points"]] == [100, 200, 400]
    assert saved["verdict"]["helps"] is False
    assert math.isclose(saved["verdict"]["per_doubling"], 0.005)
    lines = format_table(curve).splitlines()
    assert lines[0].split() == ["fraction", "rows", "steps", "train", "min", "slice", "min",
                                "val", "loss", "val", "token", "acc", "accuracy"]
    assert lines[3].split() == ["1", "400", "100", "2.00", "2.15", "0.6475", "0.7050", "0.7050"]


def test_a_loss_curve_has_no_extra_metric_column(tmp_path):
    points = [_point(100, 0.6, 30.0), _point(200, 0.7, 60.0)]
    curve = Curve(name="c", runs="c/runs", metric="loss", lower_is_better=True, total_rows=200,
                  evaluated_on="validation loss", eval_rows=None, training="t", points=points,
                  verdict=verdict([100, 200], [0.7, 0.65], "loss"))
    assert format_table(curve).splitlines()[0].split()[-1] == "acc"
    assert write_curve_report(tmp_path, curve).is_file()


def test_eval_rows_with_another_text_column_are_read_by_their_own(tmp_path):
    """SST-2 trains on `sentence` and its dev file holds `content`: the curve scores dev."""
    from tunelab.config.evaluation import eval_settings, with_task
    from tunelab.config.task import TaskSettings
    from tunelab.eval.runner import fit_text_field
    from tunelab.tracking.reporter import Recorder

    dev = tmp_path / "dev.tsv"
    dev.write_text("label\tcontent\n0\ta slog\n1\ta triumph\n")
    task = TaskSettings(type="classify", text_field="sentence", labels={"0": "negative", "1": "positive"})
    said = Recorder()
    s = fit_text_field(with_task(eval_settings({}), task), task, str(dev), said)
    assert s.text_field == "content" and s.labels == ["0", "1"]
    assert said.lines == [f"{dev} has no 'sentence' column (the run's text); reading 'content' "
                          "instead (set --text-field to choose)"]
    same = with_task(eval_settings({}), task.model_copy(update={"text_field": "content"}))
    assert fit_text_field(same, task, str(dev)) is same
