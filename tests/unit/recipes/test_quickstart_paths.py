"""The quickstart's run goes to the default runs folder, the one every other command reads."""

from pathlib import Path

from tunelab.cli.main import build_parser
from tunelab.config.loader import config_from_dict
from tunelab.recipes.quickstart import RECOMMENDED, next_steps, quickstart_config


def test_the_run_goes_where_runs_list_eval_and_generate_look(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config_from_dict(quickstart_config(tmp_path / "qs", "m", RECOMMENDED))
    parser = build_parser()
    looked_in = {parser.parse_args(["runs", "list"]).dir,
                 parser.parse_args(["generate", "r", "--prompt", "p"]).runs_dir,
                 parser.parse_args(["eval", "r", "--data", "d"]).runs_dir,
                 parser.parse_args(["export", "r", "--merge", "o"]).runs_dir}
    assert {Path(d).resolve() for d in looked_in} == {Path(cfg.output.dir)} == {tmp_path / "runs"}


def test_next_steps_name_the_run_or_its_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = next_steps(tmp_path / "runs" / "r1", tmp_path / "qs" / "data" / "test.jsonl")
    assert "  tunelab runs list\n" in default and "tunelab eval r1 --data qs/data/test.jsonl" in default
    elsewhere = next_steps(tmp_path / "other" / "r1", tmp_path / "qs" / "data" / "test.jsonl")
    assert "tunelab runs list --dir other" in elsewhere and "tunelab generate other/r1 " in elsewhere
