"""Atomic writes (whole or not at all, the umask's mode, one error rule) and the YAML reader."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from tunelab.errors import ConfigError, DataError, StoreError
from tunelab.files import (
    fsync_dir,
    read_yaml_mapping,
    sha256_file,
    write_atomic,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_text_replaces_the_old_file_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "sub" / "out.txt"  # the folder is created
    write_text_atomic(target, "first\n")
    write_text_atomic(target, "zweite Zeile é\r\n")
    assert target.read_bytes() == "zweite Zeile é\r\n".encode()  # line ends as given
    assert names(target.parent) == ["out.txt"]


def test_an_error_mid_write_keeps_the_old_file_and_removes_the_temporary_one(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")

    def half_then_full_disk(tmp: Path) -> None:
        tmp.write_bytes(b"half of the n")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(StoreError) as e:
        write_atomic(target, half_then_full_disk)
    assert str(target) in e.value.message and "No space left" in e.value.message
    assert e.value.hint and "free space" in e.value.hint
    assert target.read_text() == "old" and names(tmp_path) == ["report.json"]


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, ValueError])
def test_anything_else_passes_through_after_the_cleanup(tmp_path, interrupt):
    target = tmp_path / "weights.bin"
    target.write_bytes(b"old")

    def write(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise interrupt("stop")

    with pytest.raises(interrupt):
        write_atomic(target, write, error=DataError)
    assert target.read_bytes() == b"old" and names(tmp_path) == ["weights.bin"]


def test_the_caller_chooses_the_error_class(tmp_path):
    folder_in_the_way = tmp_path / "out.json"
    folder_in_the_way.mkdir()
    with pytest.raises(DataError, match="out.json: cannot be written"):
        write_json_atomic(folder_in_the_way, {"a": 1}, error=DataError)
    with pytest.raises(StoreError):
        write_bytes_atomic(folder_in_the_way, b"x")
    assert names(tmp_path) == ["out.json"]  # no temporary file left beside it


@pytest.mark.skipif(os.name != "posix", reason="file modes and umask are POSIX")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_the_new_file_gets_the_umask_mode_not_mkstemps_0600(tmp_path, umask, mode):
    target = tmp_path / "summary.json"
    target.write_text("old")
    os.chmod(target, 0o600)  # the old file's mode does not carry over either
    old = os.umask(umask)
    try:
        write_json_atomic(target, {"done": True})
        write_atomic(tmp_path / "w.bin", lambda tmp: tmp.write_bytes(b"\0"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "w.bin").stat().st_mode) == mode


def test_json_keeps_key_order_and_unicode_and_writes_paths_as_text(tmp_path):
    target = write_json_atomic(tmp_path / "m.json", {"z": 1, "a": "ünï", "p": Path("/x/y")})
    text = target.read_text(encoding="utf-8")
    assert text.endswith("}\n") and "ünï" in text
    assert list(json.loads(text)) == ["z", "a", "p"] and json.loads(text)["p"] == "/x/y"


def test_sha256_file_and_fsync_dir(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"abc" * 1_000_000)  # more than one 1 MiB chunk
    assert sha256_file(path) == hashlib.sha256(b"abc" * 1_000_000).hexdigest()
    fsync_dir(tmp_path)  # a real folder syncs without error


def test_yaml_mapping_reads_a_mapping_and_an_empty_file(tmp_path):
    (tmp_path / "a.yaml").write_text("train:\n  epochs: 2\n")
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    assert read_yaml_mapping(tmp_path / "a.yaml", "config file") == {"train": {"epochs": 2}}
    assert read_yaml_mapping(tmp_path / "empty.yaml", "config file") == {}


def test_yaml_syntax_errors_name_the_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  train: x.jsonl\n  max_length: 64: 3\n")  # column 17: the 2nd colon
    with pytest.raises(ConfigError) as e:
        read_yaml_mapping(bad, "config file")
    text = str(e.value)
    assert f"{bad}:3:17: not valid YAML: mapping values are not allowed here" in text
    assert "<unicode string>" not in text
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"{bad}:2:1: not valid YAML: expected ',' or ']'.*"
                                          r"\(while parsing a flow sequence at line 1, column 7\)"):
        read_yaml_mapping(bad, "config file")


def test_yaml_missing_unreadable_and_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="terms file '.*nope.yaml' does not exist"):
        read_yaml_mapping(tmp_path / "nope.yaml", "terms file")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level of the run config must be a mapping .* got list"):
        read_yaml_mapping(tmp_path / "list.yaml", "run config")
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match="cannot be read as UTF-8"):
        read_yaml_mapping(tmp_path / "latin1.yaml", "config file")


def test_tunelab_home_follows_env_else_user_cache(tmp_path, monkeypatch):
    from tunelab.files import tunelab_home

    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "h"))
    assert tunelab_home() == tmp_path / "h"
    monkeypatch.delenv("TUNELAB_HOME")
    assert tunelab_home().name.lower() == "tunelab"
