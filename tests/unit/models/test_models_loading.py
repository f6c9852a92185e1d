"""Loading refuses what could run code: pickle weights and unapproved remote code."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from tunelab.errors import ModelError, ModelNotFoundError, UnsafeModelError
from tunelab.models.export import merge_adapter
from tunelab.models.loading import check_safe_folder, load_causal_lm, load_tokenizer
from tunelab.models.pull import import_model
from tunelab.models.resolve import resolve_model


class _Payload:
    """Unpickling this runs ``exec``: it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _hf_folder_without_weights(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy2(f, dst / f.name)
    return dst


@pytest.fixture
def booby_trapped(tmp_path, tiny_model_dir):
    """A model folder whose only weights are a live pickle payload, plus a .pt file."""
    marker = tmp_path / "PWNED"
    # prove the payload is live: unpickling it elsewhere does create its marker
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists()

    folder = _hf_folder_without_weights(tiny_model_dir, tmp_path / "trap")
    payload = pickle.dumps(_Payload(marker))
    (folder / "pytorch_model.bin").write_bytes(payload)
    pt_file = tmp_path / "model.pt"
    pt_file.write_bytes(payload)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (adapter / "adapter_model.bin").write_bytes(payload)
    return folder, pt_file, adapter, marker


def test_pickle_payload_is_never_unpickled(booby_trapped, tiny_model_dir, tmp_path):
    folder, pt_file, adapter, marker = booby_trapped
    attempts = [
        lambda: check_safe_folder(folder),
        lambda: check_safe_folder(folder, trust_remote_code=True),
        lambda: load_causal_lm(folder),
        lambda: load_causal_lm(folder, trust_remote_code=True),
        lambda: load_causal_lm(pt_file),
        lambda: load_tokenizer(pt_file),
        lambda: resolve_model(str(pt_file)),
        lambda: import_model(folder, "trap"),
        lambda: import_model(pt_file, "trap"),
        lambda: merge_adapter(tiny_model_dir, adapter, tmp_path / "merged"),
    ]
    for attempt in attempts:
        with pytest.raises(UnsafeModelError):
            attempt()
    load_tokenizer(folder)  # tokenizer files only: allowed, and the .bin is never opened
    assert not marker.exists()
    assert not (tmp_path / "merged").exists()


def test_only_pytorch_bin_is_refused_with_how_to_convert(tmp_path, tiny_model_dir):
    folder = _hf_folder_without_weights(tiny_model_dir, tmp_path / "m")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04N.")
    with pytest.raises(UnsafeModelError) as err:
        check_safe_folder(folder)
    assert "pytorch_model.bin" in err.value.message
    assert "run arbitrary code" in err.value.message
    assert "safe_serialization=True" in err.value.hint


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth", ".ckpt", ".pkl"])
def test_pickle_file_paths_are_refused(tmp_path, suffix):
    f = tmp_path / f"weights{suffix}"
    f.write_bytes(b"\x80\x04N.")
    with pytest.raises(UnsafeModelError, match="pickle file"):
        check_safe_folder(f)


def test_pickle_beside_safetensors_is_fine(tmp_path, tiny_model_dir):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "training_args.bin").write_bytes(b"\x80\x04N.")
    check_safe_folder(folder)


def test_auto_map_needs_trust_remote_code(tmp_path, tiny_model_dir):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsafeModelError, match="auto_map") as err:
        check_safe_folder(folder)
    assert "trust_remote_code=True" in err.value.hint
    with pytest.raises(UnsafeModelError):
        load_causal_lm(folder)
    check_safe_folder(folder, trust_remote_code=True)


def test_python_files_need_trust_remote_code(tmp_path, tiny_model_dir):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "modeling_evil.py").write_text("raise SystemExit")
    with pytest.raises(UnsafeModelError, match="modeling_evil.py"):
        check_safe_folder(folder)
    with pytest.raises(UnsafeModelError):
        load_tokenizer(folder)


def test_missing_folder(tmp_path):
    with pytest.raises(ModelNotFoundError):
        load_causal_lm(tmp_path / "nope")
    with pytest.raises(ModelNotFoundError):
        load_tokenizer(tmp_path / "nope")


def test_folder_without_weights(tmp_path, tiny_model_dir):
    folder = _hf_folder_without_weights(tiny_model_dir, tmp_path / "m")
    with pytest.raises(ModelError, match="no \\*.safetensors"):
        load_causal_lm(folder)


def test_load_causal_lm(tiny_model_dir):
    model = load_causal_lm(tiny_model_dir)
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32
    assert (
        next(load_causal_lm(tiny_model_dir, dtype="bfloat16").parameters()).dtype == torch.bfloat16
    )
    with pytest.raises(ModelError, match="dtype 'float8'"):
        load_causal_lm(tiny_model_dir, dtype="float8")


def test_load_tokenizer_sets_missing_pad_to_eos(tmp_path):
    from tiny import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    tok.pad_token = None
    tok.save_pretrained(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert loaded.pad_token == loaded.eos_token == "<|im_end|>"


def test_load_tokenizer_keeps_existing_pad(tiny_model_dir):
    assert load_tokenizer(tiny_model_dir).pad_token == "<|pad|>"
