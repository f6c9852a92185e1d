"""What the config loader says: did-you-mean, YAML positions, and where a path was looked for."""

from pathlib import Path

import pytest
import yaml

from tunelab.config import config_from_dict, load_config
from tunelab.config.evaluation import load_eval_config
from tunelab.errors import ConfigError

ROW = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'


def _problems(data: dict, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        config_from_dict(data, overrides)
    return ei.value.problems


@pytest.mark.parametrize(("data", "expected"), [
    ({"data": {"train": "a"}, "trian": {}}, "trian: unknown key (did you mean 'train'?)"),
    ({"data": {"train": "a"}, "train": {"learnig_rate": 1}},
     "train.learnig_rate: unknown key (did you mean 'learning_rate'?)"),
    ({"data": {"train": [{"pth": "a"}]}}, "data.train.0.pth: unknown key (did you mean 'path'?)"),
    ({"data": {"train": "a"}, "phases": [{"train": {"max_step": 3}}]},
     "phases.0.train.max_step: unknown key (did you mean 'max_steps'?)"),
    ({"data": {"train": "a"}, "search": {"params": {"train.lr": {"type": "float", "lw": 1}}}},
     "search.params.train.lr.lw: unknown key (did you mean 'low'?)"),
])
def test_an_unknown_key_names_the_closest_valid_one(data, expected):
    assert any(p.startswith(expected) for p in _problems(data)), _problems(data)


def test_an_unknown_key_with_nothing_close_lists_the_section_keys():
    problems = _problems({"data": {"train": "a"}, "lora": {"zzz": 1}})
    assert problems[0].startswith("lora.zzz: unknown key (valid keys here: r, alpha, dropout")


def test_a_misspelt_search_path_and_override_get_a_suggestion():
    problems = _problems({"data": {"train": "a"},
                          "search": {"params": {"train.learnig_rate": {"type": "float",
                                                                       "low": 1, "high": 2}}}})
    assert "train has no setting 'learnig_rate' (did you mean 'learning_rate'?)" in problems[0]
    assert _problems({"data": {"train": "a"}}, ["train.epoch=2"]) == [
        "train.epoch: unknown key (did you mean 'epochs'?) (given: 2)"]


def test_an_evaluation_config_gets_a_suggestion_too(tmp_path):
    path = tmp_path / "eval.yaml"
    path.write_text("tsk: classify\nthresholds: {max_flip: 0.1}\n")
    with pytest.raises(ConfigError) as ei:
        load_eval_config(path)
    assert any("tsk: unknown key (did you mean 'task'?)" in p for p in ei.value.problems)
    assert any("did you mean 'max_flip_rate'?" in p for p in ei.value.problems)


@pytest.mark.parametrize(("text", "where"), [
    ("data:\n  train: [a.jsonl\n", ":3:1: not valid YAML: expected ',' or ']'"),
    ("data:\n  train: a\n   bad: 1\n", ":3:7: not valid YAML: mapping values are not allowed"),
])
def test_a_yaml_error_names_the_file_line_and_column(tmp_path, text, where):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    assert ei.value.problems[0].startswith(f"{path}{where}")
    assert "<unicode string>" not in str(ei.value)
    with pytest.raises(ConfigError) as ei:
        load_eval_config(path)
    assert ei.value.problems[0].startswith(f"{path}{where}")


def test_a_missing_config_names_the_folder_it_was_looked_for_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=f"'nope.yaml' does not exist .*current folder {tmp_path}"):
        load_config("nope.yaml")


@pytest.fixture
def two_folders(tmp_path, monkeypatch):
    """A config in ``cfg/`` with its data beside it, run from ``work/`` with data of its own."""
    cfg, work = tmp_path / "cfg", tmp_path / "work"
    cfg.mkdir()
    work.mkdir()
    (cfg / "beside.jsonl").write_text(ROW)
    (work / "here.jsonl").write_text(ROW)
    (cfg / "run.yaml").write_text(yaml.safe_dump({
        "data": {"train": "beside.jsonl"},
        "phases": [{"data": {"train": "beside.jsonl"}}, {"train": {"max_steps": 1}}]}))
    monkeypatch.chdir(work)
    return cfg, work


def test_paths_in_the_file_start_from_its_folder_overrides_from_the_current_one(two_folders):
    cfg, work = two_folders
    loaded = load_config(cfg / "run.yaml", check_files=True)
    assert loaded.data.train[0].path == str(cfg / "beside.jsonl")
    assert loaded.phases[0].data["train"][0]["path"] == str(cfg / "beside.jsonl")
    loaded = load_config(cfg / "run.yaml", ["data.train=here.jsonl",
                                            "data.validation=[{path: here.jsonl}]"],
                         check_files=True)
    assert loaded.data.train[0].path == str(work / "here.jsonl")
    assert loaded.data.validation[0].path == str(work / "here.jsonl")
    assert loaded.phases[0].data["train"][0]["path"] == str(cfg / "beside.jsonl")


def test_each_missing_path_names_the_folder_used(two_folders):
    cfg, work = two_folders
    (cfg / "run.yaml").write_text(yaml.safe_dump({
        "data": {"train": "gone.jsonl"}, "phases": [{"data": {"validation": "gone2.jsonl"}}]}))
    load_config(cfg / "run.yaml")  # without check_files the paths are only resolved
    with pytest.raises(ConfigError) as ei:
        load_config(cfg / "run.yaml", ["data.validation=beside.jsonl"], check_files=True)
    assert ei.value.problems == [
        f"data.train.0.path: no such file {cfg / 'gone.jsonl'} "
        f"(relative paths in {cfg / 'run.yaml'} start from {cfg})",
        f"data.validation.0.path: no such file {work / 'beside.jsonl'} "
        f"(relative paths on the command line start from the current folder {work})",
        f"phases.0.data.validation.0.path: no such file {cfg / 'gone2.jsonl'} "
        f"(relative paths in {cfg / 'run.yaml'} start from {cfg})",
    ]


def test_the_callers_dict_is_not_changed():
    data = {"data": {"train": ["a.jsonl"]}}
    config_from_dict(data, ["lora.r=4"], base_dir=Path("/somewhere"))
    assert data == {"data": {"train": ["a.jsonl"]}}
