"""Prompts an evaluation sends: label words, default system prompts, multiple choice.

A file's labels may be codes (SST-2's ``0``/``1``); ``LabelSet`` maps each to the word
the model is asked to answer with (``negative``/``positive``), and answers back to the
file's labels, so metrics always use the file's own labels.

This module knows nothing of models; it builds ``Message`` lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tunelab.data.example import Message
from tunelab.errors import ConfigError


@dataclass(frozen=True)
class LabelSet:
    """The classes as written in the file, and the word the prompt uses for each.

    Args:
        labels: the file's labels, in confusion-matrix order.
        names: label -> word; labels without an entry are asked for as written.

    Raises:
        ConfigError: a name is given for an unknown label, or two labels share a word.
    """

    labels: tuple[str, ...]
    names: tuple[tuple[str, str], ...] = ()

    @classmethod
    def build(cls, labels: Sequence[str], names: dict[str, str] | None = None) -> LabelSet:
        names = names or {}
        problems = [f"label_names: {k!r} is not one of the labels {list(labels)}"
                    for k in names if k not in labels]
        words = [names.get(lab, lab) for lab in labels]
        if len(set(w.casefold() for w in words)) != len(words):
            problems.append(f"label_names: two labels share a word ({words}); give each its own")
        if problems:
            raise ConfigError(problems)
        return cls(tuple(labels), tuple((k, names[k]) for k in labels if k in names))

    def word(self, label: str) -> str:
        """The word the model is asked for, for one file label."""
        return dict(self.names).get(label, label)

    @property
    def words(self) -> list[str]:
        return [self.word(lab) for lab in self.labels]

    def label_of(self, word: str | None) -> str | None:
        """The file label of a word (as ``match_label`` returned it), or None."""
        if word is None:
            return None
        back = {self.word(lab): lab for lab in self.labels}
        return back.get(word)


def classification_system_prompt(words: Sequence[str]) -> str:
    """The default system prompt: the task and the allowed answers, nothing else."""
    listed = ", ".join(words)
    return (f"Classify the text the user sends. Reply with exactly one of these labels and "
            f"nothing else: {listed}.")


def _either(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def classification_chat(prompt: Sequence[Message], words: Sequence[str],
                        system: str | None) -> list[Message]:
    """The chat a classifier is asked.

    A chat with its own system turn is sent as it is. Otherwise, with no ``system``
    given, the default system prompt lists the labels and the last user turn becomes
    ``Text: ...`` followed by the question ("Which label fits the text: negative or
    positive?"): small chat models answer a question far more often with a label than
    they obey a system prompt alone. A given ``system`` is added and the turn kept.
    """
    msgs = list(prompt)
    if msgs and msgs[0].role == "system":
        return msgs
    if system is not None:
        return with_system(msgs, system)
    for i in range(len(msgs) - 1, -1, -1):
        if msgs[i].role == "user":
            question = f"Which label fits the text: {_either(list(words))}?"
            msgs[i] = Message("user", f"Text: {msgs[i].content}\n\n{question}", msgs[i].weight)
            break
    return with_system(msgs, classification_system_prompt(words))


REGRESSION_SYSTEM_PROMPT = "Answer with a single number and nothing else."


def with_system(prompt: Sequence[Message], system: str | None) -> list[Message]:
    """The chat with ``system`` as its first turn, unless it has a system turn already."""
    msgs = list(prompt)
    if system is None or (msgs and msgs[0].role == "system"):
        return msgs
    return [Message("system", system), *msgs]


def multiple_choice(context: str, question: str, options: Sequence[str]) -> list[Message]:
    """A multiple-choice question as one user turn, options lettered A, B, C, ..."""
    letters = [chr(ord("A") + i) for i in range(len(options))]
    lines = "\n".join(f"{ltr}. {opt}" for ltr, opt in zip(letters, options, strict=True))
    return [
        Message("system", "Answer the question about the text. Reply with the letter of the "
                          "correct option only."),
        Message("user", f"{context}\n\nQuestion: {question}\n{lines}\nAnswer:"),
    ]
