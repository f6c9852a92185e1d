"""Turning a user's model reference into a local Hugging Face folder.

A reference is tried as, in order: a store name, a local folder with ``config.json``,
and a hub id (``org/name``) already in the local Hugging Face cache. The hub itself is
never contacted: models enter tunelab through ``pull`` or ``import_model``, so a run
never depends on the network. This module does not check that the folder is safe to
load; ``loading`` does that.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tunelab.errors import ModelError, ModelNotFoundError
from tunelab.models.catalog import KNOWN_MODELS
from tunelab.models.loading import refuse_pickle_file
from tunelab.models.store import ModelStore
from tunelab.tracking.reporter import SILENT, Reporter

# org/name, or a legacy single-name id such as gpt2
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_model(ref: str, store: ModelStore | None = None,
                  reporter: Reporter = SILENT) -> Path:
    """Find the local folder that ``ref`` names.

    Args:
        ref: a store name, a path to a model folder, or a cached hub id ``org/name``.
        store: the store; the default store when omitted.
        reporter: told why a store entry is skipped (an unreadable manifest), when
            ``store`` is omitted.

    Returns:
        a folder that holds ``config.json``.

    Raises:
        UnsafeModelError: ``ref`` is a path to a pickle file (``.bin``, ``.pt``, ...).
        ModelError: ``ref`` is a file (e.g. a ``.gguf``) rather than a model folder.
        ModelNotFoundError: nothing matches; for a catalogued name, the hint is the pull
            command.
    """
    ref = str(ref)  # a Path is accepted too
    store = store or ModelStore(reporter=reporter)
    record = store.get(ref)
    if record is not None:
        return record.path
    path = Path(ref).expanduser()
    refuse_pickle_file(path)
    if path.is_file():
        raise ModelError(
            f"{path} is a file, not a model folder",
            hint=f"add it to the store with `tunelab models import {path} --name NAME`, then use NAME",
        )
    if path.is_dir():
        if (path / "config.json").is_file():
            return path
        raise ModelNotFoundError(
            f"folder {path} has no config.json, so it is not a Hugging Face model folder",
            hint="give the folder that holds config.json, or import a .gguf with "
            "`tunelab models import FILE --name NAME`",
        )
    cached = _hub_cache_snapshot(ref)
    if cached is not None:
        return cached
    if ref in KNOWN_MODELS:
        raise ModelNotFoundError(
            f"model {ref!r} is not in the store", hint=f"run `tunelab models pull {ref}`"
        )
    raise ModelNotFoundError(
        f"model {ref!r} was not found",
        hint=(
            "give a model in the store (see `tunelab models list`), a local folder with "
            "config.json, or a Hugging Face id (org/name) already in the local Hugging Face "
            "cache; add a model to the store with `tunelab models pull NAME` "
            f"(known: {', '.join(sorted(KNOWN_MODELS))}) or `tunelab models import PATH --name NAME`"
        ),
    )


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, read from the environment at call time.

    Returns:
        ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``,
        else ``~/.cache/huggingface/hub`` (huggingface_hub's own order).
    """
    env = os.environ
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    xdg = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def _hub_cache_snapshot(ref: str) -> Path | None:
    """The cached snapshot of hub id ``ref`` at ``main``, or None; never downloads."""
    if not _HUB_ID_RE.match(ref):
        return None
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(ref, cache_dir=str(hf_hub_cache()), local_files_only=True)
    except (OSError, ValueError):  # not cached (LocalEntryNotFoundError) or a bad id
        return None
    folder = Path(folder)
    return folder if (folder / "config.json").is_file() else None
