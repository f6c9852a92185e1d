"""The search: and phases: blocks: validated against the schema, all problems at once."""

import pytest

from tunelab.config import config_from_dict, dump_config
from tunelab.config.compose import apply_values, phase_config
from tunelab.config.loader import load_config
from tunelab.errors import ConfigError

BASE = {"data": {"train": "a.jsonl", "validation_split": 0.2}}
LR = {"type": "float", "low": 1e-5, "high": 1e-2, "log": True}


def problems(data, overrides=()):
    with pytest.raises(ConfigError) as ei:
        config_from_dict(data, list(overrides))
    return ei.value.problems


def test_a_valid_search_block_and_its_defaults(tmp_path):
    cfg = config_from_dict({**BASE, "search": {"params": {
        "train.learning_rate": LR, "lora.r": {"type": "categorical", "choices": [4, 8]},
        "train.epochs": {"type": "int", "low": 1, "high": 3}}}}, base_dir=tmp_path)
    s = cfg.search
    assert (s.sampler, s.pruner, s.metric, s.direction, s.trials) == ("tpe", "median", "loss", "minimize", 20)
    assert s.params["lora.r"].grid_values() == [4, 8]
    acc = config_from_dict({**BASE, "search": {"metric": "token_accuracy", "params": {"train.learning_rate": LR}}})
    assert acc.search.direction == "maximize"


def test_every_search_and_phase_problem_is_reported_at_once():
    data = {**BASE, "train": {"learning_rate": "fast"},
            "search": {"sampler": "grid", "params": {
                "train.learning_rate": LR,                                        # grid: no values
                "lora.r": {"type": "categorical", "choices": [0, 4]},             # 0 is not a valid rank
                "train.lerning_rate": {"type": "float", "low": 1, "high": 2},     # typo
                "train.epochs": {"type": "int", "low": 3, "high": 1},             # low > high
                "data.train": {"type": "categorical", "choices": ["x.jsonl"]},    # a list setting
                "nonsense": {"type": "float", "low": 1, "high": 2}},
                "enqueue": [{"train.warmup_ratio": 0.1}]},
            "phases": [{"train": {"learning_rate": -1, "bogus": 1}}, {"data": {"max_length": 0}}]}
    probs = problems(data)
    expected = ["train.learning_rate:", "search.params.train.learning_rate: the grid sampler needs",
                "search.params.lora.r: 0 is not a valid lora.r", "search.params.train.lerning_rate:",
                "search.params.train.epochs: low", "search.params.data.train:", "search.params.nonsense:",
                "search.enqueue.0:", "phases.0.train.learning_rate:", "phases.0.train.bogus: unknown key",
                "phases.1.data.max_length:"]
    for want in expected:
        assert any(p.startswith(want) for p in probs), (want, probs)
    assert len(probs) == len(expected)


def test_cli_style_override_makes_grid_need_values():
    data = {**BASE, "search": {"params": {"train.learning_rate": LR}}}
    config_from_dict(data)  # tpe: fine
    assert any("grid sampler needs" in p for p in problems(data, ["search.sampler=grid"]))


def test_apply_values_sets_dotted_paths_and_drops_the_search():
    cfg = config_from_dict({**BASE, "search": {"params": {"train.learning_rate": LR}}})
    trial = apply_values(cfg, {"train.learning_rate": 3e-3, "lora.r": 4})
    assert trial.train.learning_rate == 3e-3 and trial.lora.r == 4 and trial.search is None
    with pytest.raises(ConfigError):
        apply_values(cfg, {"lora.r": -1})


def test_phase_config_merges_overrides_and_resolves_paths(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("data: {train: a.jsonl, validation: v.jsonl}\n"
                 "train: {learning_rate: 1.0e-3, max_steps: 5}\n"
                 "phases:\n  - {name: one}\n"
                 "  - {data: {train: [b.jsonl, {path: c.jsonl, weight: 2}]}, "
                 "train: {method: full, learning_rate: 1.0e-5}}\n")
    cfg = load_config(p)
    one, two = phase_config(cfg, 0), phase_config(cfg, 1)
    assert one.train.method == "lora" and one.data.train[0].path == str(tmp_path / "a.jsonl")
    assert two.train.method == "full" and two.train.learning_rate == 1e-5 and two.train.max_steps == 5
    assert [s.path for s in two.data.train] == [str(tmp_path / "b.jsonl"), str(tmp_path / "c.jsonl")]
    assert two.data.train[1].weight == 2 and two.data.validation[0].path == str(tmp_path / "v.jsonl")
    assert two.phases == [] and two.search is None
    # the resolved config (as written to config.yaml) loads again from anywhere
    again = config_from_dict(__import__("yaml").safe_load(dump_config(cfg)))
    assert phase_config(again, 1).data.train[0].path == str(tmp_path / "b.jsonl")
