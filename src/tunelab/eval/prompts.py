"""Prompts an evaluation sends beyond a task's own: multiple choice (BBQ).

Task prompts (classify, regress, generate) are ``tunelab.data.task``'s ``task_chat``,
the function training renders rows with; ``LabelSet`` (labels and their answer words)
lives there too. This module knows nothing of models; it builds ``Message`` lists.
"""

from __future__ import annotations

from collections.abc import Sequence

from tunelab.data.example import Message


def multiple_choice(context: str, question: str, options: Sequence[str]) -> list[Message]:
    """A multiple-choice question as one user turn, options lettered A, B, C, ..."""
    letters = [chr(ord("A") + i) for i in range(len(options))]
    lines = "\n".join(f"{ltr}. {opt}" for ltr, opt in zip(letters, options, strict=True))
    return [
        Message("system", "Answer the question about the text. Reply with the letter of the "
                          "correct option only."),
        Message("user", f"{context}\n\nQuestion: {question}\n{lines}\nAnswer:"),
    ]
