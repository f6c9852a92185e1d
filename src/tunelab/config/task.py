"""The task a run is trained for, declared once: what the model reads and what it answers.

A ``task:`` section in a run config says how a table becomes prompts and answers::

    task:
      type: classify                 # classify, regress or generate
      text_field: sentence           # the column the model reads (None: detected)
      label_field: label             # the column with the answer
      labels: {0: negative, 1: positive}   # table label -> the word the model answers

Training renders every row through ``tunelab.data.task``; the run stores the task, and
evaluation, ``generate``/``chat`` and serving render the same prompt from it, so a model
is always asked what it was trained on. Defaults live here and nowhere else.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TaskType = Literal["classify", "regress", "generate"]
Normalizer = Literal["exact", "gsm8k", "last_number", "number"]
ScoreMethod = Literal["likelihood", "generate"]

# The placeholders a question template may hold.
TEXT_SLOT = "{text}"  # the row's text
LABELS_SLOT = "{labels}"  # classify: the label words, "a, b or c"


def labels_as_text(v: object) -> object:
    """Labels as the text tables hold: YAML reads `labels: [0, 1]` and `{0: negative}` with
    numbers, and a flag gives ``"0,1"``; anything else is left for validation to judge."""
    if isinstance(v, str):
        return [x.strip() for x in v.split(",") if x.strip()]
    if isinstance(v, list):
        return [str(x) for x in v]
    if isinstance(v, dict):
        return {str(k): str(x) for k, x in v.items()}
    return v


class TaskSettings(BaseModel):
    """One task: the columns it reads, the answers it gives, the prompt it asks."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    type: TaskType
    text_field: str | None = None  # the column the model reads; None: the table's one text column
    label_field: str = "label"  # classify: the label; regress: the number; generate: the answer
    # classify: the table's labels in order, or a mapping table label -> the word the model
    # answers ({0: negative, 1: positive}); None: the sorted labels of the training rows.
    labels: list[str] | dict[str, str] | None = None
    system_prompt: str | None = None  # None: built per type (classify lists the label words)
    template: str | None = None  # the user turn, with {text} (and {labels}); None: per type
    normalizer: Normalizer = "exact"  # generate: how answers are compared (gsm8k: after ####)
    method: ScoreMethod = "likelihood"  # classify: score each label word, or match a free answer
    abstain_below: float | None = Field(None, gt=0, lt=1)  # classify: top probability under this abstains

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_text(cls, v: object) -> object:
        return labels_as_text(v)

    @model_validator(mode="after")
    def _consistent(self) -> TaskSettings:
        problems = []
        if self.labels is not None:
            keys = list(self.labels)
            words = list(self.labels.values()) if isinstance(self.labels, dict) else keys
            if len(keys) < 2 or len(set(keys)) != len(keys):
                problems.append("labels: needs two or more distinct labels")
            if len({w.strip().casefold() for w in words}) != len(words):
                problems.append(f"labels: two labels share a word ({words}); give each its own")
            if any(not w.strip() for w in words):
                problems.append("labels: a label word is empty")
            if self.type != "classify":
                problems.append(f"labels: only a classify task has labels, not {self.type!r}")
        if self.template is not None and TEXT_SLOT not in self.template:
            problems.append(f"template: must hold {TEXT_SLOT} where the row's text goes")
        if self.abstain_below is not None and self.type != "classify":
            problems.append("abstain_below: only a classify task can abstain")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def label_list(self) -> list[str] | None:
        """The table's labels in order (None: taken from the data)."""
        return None if self.labels is None else list(self.labels)

    def label_names(self) -> dict[str, str]:
        """Table label -> answer word, for labels given as a mapping (else empty)."""
        return dict(self.labels) if isinstance(self.labels, dict) else {}
