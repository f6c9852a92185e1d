"""Make the feedback loop's data from SST-2: chat rows to train on, held-out rows, and the
reviews the simulated users send.

    python make_data.py OUT [--shared DIR]

Writes into OUT (nothing into the repository):

* ``train.jsonl``: chat rows, the user turn a review and "Positive or negative?", the
  assistant turn "positive" or "negative"; a seeded, label-balanced sample of
  ``train.tsv``'s whole sentences.
* ``heldout.jsonl``: the same shape, from ``dev.tsv`` (the run's validation set and the
  retrain gate's held-out set).
* ``production.jsonl``: ``{"review", "label"}`` per line, every review of ``test.tsv`` in
  a seeded order: what the simulated users ask about (``users.py``).
* ``offtopic.jsonl`` (when GSM8K is there too): ``{"review"}`` lines holding GSM8K math
  questions, production prompts from another population, for the drift alarm.

The data sets are read where they lie, in ``../shared/data`` beside the checkout (or
``--shared DIR``): ``sst2/`` and ``gsm8k/gsm_8k_train.json``; nothing is copied into the
project.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent.parent / "shared" / "data"  # ../../../shared/data from here
GSM8K = Path("gsm8k") / "gsm_8k_train.json"
WORDS = {"0": "negative", "1": "positive"}
QUESTION = "Positive or negative?"
TRAIN_ROWS = 400  # about 2 minutes of LoRA on 2 CPU cores
HELDOUT_ROWS = 100
OFFTOPIC_ROWS = 60  # above the monitor's min_prompts (50)


class DataError(Exception):
    """The SST-2 folder is missing or not what this script expects."""


def read_tsv(path: Path) -> list[tuple[str, str]]:
    """(text, label) rows of an SST-2 TSV; train calls the text column `sentence`, dev and
    test call it `content`.

    Raises:
        DataError: the file is missing, lacks the columns, or a label is not 0 or 1.
    """
    if not path.is_file():
        raise DataError(f"{path} is missing; pass --shared DIR, the folder holding sst2/ "
                        "(SST-2's train.tsv, dev.tsv and test.tsv)")
    # newline="": train.tsv ends its lines with CRLF
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        column = next((c for c in ("sentence", "content") if c in (reader.fieldnames or [])), None)
        if column is None or "label" not in (reader.fieldnames or []):
            raise DataError(f"{path}: columns {reader.fieldnames}; expected label and sentence or content")
        rows = [(r[column].strip(), r["label"].strip()) for r in reader]
    bad = [(i + 2, lab) for i, (_, lab) in enumerate(rows) if lab not in WORDS]
    if bad:
        # GLUE's own test.tsv has no labels (an index column instead): users could not be
        # scored against the truth, so refuse it rather than invent labels.
        line, label = bad[0]
        raise DataError(f"{path}:{line}: label {label!r} is not 0 or 1 ({len(bad)} such rows); "
                        "the users need labelled reviews (GLUE's test.tsv has none)")
    return rows


def chat(text: str, label: str) -> dict:
    return {"messages": [{"role": "user", "content": f"{text}\n{QUESTION}"},
                         {"role": "assistant", "content": WORDS[label]}]}


def whole_sentences(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    # train.tsv also holds every phrase of its sentences ("a low-budget series", 9 words
    # on average); production reviews are whole sentences (19 words), so a run trained on
    # phrases would rightly be told its traffic drifted.
    return [r for r in rows if r[0].endswith((" .", " !", " ?")) and len(r[0].split()) >= 5]


def balanced(rows: list[tuple[str, str]], n: int, rng: random.Random,
             source: Path) -> list[tuple[str, str]]:
    picked = []
    for label in sorted(WORDS):
        of_label = [r for r in rows if r[1] == label]
        if len(of_label) < n // 2:
            raise DataError(f"{source}: {len(of_label)} usable rows of label {label}; "
                            f"{n // 2} needed")
        picked += rng.sample(of_label, n // 2)
    rng.shuffle(picked)
    return picked


def build(shared: Path, seed: int = 0) -> dict[str, list[dict]]:
    """The files' rows by file name; ``offtopic.jsonl`` only when GSM8K is in ``shared``.

    Raises:
        DataError: as ``read_tsv``, or a GSM8K file that is not a JSON list of questions.
    """
    rng = random.Random(seed)
    sst2, gsm8k = shared / "sst2", shared / GSM8K
    tables = {name: read_tsv(sst2 / name) for name in ("train.tsv", "dev.tsv", "test.tsv")}
    train = balanced(whole_sentences(tables["train.tsv"]), TRAIN_ROWS, rng, sst2 / "train.tsv")
    heldout = balanced(tables["dev.tsv"], HELDOUT_ROWS, rng, sst2 / "dev.tsv")
    production = tables["test.tsv"]
    rng.shuffle(production)
    out = {"train.jsonl": [chat(*r) for r in train],
           "heldout.jsonl": [chat(*r) for r in heldout],
           "production.jsonl": [{"review": t, "label": WORDS[lab]} for t, lab in production]}
    if gsm8k.is_file():
        try:
            questions = [r["instruction"] for r in json.loads(gsm8k.read_text(encoding="utf-8"))]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{gsm8k}: not a JSON list of rows with `instruction` ({e})") from None
        out["offtopic.jsonl"] = [{"review": q} for q in rng.sample(questions, OFFTOPIC_ROWS)]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="the folder the files go to")
    p.add_argument("--shared", type=Path, default=SHARED,
                   help=f"the folder holding sst2/ and gsm8k/ (default {SHARED})")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        files = build(a.shared, a.seed)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        (a.out / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"{a.out / name}: {len(rows)} rows")
    if "offtopic.jsonl" not in files:
        print(f"no offtopic.jsonl: {a.shared / GSM8K} is absent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
