"""Files written whole or not at all, and the YAML mapping files users write.

Atomic writes (``write_atomic`` and the bytes, text and JSON forms built on it): the
content goes to a hidden temporary file in the target's folder (the same filesystem, so
the rename is atomic), which is fsynced, renamed over the target with ``os.replace``,
and then the folder is fsynced so the rename survives a power cut too. A reader sees the
old file or the new one, never half of one; on any error, or an interrupt, the
temporary file is removed and the old file is left as it was. The new file gets the
mode a plain ``open()`` would give (0666 less the umask), not the 0600 of
``tempfile.mkstemp``: run folders and reports are shared with a group or a server.

Errors, one rule: an ``OSError`` while writing (no space, no permission, a folder in
the way) becomes the ``TunelabError`` subclass the caller names with ``error=``, with
the path, the system's reason and a hint. The default, ``StoreError``, is for files
tunelab keeps for itself (run folders, the model store); ``DataError`` is for the
outputs of the data and evaluation commands, whose paths the user chose. Anything else
(a bug in a ``write`` callback, Ctrl-C) passes through unchanged, after the cleanup.
``fsync_file`` and ``fsync_dir`` are the building blocks of folder-level swaps (a
checkpoint, a store entry), whose callers handle ``OSError`` themselves: they pass it on.

Modes: a library that writes files itself (``save_pretrained``; safetensors >= 0.8
writes every ``*.safetensors`` through a 0600 temporary file of its own, whatever the
umask) leaves them readable by their owner only; ``set_new_file_mode`` gives a file or a
folder's files the mode a plain ``open()`` would have, and ``write_atomic`` applies it
after its callback.

``tunelab_home`` is the folder tunelab keeps its own files in (the model store, the
request log database): ``$TUNELAB_HOME``, else the per-user cache folder.

``sha256_file`` fingerprints inputs and outputs. ``read_yaml_mapping`` raises
``ConfigError``, naming the file, and for a syntax error its line and column.

This module knows nothing of runs, models, configs or data formats.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tunelab.errors import ConfigError, DataError, StoreError

WriteError = type[StoreError] | type[DataError]


def tunelab_home() -> Path:
    """Where tunelab keeps its own files (the model store, the default database).

    Returns:
        ``$TUNELAB_HOME`` when set, else the per-user cache folder for ``tunelab``.
    """
    env = os.environ.get("TUNELAB_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("tunelab"))


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB chunks (inputs can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_file(path: str | Path) -> None:
    """Flush a written file's data to the disk.

    Raises:
        OSError: the file cannot be opened or synced.
    """
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(folder: str | Path) -> None:
    """Make the renames and new names inside ``folder`` durable.

    Platforms that cannot open a folder (Windows) and filesystems that cannot sync one
    (EINVAL) skip this: the rename is still atomic there, only not yet durable.

    Raises:
        OSError: the sync itself failed (an I/O error).
    """
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def make_dir(path: str | Path, *, error: WriteError = StoreError) -> Path:
    """Create a folder (and its parents) if missing; an ``OSError`` becomes ``error``.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        StoreError | DataError: (as ``error``) the folder cannot be created.
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise error(f"{folder}: cannot create the folder ({e.strerror or e})",
                    hint="choose a folder you may write to, or create it first") from e
    return folder


def write_atomic(path: str | Path, write: Callable[[Path], None], *,
                 error: WriteError = StoreError) -> Path:
    """Write ``path`` whole or not at all, with a callback that writes a file by name.

    For writers that want a path rather than bytes (``pyarrow``, ``safetensors``); the
    callback gets an existing empty file and may truncate and rewrite it.

    Args:
        path: the target; its folder is created if needed.
        write: writes the content to the path it is given (never ``path`` itself).
        error: the error class an ``OSError`` becomes (see the module docstring).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        StoreError | DataError: (as ``error``) the file cannot be written.
    """
    target = Path(path)
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_temp(target)
        write(tmp)
        set_new_file_mode(tmp)  # a library may have replaced our temp file with a 0600 one
        fsync_file(tmp)
        os.replace(tmp, target)
        tmp = None
        fsync_dir(target.parent)
    except OSError as e:
        raise error(f"{target}: cannot be written ({e.strerror or e})",
                    hint=f"check that you may write to {target.parent} and that the disk "
                         "has free space") from e
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return target


def write_bytes_atomic(path: str | Path, data: bytes, *, error: WriteError = StoreError) -> Path:
    """Write bytes atomically (see ``write_atomic``)."""
    def put(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return write_atomic(path, put, error=error)


def write_text_atomic(path: str | Path, text: str, *, error: WriteError = StoreError) -> Path:
    """Write UTF-8 text atomically (see ``write_atomic``); line ends are written as given."""
    return write_bytes_atomic(path, text.encode("utf-8"), error=error)


def write_json_atomic(path: str | Path, obj: Any, *, error: WriteError = StoreError) -> Path:
    """Write indented JSON atomically (see ``write_atomic``).

    Keys stay in the order given and non-ASCII text is kept as UTF-8; values JSON cannot
    hold (paths, dates) are written as their ``str``.
    """
    text = json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n"
    return write_text_atomic(path, text, error=error)


def _create_temp(target: Path) -> Path:
    """A new empty file beside ``target``, hidden, with the umask's mode."""
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            # 0o666: the kernel takes the umask off, exactly as for open(path, "w").
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue  # a leftover or a concurrent writer drew the same name
        os.close(fd)
        return tmp


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """Read a YAML file whose top level must be a mapping; an empty file is ``{}``.

    Args:
        path: the file.
        what: what the file is, for messages ("config file", "terms file").

    Returns:
        The mapping as PyYAML's safe loader reads it.

    Raises:
        ConfigError: the file is missing or unreadable, not valid YAML (with
            ``file:line:column``), or its top level is not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        where = "" if p.is_absolute() else f" (relative to the current folder {Path.cwd()})"
        raise ConfigError([f"{what} {str(p)!r} does not exist{where}"])
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([f"{what} cannot be read as UTF-8 text ({e})"], str(p)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError([_yaml_problem(p, e)], str(p)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"the top level of the {what} must be a mapping (key: value "
                           f"lines), got {type(data).__name__}"], str(p))
    return data


def _yaml_problem(path: Path, e: yaml.YAMLError) -> str:
    """``FILE:LINE:COLUMN: not valid YAML: what (while ... at line L, column C)``."""
    mark = getattr(e, "problem_mark", None)
    if mark is None:  # an unmarked error: its own text has no <unicode string> name
        return f"{path}: not valid YAML: {e}"
    text = f"{path}:{mark.line + 1}:{mark.column + 1}: not valid YAML: {getattr(e, 'problem', e)}"
    context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and start is not None:
        text += f" ({context} at line {start.line + 1}, column {start.column + 1})"
    elif context:
        text += f" ({context})"
    return text


def current_umask() -> int:
    """The process umask, read without changing it where the platform allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:  # Linux >= 4.7
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # Elsewhere the umask can only be read by setting it; it is set back at once (another
    # thread creating a file in between would get the 022 mask, not a wider one).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file under the current umask."""
    return 0o666 & ~current_umask()


def set_new_file_mode(path: str | Path) -> None:
    """Give a file, or every file under a folder, the mode of a plainly created file.

    Args:
        path: a file, or a folder whose files (at any depth) are set; links are skipped.
    """
    p = Path(path)
    mode = new_file_mode()
    files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file() and not f.is_symlink()]
    for f in files:
        os.chmod(f, mode)
