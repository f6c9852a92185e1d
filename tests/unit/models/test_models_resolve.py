"""resolve_model: store name, local folder, cached hub id; never the network."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tunelab.errors import ModelError, ModelNotFoundError, UnsafeModelError
from tunelab.models.resolve import hf_hub_cache, resolve_model
from tunelab.models.store import ModelStore


def _fake_hub_cache(hf_home: Path, repo_id: str, src: Path) -> Path:
    """Lay out ``src`` the way huggingface_hub caches a downloaded repo."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(src, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    return home


def test_store_name(tiny_model_dir):
    store = ModelStore()
    rec = store.add_folder(
        "tiny", lambda out: shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True), "t"
    )
    assert resolve_model("tiny") == rec.path
    assert resolve_model("tiny", store=store) == rec.path


def test_store_name_wins_over_a_folder_of_that_name(tiny_model_dir, tmp_path, monkeypatch):
    rec = ModelStore().add_folder(
        "tiny", lambda out: shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True), "t"
    )
    shutil.copytree(tiny_model_dir, tmp_path / "cwd" / "tiny")
    monkeypatch.chdir(tmp_path / "cwd")
    assert resolve_model("tiny") == rec.path


def test_local_folder(tiny_model_dir):
    assert resolve_model(str(tiny_model_dir)) == tiny_model_dir


def test_local_folder_without_config(tmp_path):
    (tmp_path / "weights").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(str(tmp_path / "weights"))


def test_cached_hub_id(hf_home, tiny_model_dir):
    snapshot = _fake_hub_cache(hf_home, "someorg/tiny-llama", tiny_model_dir)
    assert hf_hub_cache() == hf_home / "hub"
    assert resolve_model("someorg/tiny-llama") == snapshot


def test_hub_id_not_cached_is_not_downloaded(hf_home, monkeypatch):
    import huggingface_hub.file_download as fd

    def no_network(*a, **k):  # any HTTP attempt fails the test
        raise AssertionError("the network was used")

    monkeypatch.setattr(fd, "get_hf_file_metadata", no_network, raising=False)
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("someorg/not-cached")
    assert "someorg/not-cached" in err.value.message


def test_known_name_not_pulled_gives_the_pull_hint(hf_home):
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("smollm2-135m-instruct")
    assert err.value.hint == "run `tunelab models pull smollm2-135m-instruct`"
    assert "not in the store" in err.value.message


def test_unknown_ref_lists_the_options(hf_home):
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("no-such-model")
    hint = err.value.hint
    for part in ("in the store", "local folder", "cache", "tunelab models import"):
        assert part in hint


def test_pickle_file_path_is_refused(tmp_path):
    f = tmp_path / "model.pt"
    f.write_bytes(b"not even read")
    with pytest.raises(UnsafeModelError, match="pickle"):
        resolve_model(str(f))


def test_gguf_file_points_to_import(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    with pytest.raises(ModelError) as err:
        resolve_model(str(f))
    assert "tunelab models import" in err.value.hint
