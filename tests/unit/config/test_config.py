from pathlib import Path

import pytest

from tunelab.config import config_from_dict, dump_config, load_config
from tunelab.config.schema import FormatName
from tunelab.errors import ConfigError


def test_defaults_and_overrides(tmp_path):
    cfg = config_from_dict({"data": {"train": "a.jsonl"}},
                           ["train.learning_rate=1e-4", "lora.r=8", "train.max_steps=3"],
                           base_dir=tmp_path)
    assert cfg.train.learning_rate == 1e-4
    assert cfg.lora.r == 8 and cfg.train.max_steps == 3
    assert cfg.data.train[0].path == str(tmp_path / "a.jsonl")
    assert cfg.model.name == "smollm2-135m-instruct"


def test_every_problem_reported_at_once():
    with pytest.raises(ConfigError) as ei:
        config_from_dict({"data": {"train": "a.jsonl"},
                          "train": {"learning_rate": "fast", "lr_scheduler": "sideways", "bogus": 1}})
    probs = ei.value.problems
    assert len(probs) == 3
    assert any(p.startswith("train.learning_rate:") and "'fast'" in p for p in probs)
    assert any(p.startswith("train.lr_scheduler:") and "'sideways'" in p for p in probs)
    assert any(p.startswith("train.bogus:") and "unknown key" in p for p in probs)


def test_missing_train_data_named():
    with pytest.raises(ConfigError) as ei:
        config_from_dict({})
    assert ei.value.problems == ["data: required but missing"]


def test_bad_override_syntax():
    with pytest.raises(ConfigError) as ei:
        config_from_dict({"data": {"train": "a"}}, ["nonsense", "=3"])
    assert len(ei.value.problems) == 2


def test_patience_needs_eval_every():
    with pytest.raises(ConfigError) as ei:
        config_from_dict({"data": {"train": "a"}, "train": {"early_stopping_patience": 2}})
    assert "eval_every" in str(ei.value)


def test_yaml_roundtrip_and_relative_paths(tmp_path):
    d = tmp_path / "cfgs"
    d.mkdir()
    (d / "run.yaml").write_text("data:\n  train: ../data/train.jsonl\ntrain:\n  epochs: 2\n")
    cfg = load_config(d / "run.yaml")
    assert Path(cfg.data.train[0].path) == (tmp_path / "data" / "train.jsonl").resolve()
    assert "epochs: 2.0" in dump_config(cfg)


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_format_names_match_the_data_layer():
    from typing import get_args

    from tunelab.data.formats import FORMATS

    assert set(get_args(FormatName)) == {"auto", *FORMATS}
