"""Label schemas: the questions a review project asks about each item, and its answers.

A schema is a list of fields. A field is a ``choice`` (one of a few words), a ``score``
(a whole number, 1 to 5 unless told otherwise) or ``text`` (a free correction). A choice
whose choices are ``["@answers"]`` offers the item's own answer labels (A, B, ...) and
``tie``: the blinded "which answer is better" of an output comparison. ``show`` limits a
field to items with one answer (``one_answer``) or several (``many_answers``); fields
that do not apply to an item are not asked and are absent from its answers.

Each kind of project has a default schema (``default_schema``); a project may bring its
own as YAML (``load_schema``): ``fields: [{name, kind, question, choices, low, high,
required, show}]``: ``choices`` a list of distinct words or numbers, ``required`` true
or false, a score's ``high - low`` at most 20, and no field named ``csrf_token``,
``guideline_version`` or ``next`` (the review forms' own). Two answers agree when every field that applies is equal; text is
compared with its whitespace collapsed, and an empty text means "no correction".

This module knows nothing of HTTP or the database: it checks and compares dicts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, cast

import yaml

from tunelab.errors import UsageError

ANSWERS = "@answers"
TIE = "tie"
TEXT_LIMIT = 20_000  # characters of one text answer (a long corrected answer fits)
FieldKind = Literal["choice", "score", "text"]
Show = Literal["always", "one_answer", "many_answers"]
_KINDS = ("choice", "score", "text")
_SHOWS = ("always", "one_answer", "many_answers")
SCORE_SPAN = 20  # a score's high - low at most: the form shows one button per value
RESERVED = ("csrf_token", "next", "guideline_version")  # form fields of the review app's own


class AnswerInvalid(UsageError):
    """A submitted answer that misses a required field or holds a value not allowed;
    ``problems`` names each field at fault."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("the answer is incomplete: " + "; ".join(problems),
                         hint="answer every required question")
        self.problems = problems


@dataclass(frozen=True)
class Field:
    """One question of a schema (see the module docstring)."""

    name: str
    kind: FieldKind
    question: str
    choices: tuple[str, ...] = ()
    low: int = 1
    high: int = 5
    required: bool = True
    show: Show = "always"

    def applies(self, shown: Mapping) -> bool:
        """Whether this field is asked about an item that shows ``shown``."""
        n = len(shown.get("answers") or [])
        return (self.show == "always" or (self.show == "one_answer" and n <= 1)
                or (self.show == "many_answers" and n > 1))

    def options(self, shown: Mapping) -> list[str]:
        """The choices offered for an item (``@answers`` expanded), or [] for other kinds."""
        if self.kind != "choice":
            return []
        if self.choices == (ANSWERS,):
            return [str(a["label"]) for a in shown.get("answers") or []] + [TIE]
        return list(self.choices)

    @property
    def level(self) -> str:
        """The level of measurement agreement statistics use: nominal, ordinal or text."""
        return {"choice": "nominal", "score": "ordinal", "text": "text"}[self.kind]


DEFAULTS: dict[str, tuple[Field, ...]] = {
    "output": (
        Field("preferred", "choice", "Which answer is better?", (ANSWERS,), show="many_answers"),
        Field("verdict", "choice", "Is the answer acceptable by the guideline?", ("good", "bad"),
              show="one_answer"),
        # one-answer items only: a comparison asks which answer is better, and its
        # exports (rows, pairs, verdicts) have no use for a third answer
        Field("correction", "text", "The right answer, if this one is wrong (optional)",
              required=False, show="one_answer"),
    ),
    "data": (
        Field("label_ok", "choice", "Is the label (or answer) right by the guideline?",
              ("yes", "no")),
        Field("fixed", "text", "The right label or answer, when it is wrong (optional)",
              required=False),
    ),
    "feedback": (
        Field("decision", "choice", "Is the user's correction right, so we may train on it?",
              ("approve", "reject")),
        Field("correction", "text", "A better correction, if the user's needs fixing (optional)",
              required=False),
    ),
}


def default_schema(kind: str) -> list[Field]:
    """The default fields of a project kind (output, data or feedback)."""
    return list(DEFAULTS[kind])


def schema_to_json(fields: Sequence[Field]) -> dict:
    """A schema as stored in the database."""
    return {"fields": [{**asdict(f), "choices": list(f.choices)} for f in fields]}


def schema_from_json(doc: Mapping) -> list[Field]:
    """A schema as read back from the database (already checked when stored)."""
    return [Field(**{**f, "choices": tuple(f["choices"])}) for f in doc["fields"]]


def load_schema(path: str | Path) -> list[Field]:
    """Read and check a schema from YAML; every problem is reported at once.

    Raises:
        UsageError: the file cannot be read, or fields are malformed (each named).
    """
    source = str(path)
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UsageError(f"{source}: the label schema cannot be read ({e})",
                         hint="give a YAML file with a `fields:` list") from None
    raw = doc.get("fields") if isinstance(doc, dict) else None
    if not isinstance(raw, list) or not raw:
        raise UsageError(f"{source}: the label schema needs a non-empty `fields:` list",
                         hint="fields: [{name: verdict, kind: choice, question: ..., "
                              "choices: [good, bad]}]")
    problems, fields, names = [], [], set()
    for i, f in enumerate(raw):
        where = f"{source}: fields[{i}]"
        if not isinstance(f, dict):
            problems.append(f"{where}: must be a mapping")
            continue
        unknown = set(f) - {"name", "kind", "question", "choices", "low", "high", "required",
                            "show"}
        if unknown:
            problems.append(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        name, kind = str(f.get("name") or ""), f.get("kind")
        if not name.isidentifier() or name in names:
            problems.append(f"{where}.name: {name!r} must be a unique identifier-like word")
        elif name in RESERVED:
            problems.append(f"{where}.name: {name!r} is reserved (the review forms use it); "
                            "choose another name")
        names.add(name)
        if kind not in _KINDS:
            problems.append(f"{where}.kind: {kind!r} must be one of {', '.join(_KINDS)}")
        question = f.get("question", name)
        if not isinstance(question, str):
            problems.append(f"{where}.question: {question!r} must be text")
        choices, bad = _choices(f.get("choices"), where)
        problems.extend(bad)
        if kind == "choice" and not bad and len(choices) < 2 and choices != (ANSWERS,):
            problems.append(f"{where}.choices: a choice needs two or more choices (or {ANSWERS})")
        low, high = f.get("low", 1), f.get("high", 5)
        if kind == "score" and not (_whole(low) and _whole(high) and low < high):
            problems.append(f"{where}: low ({low!r}) and high ({high!r}) must be whole numbers, low < high")
        elif kind == "score" and high - low > SCORE_SPAN:
            problems.append(f"{where}: low ({low}) to high ({high}) spans {high - low}; at most "
                            f"{SCORE_SPAN} (one button per value)")
        required = f.get("required", kind != "text")
        if not isinstance(required, bool):
            problems.append(f"{where}.required: {required!r} must be true or false")
        show = f.get("show", "always")
        if show not in _SHOWS:
            problems.append(f"{where}.show: {show!r} must be one of {', '.join(_SHOWS)}")
        if not problems:
            fields.append(Field(name, cast(FieldKind, kind), question or name,
                                choices, low, high, required, show))
    if problems:
        raise UsageError(f"{source}: {len(problems)} problem(s) in the label schema:\n  "
                         + "\n  ".join(problems), hint="fix each field named above")
    return fields


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _choices(raw: object, where: str) -> tuple[tuple[str, ...], list[str]]:
    """A field's choices as words, and the problems with them: a list of distinct,
    non-empty words or numbers (a bare word would be read letter by letter)."""
    if raw is None:
        return (), []
    if not isinstance(raw, list):
        return (), [f"{where}.choices: {raw!r} must be a list, like [good, bad]"]
    problems = []
    for c in raw:
        if isinstance(c, bool):  # YAML reads a bare yes/no/on/off as true/false
            problems.append(f"{where}.choices: {c!r} was read as true/false; quote the word "
                            "(\"yes\", \"no\")")
        elif not isinstance(c, (str, int, float)) or not str(c).strip():
            problems.append(f"{where}.choices: {c!r} must be a non-empty word or number")
    words = tuple(str(c) for c in raw)
    if not problems and len(set(words)) < len(words):
        problems.append(f"{where}.choices: {list(words)!r} holds a choice twice")
    return words, problems


def parse_answer(fields: Sequence[Field], shown: Mapping, form: Mapping[str, str]) -> dict:
    """Turn submitted form values into a checked answer.

    Returns:
        ``{field: value}`` for every field that applies (a choice's word, a score's
        int, a text's stripped string, ``""`` for an optional field left empty).

    Raises:
        AnswerInvalid: a required field is missing or a value is not allowed; every
            problem is named at once.
    """
    answer: dict = {}
    problems = []
    for f in fields:
        if not f.applies(shown):
            continue
        raw = (form.get(f.name) or "").strip()
        if f.kind == "text":
            if len(raw) > TEXT_LIMIT:
                problems.append(f"{f.name}: {len(raw)} characters; at most {TEXT_LIMIT}")
            elif f.required and not raw:
                problems.append(f"{f.name}: required")
            answer[f.name] = raw
        elif not raw:
            if f.required:
                problems.append(f"{f.name}: choose one ({f.question})")
        elif f.kind == "choice":
            if raw not in f.options(shown):
                problems.append(f"{f.name}: {raw!r} is not one of {', '.join(f.options(shown))}")
            answer[f.name] = raw
        else:
            try:
                value = int(raw)
            except ValueError:
                value = None
            if value is None or not f.low <= value <= f.high:
                problems.append(f"{f.name}: {raw!r} must be a whole number {f.low} to {f.high}")
            answer[f.name] = value
    if problems:
        raise AnswerInvalid(problems)
    return answer


def normal(value: object) -> object:
    """A value as compared for agreement: text with whitespace collapsed, others as is."""
    return " ".join(value.split()) if isinstance(value, str) else value


def agree(answers: Sequence[Mapping]) -> bool:
    """Whether every answer gives the same value to every field (text normalized)."""
    keys = set().union(*answers) if answers else set()
    return all(len({repr(normal(a.get(k))) for a in answers}) == 1 for k in keys)


def levels(fields: Sequence[Field]) -> dict[str, str]:
    """Field name -> level of measurement, for the agreement statistics."""
    return {f.name: f.level for f in fields}
