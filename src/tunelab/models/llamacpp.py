"""A GGUF model run by llama.cpp (the optional ``llamacpp`` extra), in token ids.

``LlamaCppModel`` loads a GGUF file with ``llama_cpp.Llama`` (the vocabulary from the
file, the file's training context unless told otherwise, one thread per core this
process may use, llama.cpp's logging silenced) and answers in token ids, never text:
``greedy`` and ``generate`` continue a prompt, ``token_logprobs`` scores a given
continuation teacher-forced, ``tokenize`` is llama.cpp's own tokenizer. These run on the
``Llama`` object's context, one sequence at a time.

``Decoder`` is a second context on the same (memory-mapped, shared) weights for a server:
up to ``n_seq`` sequences in one llama.cpp batch, their keys and values in one pool of
``cells`` (llama.cpp's unified cache: a short answer leaves room for a long one). It
decodes what it is given, (token, position, sequence) triples, and returns logits; which
sequences run, and when, is the caller's business (``tunelab.serve.llamacpp_engine``).

Sampling (``pick_token``) is done here in numpy, not by llama.cpp's sampler chain, so
temperature, top-p and a per-request seed mean what they mean in the transformers
engine (``tunelab.serve.batching``); greedy is the argmax of the same logits.

This module is the one place that knows the package name and the install line. It knows
nothing of chat templates, HTTP or the model store; the GGUF's metadata is read by
``tunelab.models.gguf_read``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.errors import ModelError

LLAMACPP_INSTALL = ("pip install 'tunelab[llamacpp]'  (builds llama.cpp from source: needs a C++ "
                    "compiler and cmake, and a few minutes)")
N_BATCH = 512  # tokens per llama_decode call; longer inputs are decoded in chunks


class LlamaCppMissingError(ModelError):
    """llama-cpp-python (the ``llamacpp`` extra) is not installed."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} needs llama.cpp, and llama-cpp-python is not installed",
                         hint=LLAMACPP_INSTALL)


def llamacpp_available() -> bool:
    """Whether llama-cpp-python can be imported (without importing it)."""
    return importlib.util.find_spec("llama_cpp") is not None


def _llama_cpp(what: str) -> Any:
    if not llamacpp_available():
        raise LlamaCppMissingError(what)
    import llama_cpp

    return llama_cpp


def machine_threads() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's total), capped by
    ``OMP_NUM_THREADS`` when set, as torch's threads are: llama.cpp's threads spin while
    they wait, so more threads than free cores make every step slower, not faster."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    cap = os.environ.get("OMP_NUM_THREADS", "")
    if cap.isdigit() and int(cap) > 0:
        cores = min(cores, int(cap))
    return max(1, cores)


def pick_token(logits: np.ndarray, temperature: float, top_p: float,
               rng: np.random.Generator | None) -> int:
    """The next token: the argmax when ``temperature`` is 0, else a draw from the softened
    distribution cut to the smallest head reaching ``top_p`` (as ``serve.batching``)."""
    if temperature <= 0 or rng is None:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    z -= z.max()
    probs = np.exp(z)
    probs /= probs.sum()
    if top_p < 1:
        order = np.argsort(-probs, kind="stable")
        head = probs[order]
        keep = np.cumsum(head) - head <= top_p  # every token until the mass reaches top_p
        probs = np.zeros_like(probs)
        probs[order[keep]] = head[keep]
        probs /= probs.sum()
    return int(rng.choice(len(probs), p=probs))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max()
    return z - np.log(np.exp(z).sum())


@dataclass(frozen=True)
class Token:
    """One input of a llama.cpp batch: ``token`` at ``pos`` of sequence ``seq``."""

    token: int
    pos: int
    seq: int
    logits: bool  # whether the logits after this token are wanted


class _Context:
    """Decoding on one llama.cpp context: fills a batch, decodes, copies the logits out."""

    def __init__(self, llama_cpp: Any, ctx: Any, n_vocab: int, n_batch: int, n_seq: int) -> None:
        self._lib = llama_cpp
        self.ctx = ctx
        self.n_vocab = n_vocab
        self.n_batch = n_batch
        self.memory = llama_cpp.llama_get_memory(ctx)
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, n_seq)

    def decode(self, tokens: Sequence[Token]) -> list[np.ndarray]:
        """Decode ``tokens`` (in chunks of ``n_batch``); the logits of those that want them,
        in order.

        Raises:
            RuntimeError: llama.cpp refused the batch (1: no room left in the cache).
        """
        out: list[np.ndarray] = []
        b = self.batch
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start:start + self.n_batch]
            b.n_tokens = len(chunk)
            for i, t in enumerate(chunk):
                b.token[i] = t.token
                b.pos[i] = t.pos
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = t.seq
                b.logits[i] = t.logits
            rc = self._lib.llama_decode(self.ctx, b)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}"
                                   + (" (no room left in the key/value cache)" if rc == 1 else ""))
            for i, t in enumerate(chunk):
                if t.logits:
                    ptr = self._lib.llama_get_logits_ith(self.ctx, i)
                    out.append(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy())
        return out

    def forget(self, seq: int) -> None:
        """Free every cell of sequence ``seq`` (-1: of all sequences)."""
        if seq < 0:
            self._lib.llama_memory_clear(self.memory, True)
        else:
            self._lib.llama_memory_seq_rm(self.memory, seq, -1, -1)

    def share(self, src: int, dst: int, tokens: int) -> None:
        """Give sequence ``dst`` the cells of ``src``'s first ``tokens`` positions. In a
        unified cache the cells are shared, not copied: the keys and values of a position
        depend only on the tokens up to it."""
        self._lib.llama_memory_seq_cp(self.memory, src, dst, 0, tokens)

    def close(self) -> None:
        if self.batch is not None:
            self._lib.llama_batch_free(self.batch)
            self.batch = None


class Decoder(_Context):
    """A context of its own on a loaded model's weights, for up to ``n_seq`` sequences
    whose keys and values share ``cells`` slots; made by ``LlamaCppModel.decoder``."""

    def __init__(self, model: LlamaCppModel, n_seq: int, cells: int) -> None:
        lib = model._lib
        params = lib.llama_context_default_params()
        params.n_ctx = cells
        params.n_batch = params.n_ubatch = N_BATCH
        params.n_seq_max = n_seq
        params.kv_unified = True  # one pool for all sequences, not cells / n_seq each
        params.n_threads = params.n_threads_batch = model.n_threads
        ctx = lib.llama_init_from_model(model.llm.model, params)
        if ctx is None:
            raise ModelError(f"llama.cpp could not make a context of {cells} cells for "
                             f"{n_seq} sequences on {model.path}",
                             hint="lower max_batch_size, or free memory")
        super().__init__(lib, ctx, model.n_vocab, N_BATCH, n_seq)
        self.n_seq = n_seq
        self.cells = lib.llama_n_ctx(ctx)

    def close(self) -> None:
        super().close()
        if self.ctx is not None:
            self._lib.llama_free(self.ctx)
            self.ctx = None


class LlamaCppModel:
    """A GGUF file loaded by llama.cpp, answering in token ids.

    Args:
        path: the ``.gguf`` file.
        n_ctx: tokens the ``Llama`` object's own context holds (``greedy``,
            ``token_logprobs``); None: the file's training context.
        n_threads: decoding threads; None: one per core this process may use.
        f32_cache: keep the own context's keys and values in f32 rather than llama.cpp's
            default f16, whose rounding alone can flip a near-tie between two tokens (the
            export's check of an f32 file wants the file's arithmetic, not the cache's).

    Raises:
        LlamaCppMissingError: llama-cpp-python is not installed (names the install line).
        ModelError: the file is missing or llama.cpp cannot load it.
    """

    def __init__(self, path: Path, n_ctx: int | None = None, n_threads: int | None = None,
                 f32_cache: bool = False) -> None:
        self.path = Path(path)
        self._lib = _llama_cpp(f"loading {self.path.name}")
        if not self.path.is_file():
            raise ModelError(f"{self.path} is not a file", hint="give the path of a .gguf file")
        self.n_threads = n_threads or machine_threads()
        cache = {"type_k": self._lib.GGML_TYPE_F32, "type_v": self._lib.GGML_TYPE_F32,
                 "flash_attn": False} if f32_cache else {}
        try:
            self.llm = self._lib.Llama(str(self.path), n_ctx=n_ctx or 0, n_batch=N_BATCH,
                                       n_threads=self.n_threads, n_threads_batch=self.n_threads,
                                       verbose=False, **cache)
        except (ValueError, RuntimeError) as e:  # llama.cpp says little more than "failed"
            raise ModelError(f"llama.cpp cannot load {self.path}: {e}",
                             hint="check that it is a complete GGUF file of an architecture "
                                  "llama.cpp supports (re-export it, or update llama-cpp-python)"
                             ) from None
        self.n_vocab = int(self.llm.n_vocab())
        self.context_length = int(self._lib.llama_model_n_ctx_train(self.llm.model))
        self.eos_id = int(self.llm.token_eos())
        self._own = _Context(self._lib, self.llm.ctx, self.n_vocab, N_BATCH, 1)

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's token ids of ``text``: no BOS added, special tokens parsed."""
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def greedy(self, prompt_ids: Sequence[int], max_new_tokens: int,
               stop_ids: Iterable[int]) -> list[int]:
        """The greedy continuation of ``prompt_ids``.

        Returns:
            The new ids, cut after the first stop id, which is kept (as
            ``GenerationEngine.complete_ids``): ``ids[-1] in stop_ids`` tells a finished
            answer from one cut at ``max_new_tokens``.
        """
        return self.generate(prompt_ids, max_new_tokens, stop_ids)

    def generate(self, prompt_ids: Sequence[int], max_new_tokens: int, stop_ids: Iterable[int],
                 temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None) -> list[int]:
        """Continue ``prompt_ids``; as ``greedy``, sampled when ``temperature`` > 0 (``seed``
        makes it repeatable)."""
        stop = set(stop_ids)
        rng = np.random.default_rng(seed) if temperature > 0 else None
        self._check_room(len(prompt_ids) + max_new_tokens)
        self._own.forget(-1)
        try:
            (logits,) = self._own.decode([Token(t, i, 0, i == len(prompt_ids) - 1)
                                          for i, t in enumerate(prompt_ids)])
            out: list[int] = []
            while True:
                token = pick_token(logits, temperature, top_p, rng)
                out.append(token)
                if token in stop or len(out) >= max_new_tokens:
                    return out
                (logits,) = self._own.decode([Token(token, len(prompt_ids) + len(out) - 1, 0, True)])
        finally:
            self._own.forget(-1)

    def token_logprobs(self, prompt_ids: Sequence[int], continuation_ids: Sequence[int]) -> list[float]:
        """The log-probability of each continuation token given everything before it
        (teacher-forced: the continuation is fed, not generated), in nats."""
        ids = list(prompt_ids) + list(continuation_ids)
        if not prompt_ids or not continuation_ids:
            return []
        self._check_room(len(ids))
        first = len(prompt_ids) - 1  # the logits after this position predict continuation[0]
        self._own.forget(-1)
        try:
            rows = self._own.decode([Token(t, i, 0, i >= first) for i, t in enumerate(ids[:-1])])
        finally:
            self._own.forget(-1)
        return [float(log_softmax(row)[t]) for row, t in zip(rows, continuation_ids, strict=True)]

    def decoder(self, n_seq: int, cells: int) -> Decoder:
        """A context of its own for up to ``n_seq`` sequences sharing ``cells`` cache slots."""
        return Decoder(self, n_seq, cells)

    def _check_room(self, tokens: int) -> None:
        room = int(self._lib.llama_n_ctx(self.llm.ctx))
        if tokens > room:
            raise ModelError(f"{tokens} tokens do not fit this llama.cpp context of {room}",
                             hint="load the model with a larger n_ctx, or shorten the prompt")

    def close(self) -> None:
        """Free the context and the weights (also when the object is collected)."""
        self._own.close()
        self.llm.close()
