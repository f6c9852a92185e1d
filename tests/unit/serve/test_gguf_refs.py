"""A ``.gguf`` reference to `tunelab serve`: what is read from the file, and every file the
server cannot serve refused with a message and the next step (llama.cpp not needed)."""

from __future__ import annotations

import json

import pytest

from gguf_files import write_model_gguf
from tunelab.cli import exits
from tunelab.cli.main import main
from tunelab.config.task import TaskSettings
from tunelab.errors import ModelError
from tunelab.models import llamacpp
from tunelab.models.gguf_read import read_gguf_metadata
from tunelab.serve import registry
from tunelab.serve.registry import gguf_path

TASK = {"type": "classify", "labels": ["billing", "shipping"],
        "system_prompt": "Sort the message."}


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model_dir, tmp_path_factory):
    return write_model_gguf(tiny_model_dir, tmp_path_factory.mktemp("gguf") / "tiny.gguf",
                            metadata={"task": json.dumps(TASK), "source": "run-42"})


def test_the_metadata_a_server_needs_is_read(tiny_gguf, tiny_model_dir):
    from tunelab.models.loading import load_tokenizer

    meta = read_gguf_metadata(tiny_gguf)
    tok = load_tokenizer(tiny_model_dir)
    assert meta.architecture == "llama" and meta.source == "run-42"
    assert meta.task == TaskSettings.model_validate(TASK)
    assert meta.chat_template == tok.chat_template and meta.eos_id == tok.eos_token_id
    assert meta.context_length == 512


def test_files_that_cannot_be_served_are_refused_with_a_hint(tmp_path, tiny_gguf):
    assert gguf_path("smollm2-135m-instruct") is None and gguf_path(str(tmp_path)) is None
    with pytest.raises(ModelError, match="does not exist"):
        gguf_path(str(tmp_path / "nope.gguf"))
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    with pytest.raises(ModelError, match="not a GGUF file") as e:
        gguf_path(str(text))
    assert "tunelab export" in (e.value.hint or "")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:200])
    with pytest.raises(ModelError, match="cannot be read as GGUF"):
        read_gguf_metadata(cut)


def test_a_bad_task_key_is_refused(tmp_path, tiny_model_dir):
    bad = write_model_gguf(tiny_model_dir, tmp_path / "bad.gguf", metadata={"task": '{"type": "dance"}'})
    with pytest.raises(ModelError, match="tunelab.task"):
        read_gguf_metadata(bad)


def test_without_llamacpp_the_install_line_is_named(monkeypatch, tiny_gguf):
    monkeypatch.setattr(registry, "llamacpp_available", lambda: False)
    monkeypatch.setattr(llamacpp, "llamacpp_available", lambda: False)
    with pytest.raises(llamacpp.LlamaCppMissingError) as e:
        gguf_path(str(tiny_gguf))
    assert "pip install 'tunelab[llamacpp]'" in e.value.hint and "cmake" in e.value.hint
    with pytest.raises(llamacpp.LlamaCppMissingError):
        llamacpp.LlamaCppModel(tiny_gguf)


def test_the_cli_refuses_a_file_that_is_not_gguf(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TUNELAB_API_KEYS", "k")
    (tmp_path / "model.gguf").write_text("not a model")
    code = main(["serve", str(tmp_path / "model.gguf"), "--port", "0",
                 "--db", f"sqlite:///{tmp_path / 'r.db'}"])
    out, err = capsys.readouterr()
    assert code not in (exits.OK, exits.INTERNAL) and code in exits.DOCUMENTED
    assert "Traceback" not in out + err and "is not a GGUF file" in err and "hint:" in err


def test_a_file_that_would_render_chats_differently_is_refused(tmp_path, tiny_model_dir):
    from gguf_files import needs_llamacpp
    from tunelab.data.template import template_fingerprint
    from tunelab.errors import StoreError
    from tunelab.models.loading import load_tokenizer
    from tunelab.serve.batching import EngineSettings

    needs_llamacpp()
    settings = EngineSettings(max_batch_size=2, max_queue=4, prefill_tokens=64)
    right = template_fingerprint(load_tokenizer(tiny_model_dir), None)  # as the export records it
    good = write_model_gguf(tiny_model_dir, tmp_path / "good.gguf",
                            metadata={"chat_template_fingerprint": right})
    reg = registry.load_registry([str(good)], {}, str(tmp_path), settings)
    reg.close()
    bad = write_model_gguf(tiny_model_dir, tmp_path / "bad.gguf",
                           metadata={"chat_template_fingerprint": "0123456789abcdef"})
    with pytest.raises(StoreError, match="render chats differently") as e:
        registry.load_registry([str(bad)], {}, str(tmp_path), settings)
    assert "0123456789abcdef" in e.value.message and "export the run again" in e.value.hint
