"""What `tunelab export --merge`, checkpoints and the model store write has the mode of a
plainly created file under the umask (safetensors >= 0.8 alone would leave 0600).

The umask 027 tells the right mode (0640) apart from both 0600 and a hard-coded 0644.
"""

import stat

import pytest
from rundata import config, write_yaml

from tunelab.cli.main import main


def modes(folder) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def plain_mode(folder) -> int:
    (folder / "plain.txt").write_text("x")
    return stat.S_IMODE((folder / "plain.txt").stat().st_mode)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_export_and_checkpoint_files_have_the_umask_mode(umask_027, tmp_path, tiny_model_dir, method):
    cfg = write_yaml(tmp_path / "run.yaml", config(tmp_path, tiny_model_dir, {
        "method": method, "max_steps": 2, "save_every": 1, "keep_last": None, "eval_every": 0}))
    assert main(["train", str(cfg), "--no-progress", "output.name=run"]) == 0
    run = tmp_path / "runs" / "run"
    assert main(["export", str(run), "--merge", str(tmp_path / "merged")]) == 0
    want = plain_mode(tmp_path)
    exported = modes(tmp_path / "merged")
    assert "model.safetensors" in exported and set(exported.values()) == {want}, exported
    checkpoints = modes(run / "checkpoints")
    assert "step-00000001/weights.safetensors" in checkpoints
    assert set(checkpoints.values()) == {want}, checkpoints
    written = {f: m for f, m in modes(run).items() if f in ("config.yaml", "inputs.json", "summary.json")}
    assert len(written) == 3 and set(written.values()) == {want}, written


def test_a_stored_model_has_the_umask_mode(umask_027, tmp_path, tiny_model_dir, capsys):
    assert main(["models", "import", str(tiny_model_dir), "--name", "tiny"]) == 0
    entry = tmp_path / "tunelab_home" / "models" / "tiny"
    stored = modes(entry)
    assert "model.safetensors" in stored and set(stored.values()) == {plain_mode(tmp_path)}, stored
