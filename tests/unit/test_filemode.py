"""Files written through a temporary file get the mode of a plainly created file.

``tempfile.mkstemp`` and safetensors >= 0.8 create 0600 files whatever the umask; the
atomic writers set the umask's mode before the rename. The umask 027 used here tells the
right mode (0640) apart from both 0600 (the bug) and a hard-coded 0644.
"""

import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from tunelab.data.table import write_rows
from tunelab.files import (
    current_umask,
    new_file_mode,
    set_new_file_mode,
    write_atomic,
    write_json_atomic,
    write_text_atomic,
)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def plain_mode(folder) -> int:
    with open(folder / "plain.txt", "w") as f:
        f.write("x")
    return mode(folder / "plain.txt")


def test_the_umask_is_read_without_changing_it(umask_027, tmp_path):
    assert current_umask() == 0o027 and current_umask() == 0o027
    assert new_file_mode() == plain_mode(tmp_path) == 0o640


def test_set_new_file_mode_reaches_every_file_under_a_folder(umask_027, tmp_path):
    (tmp_path / "m" / "sub").mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(tmp_path / "m" / "model.safetensors"))
    save_file({"w": torch.zeros(2)}, str(tmp_path / "m" / "sub" / "deep.safetensors"))
    assert mode(tmp_path / "m" / "model.safetensors") == 0o600  # why the helper exists
    set_new_file_mode(tmp_path / "m")
    want = plain_mode(tmp_path)
    assert {mode(p) for p in (tmp_path / "m").rglob("*.safetensors")} == {want}


@pytest.mark.parametrize("write", [
    lambda p: write_text_atomic(p / "a.txt", "x"),
    lambda p: write_json_atomic(p / "a.json", {"a": 1}),
    lambda p: write_atomic(p / "w.safetensors", lambda t: save_file({"w": torch.zeros(2)}, str(t))),
    lambda p: write_rows(p / "a.jsonl", [{"a": 1}]),
    lambda p: write_rows(p / "a.csv", [{"a": 1}]),
    lambda p: write_rows(p / "a.parquet", [{"a": 1}]),
], ids=["files.text", "files.json", "files.safetensors", "table.jsonl", "table.csv",
        "table.parquet"])
def test_atomic_writers_give_the_umask_mode(umask_027, tmp_path, write):
    out = tmp_path / "out"
    write(out)
    (written,) = [p for p in out.iterdir()]  # the temporary file is gone too
    assert mode(written) == plain_mode(tmp_path)
