"""The curated public API: every name in ``tunelab.__all__`` resolves, lazily."""

import subprocess
import sys

import tunelab


def test_all_is_sorted_and_every_name_resolves():
    assert tunelab.__all__ == sorted(tunelab.__all__)
    assert set(tunelab._LAZY) <= set(tunelab.__all__)
    for name in tunelab.__all__:
        assert getattr(tunelab, name) is not None, name


def test_unknown_name_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tunelab.nope  # noqa: B018


def test_names_load_on_first_use_only():
    code = ("import sys, tunelab; before = 'tunelab.recipes.train' in sys.modules; "
            "tunelab.run_train; print(before, 'tunelab.recipes.train' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
