"""The training side of a drift check: a run's input texts, labels and tokenizer, and how
production prompts are read to compare like with like.

A run records its config (``config.yaml``: data files, task) and the sha256 of each
input file (``inputs.json``). ``run_reference`` reads the training rows exactly as
training read them (``tunelab.train.run.load_run_examples``: mixture, split,
``train_rows``), keeps a seeded sample of at most ``REFERENCE_ROWS``, and takes from each
row what a user sends: with a task, the row's text (the task's question template taken
off again), else the text of the user turns. A production prompt (``request_log.prompt``:
the chat messages as JSON, or a completion's raw text) is read the same way
(``user_text``), and both are tokenized by the run's own tokenizer, loaded from the run
folder without its weights. Classifiers also keep each training row's label word.

This module knows nothing of databases or HTTP, and loads no model weights: only a
tokenizer, and an embedding function when the caller passes one.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.config.serve import MonitorSettings
from tunelab.config.task import TaskSettings
from tunelab.data.example import Example
from tunelab.data.task import TaskPrompt, task_label_set
from tunelab.errors import StoreError
from tunelab.eval.classify import match_label
from tunelab.eval.drift import DriftReport, Reference, compare, tokenize
from tunelab.files import sha256_file
from tunelab.tracking.reporter import SILENT, Reporter

REFERENCE_ROWS = 5000  # training rows compared at most (a seeded sample): PSI needs no more
_MARK = "\x00"  # stands for the row's text when the question template is taken apart

Embed = Callable[[list[str]], np.ndarray]


@dataclass
class RunReference:
    """What a drift check of one run needs: its tokenizer, task and training reference."""

    run_dir: Path
    tokenizer: Any
    task: TaskSettings | None
    reference: Reference
    training_rows: int  # rows the run trained on (the reference may be a sample of them)
    notes: list[str] = field(default_factory=list)

    def production(self, prompts: Sequence[str], answers: Sequence[str | None]
                   ) -> tuple[list[list[int]], list[str | None] | None]:
        """Token ids of each production prompt's user text, and (classifiers) the label word
        each answer names (None: none).

        Args:
            prompts: ``request_log.prompt`` values (chat JSON or completion text).
            answers: the logged answers, one per prompt.
        """
        tokens = tokenize(self.tokenizer, [user_text(p) for p in prompts])
        words = self.reference.label_words
        if words is None:
            return tokens, None
        return tokens, [None if a is None else match_label(a, words) for a in answers]

    def judge(self, prompts: Sequence[str], answers: Sequence[str | None],
              settings: MonitorSettings, embed: Embed | None = None,
              no_embeddings: str = "the semantic extra is not installed") -> DriftReport:
        """The drift report of logged prompts (and their answers) against this reference.

        Args:
            prompts: ``request_log.prompt`` values.
            answers: the logged answers, one per prompt.
            settings: the thresholds.
            embed: the same embedding function the reference was built with; None: the
                embedding feature is left out, and a note says why (``no_embeddings``).
        """
        tokens, labels = self.production(prompts, answers)
        vectors = None
        if embed is not None and self.reference.embeddings is not None and prompts:
            vectors = embed([user_text(p) for p in prompts])
        report = compare(self.reference, tokens, settings, labels, vectors)
        report.notes = [*self.notes, *report.notes]
        if vectors is None:
            report.notes.append(f"embeddings not compared ({no_embeddings})")
        return report


def user_text(prompt: str) -> str:
    """What the user wrote in a logged prompt: the user turns of chat JSON, joined by a
    newline, or the text itself (a completion prompt, or text that is not chat JSON)."""
    try:
        messages = json.loads(prompt)
    except (json.JSONDecodeError, TypeError):
        return prompt
    if not isinstance(messages, list):
        return prompt
    return "\n".join(str(m.get("content", "")) for m in messages
                     if isinstance(m, dict) and m.get("role") == "user")


def _template_parts(task: TaskSettings) -> tuple[str, str]:
    """The text a task's question template puts before and after the row's text."""
    prompt = TaskPrompt.of(task, task_label_set(task))
    head, _, tail = prompt.user_turn(_MARK).partition(_MARK)
    return head, tail


def _input_text(example: Example, parts: tuple[str, str] | None) -> str:
    if example.text is not None:
        return example.text
    users = [m.content for m in example.messages if m.role == "user"]
    if parts is not None and len(users) == 1:
        head, tail = parts
        text = users[0]
        if text.startswith(head) and text.endswith(tail) and len(text) >= len(head) + len(tail):
            return text[len(head):len(text) - len(tail)]
    return "\n".join(users)


def _answer(example: Example) -> str | None:
    answers = [m.content for m in example.messages if m.role == "assistant"]
    return answers[-1] if answers else None


def _changed_files(run_dir: Path) -> list[str]:
    inputs = run_dir / "inputs.json"
    if not inputs.is_file():
        return []
    changed = []
    for rec in json.loads(inputs.read_text(encoding="utf-8")).get("files", []):
        path = Path(rec.get("path", ""))
        if path.is_file() and rec.get("sha256") and sha256_file(path) != rec["sha256"]:
            changed.append(str(path))
    return changed


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` is a finished run folder (``config.yaml`` and ``summary.json``)."""
    p = Path(path)
    return (p / "config.yaml").is_file() and (p / "summary.json").is_file()


def run_reference(run_dir: Path, embed: Embed | None = None, reporter: Reporter = SILENT,
                  seed: int = 0) -> RunReference:
    """Read a run's training data and tokenizer into a drift reference (no weights loaded).

    Args:
        run_dir: a finished run folder.
        embed: texts to embeddings (the ``semantic`` extra); None: no embedding feature.
        reporter: told what is read.
        seed: picks the sample when the run trained on more than ``REFERENCE_ROWS`` rows.

    Returns:
        The reference; ``notes`` say when it is a sample or a file changed since training.

    Raises:
        StoreError: the folder is not a finished run, or has no tokenizer.
        ConfigError, DataError: the run's config is invalid, or its training data is gone
            or unreadable.
        ModelError: the tokenizer cannot be loaded.
    """
    from tunelab.config.loader import config_from_dict
    from tunelab.models.loading import load_tokenizer
    from tunelab.models.runs import run_settings
    from tunelab.train.run import load_run_examples

    if not is_run_folder(run_dir):
        raise StoreError(f"{run_dir} is not a finished run folder (no config.yaml or summary.json)",
                         hint="monitor a served run, or train it to the end")
    if not (run_dir / "tokenizer").is_dir():
        raise StoreError(f"run {run_dir} has no tokenizer/ folder", hint="train it again")
    raw = run_settings(run_dir)
    cfg = config_from_dict(raw, source=str(run_dir / "config.yaml"), base_dir=run_dir)
    trust = bool(cfg.model.trust_remote_code)
    cfg, train_ex, _ = load_run_examples(cfg, reporter)
    notes = []
    changed = _changed_files(run_dir)
    if changed:
        notes.append(f"training file(s) changed since the run was trained: {', '.join(changed)}; "
                     "compared with them as they are now")
    rows = len(train_ex)
    if rows > REFERENCE_ROWS:
        train_ex = random.Random(f"tunelab.drift:{seed}").sample(train_ex, REFERENCE_ROWS)
        notes.append(f"reference: a seeded sample of {REFERENCE_ROWS:,} of the {rows:,} "
                     "training rows")
    task = cfg.task
    parts = _template_parts(task) if task is not None else None
    texts = [_input_text(e, parts) for e in train_ex]
    tokenizer = load_tokenizer(run_dir / "tokenizer", trust_remote_code=trust)
    labels = words = None
    if task is not None and task.type == "classify":
        label_set = task_label_set(task)
        assert label_set is not None  # a classify task resolves its labels
        words = label_set.words
        labels = [_answer(e) or "" for e in train_ex]
    embeddings = embed(texts) if embed is not None and texts else None
    reference = Reference(tokenize(tokenizer, texts), labels, words, embeddings)
    return RunReference(run_dir, tokenizer, task, reference, rows, notes)
