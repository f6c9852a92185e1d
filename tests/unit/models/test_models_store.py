"""The model store: entries appear whole or not at all."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from tunelab.errors import StoreError
from tunelab.models.store import MANIFEST, ModelRecord, ModelStore, store_home


def _copier(src: Path):
    def build(out: Path) -> None:
        shutil.copytree(src, out, dirs_exist_ok=True)

    return build


def test_store_home_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "h"))
    assert store_home() == tmp_path / "h"
    assert ModelStore().models_dir == tmp_path / "h" / "models"


def test_store_home_default_is_user_cache(monkeypatch):
    monkeypatch.delenv("TUNELAB_HOME", raising=False)
    assert store_home().name.lower() == "tunelab"


def test_add_list_get(tiny_model_dir):
    store = ModelStore()
    assert store.list() == []
    rec = store.add_folder("tiny", _copier(tiny_model_dir), source="test:tiny")

    assert isinstance(rec, ModelRecord)
    assert rec.path == store.models_dir / "tiny"
    assert (rec.path / "config.json").is_file() and (rec.path / MANIFEST).is_file()
    assert rec.source == "test:tiny"
    assert rec.architecture == "LlamaForCausalLM"
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert rec.num_parameters == model.num_parameters()  # tied embeddings counted once
    assert datetime.fromisoformat(rec.created).tzinfo is not None

    assert store.get("tiny") == rec
    assert store.get("absent") is None
    assert store.get("../tiny") is None
    assert store.list() == [rec]


def test_list_is_sorted_by_name(tiny_model_dir):
    store = ModelStore()
    for name in ("zeta", "alpha", "mid"):
        store.add_folder(name, _copier(tiny_model_dir), source="test")
    assert [r.name for r in store.list()] == ["alpha", "mid", "zeta"]


def test_partial_folders_are_never_listed(tiny_model_dir):
    store = ModelStore()
    store.add_folder("whole", _copier(tiny_model_dir), source="test")
    # a crashed build: hidden temp dir, even with a manifest inside
    leftover = store.models_dir / ".tmp-ghost-1234abcd"
    shutil.copytree(store.models_dir / "whole", leftover)
    # a folder someone copied in by hand, without a manifest
    shutil.copytree(tiny_model_dir, store.models_dir / "handmade")
    assert [r.name for r in store.list()] == ["whole"]
    assert store.get("handmade") is None


def test_failing_build_leaves_nothing(tiny_model_dir):
    store = ModelStore()

    def build(out: Path) -> None:
        shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        store.add_folder("broken", build, source="test")
    assert store.list() == []
    assert list(store.models_dir.iterdir()) == []


def test_build_without_config_is_refused():
    store = ModelStore()
    with pytest.raises(StoreError, match="no config.json"):
        store.add_folder("empty", lambda out: (out / "x.txt").write_text("x"), source="t")
    assert list(store.models_dir.iterdir()) == []


def test_existing_name_needs_replace(tiny_model_dir):
    store = ModelStore()
    store.add_folder("tiny", _copier(tiny_model_dir), source="first")
    with pytest.raises(StoreError, match="already in the store") as err:
        store.add_folder("tiny", _copier(tiny_model_dir), source="second")
    assert "replace" in err.value.hint
    assert store.get("tiny").source == "first"

    rec = store.add_folder("tiny", _copier(tiny_model_dir), source="second", replace=True)
    assert rec.source == "second" and store.get("tiny").source == "second"
    assert [p.name for p in store.models_dir.iterdir()] == ["tiny"]  # no .old-/.tmp- left


def test_failed_replace_keeps_the_old_entry(tiny_model_dir):
    store = ModelStore()
    store.add_folder("tiny", _copier(tiny_model_dir), source="first")

    def build(out: Path) -> None:
        raise ValueError("bad weights")

    with pytest.raises(ValueError):
        store.add_folder("tiny", build, source="second", replace=True)
    assert store.get("tiny").source == "first"
    assert [p.name for p in store.models_dir.iterdir()] == ["tiny"]


@pytest.mark.parametrize("name", ["", "../evil", "a/b", ".hidden", "x" * 101, "sp ace"])
def test_bad_names_are_refused(name):
    with pytest.raises(StoreError, match="cannot be a store name"):
        ModelStore().add_folder(name, lambda out: None, source="t")


def test_unreadable_manifest_is_skipped_with_a_warning(tiny_model_dir):
    from tunelab.tracking.reporter import Recorder

    # The warning goes to the store's Reporter (the CLI's shows it on stderr), not to
    # Python's warnings module: only the CLI talks to the user (README, output policy).
    reporter = Recorder()
    store = ModelStore(reporter=reporter)
    rec = store.add_folder("tiny", _copier(tiny_model_dir), source="t")
    (rec.path / MANIFEST).write_text("{not json")
    assert store.list() == []
    assert len(reporter.lines) == 1 and "unreadable" in reporter.lines[0]
    assert reporter.lines[0].startswith("warning: ")


def test_manifest_content(tiny_model_dir):
    rec = ModelStore().add_folder("tiny", _copier(tiny_model_dir), source="t")
    data = json.loads((rec.path / MANIFEST).read_text())
    assert data["name"] == "tiny" and data["num_parameters"] == rec.num_parameters


def test_remove(tiny_model_dir):
    store = ModelStore()
    store.add_folder("tiny", _copier(tiny_model_dir), source="t")
    store.remove("tiny")
    assert store.list() == [] and list(store.models_dir.iterdir()) == []
    with pytest.raises(StoreError, match="not in the store"):
        store.remove("tiny")


def test_explicit_home(tmp_path, tiny_model_dir):
    store = ModelStore(home=tmp_path / "elsewhere")
    store.add_folder("tiny", _copier(tiny_model_dir), source="t")
    assert (tmp_path / "elsewhere" / "models" / "tiny" / MANIFEST).is_file()
    assert ModelStore().list() == []  # the default (isolated) home is untouched
