"""The permission bits a file tunelab writes should have: those of a plainly created file.

``open(path, "w")`` creates a file with mode ``0o666`` less the process umask (0644 under
the usual 022). Files written through a temporary file and a rename do not:
``tempfile.mkstemp`` creates 0600, and safetensors >= 0.8 writes every ``*.safetensors``
through a temporary file of its own, also 0600, whatever the umask. A model, export or run
folder would then be readable by its owner only (a server or container running as another
user cannot load it). Writers call ``set_new_file_mode`` on what they wrote, before
renaming it into place. This module imports nothing of tunelab, so every layer may use it.
"""

from __future__ import annotations

import os
from pathlib import Path


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
