"""Label quality: conflicting labels, agreement between annotators, and a label guideline.

* conflicts: the same input (normalized as for exact duplicates) with different labels
  or answers; the model is taught both.
* agreement: when rows carry several annotations, Cohen's kappa for two annotators and
  Fleiss' kappa for more, with per-label kappa and a confusion table.
* guideline: a YAML file that defines every allowed label with a definition and
  examples; a label not in it is an error.

Labels are compared as text (``label_text``), so JSON ``0``, CSV ``"0"`` and a YAML key
``0`` are one label. This module knows nothing of models; it reads tables and YAML.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import yaml

from tunelab.data.findings import ERROR, WARNING, Finding, show_value
from tunelab.data.table import label_text, read_table, require_columns, row_text, text_columns
from tunelab.errors import DataError
from tunelab.gate.dedup import normalize_text


def find_label_conflicts(inputs: Sequence[str], labels: Sequence[object]) -> list[list[int]]:
    """Rows with the same normalized input but more than one distinct label.

    Args:
        inputs: the input text of each row.
        labels: the label (or answer) of each row.

    Returns:
        Clusters of row indices (each sorted, every row of that input), by first row.
    """
    groups: dict[str, list[int]] = {}
    for i, text in enumerate(inputs):
        groups.setdefault(normalize_text(text), []).append(i)
    return [g for g in groups.values()
            if len(g) >= 2 and len({label_text(labels[i]) for i in g}) > 1]


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two annotators over the same items.

    Args:
        a: the first annotator's label per item.
        b: the second annotator's label per item, same length.

    Returns:
        The kappa, or ``None`` when it is undefined (no items, or chance agreement is
        1 because both annotators used one and the same label throughout).
    """
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    count_a, count_b = Counter(a), Counter(b)
    expected = sum(count_a[c] * count_b[c] for c in count_a) / (n * n)
    if expected == 1:
        return None
    return (observed - expected) / (1 - expected)


def fleiss_kappa(items: Sequence[Sequence[str]]) -> tuple[float | None, dict[str, float | None]]:
    """Fleiss' kappa of items that each carry the same number (2 or more) of labels.

    Args:
        items: the labels of each item, one per annotator.

    Returns:
        ``(kappa, per_label)``: per-label kappa (Fleiss 1971, eq. 9) keyed by label;
        ``None`` where undefined (no items, or a label used on every rating or none).

    Raises:
        ValueError: items have different numbers of labels, or fewer than 2.
    """
    sizes = {len(item) for item in items}
    if not items:
        return None, {}
    if len(sizes) != 1 or min(sizes) < 2:
        raise ValueError(f"every item needs the same number (>= 2) of labels, got {sizes}")
    n = sizes.pop()
    big_n = len(items)
    categories = sorted({label for item in items for label in item})
    counts = [Counter(item) for item in items]
    p = {c: sum(cnt[c] for cnt in counts) / (big_n * n) for c in categories}
    p_bar = sum((sum(v * v for v in cnt.values()) - n) / (n * (n - 1)) for cnt in counts) / big_n
    p_e = sum(v * v for v in p.values())
    kappa = None if p_e == 1 else (p_bar - p_e) / (1 - p_e)
    per_label: dict[str, float | None] = {}
    for c in categories:
        spread = big_n * n * (n - 1) * p[c] * (1 - p[c])
        disagree = sum(cnt[c] * (n - cnt[c]) for cnt in counts)
        per_label[c] = None if spread == 0 else 1 - disagree / spread
    return kappa, per_label


def agreement(items: Sequence[Sequence[str | None]],
              annotators: Sequence[str] | None = None) -> dict:
    """Agreement of annotators: kappa, per-label kappa and a confusion table.

    Two annotators get Cohen's kappa (per label: one label against the rest) and a
    confusion table of the first annotator's label (rows) against the second's. More
    get Fleiss' kappa (and its per-label kappa) and a table that counts, for every item,
    every ordered pair of two different annotators' labels (so it is symmetric).
    Missing labels (``None`` or ``""``) leave an item out; the count is reported.

    Args:
        items: per item, one label per annotator (by position).
        annotators: their names, for the report.

    Returns:
        JSON-ready: ``method``, ``annotators``, ``items``, ``items_left_out``,
        ``observed_agreement``, ``kappa``, ``per_label`` and ``confusion``.
    """
    width = max((len(item) for item in items), default=0)
    if width < 2:
        raise DataError(f"agreement needs two or more annotations per row, found {width}",
                        hint="name the annotation columns with --annotators A,B[,C...]")
    names = list(annotators) if annotators else [f"annotator_{k + 1}" for k in range(width)]
    complete = cast(list[list[str]],  # the filter leaves no None
                    [list(item) for item in items
                     if len(item) == width and all(x not in (None, "") for x in item)])
    report: dict = {"method": "cohen" if width == 2 else "fleiss", "annotators": names,
                    "items": len(complete), "items_left_out": len(items) - len(complete)}
    report["observed_agreement"] = (sum(len(set(i)) == 1 for i in complete) / len(complete)
                                    if complete else None)
    labels = sorted({x for item in complete for x in item})
    confusion = {a: {b: 0 for b in labels} for a in labels}
    if width == 2:
        first, second = [i[0] for i in complete], [i[1] for i in complete]
        report["kappa"] = cohen_kappa(first, second)
        report["per_label"] = {c: cohen_kappa([x == c for x in first], [y == c for y in second])
                               for c in labels}
        for x, y in zip(first, second, strict=True):
            confusion[x][y] += 1
    else:
        report["kappa"], report["per_label"] = fleiss_kappa(complete)
        for item in complete:
            for u, x in enumerate(item):
                for v, y in enumerate(item):
                    if u != v:
                        confusion[x][y] += 1
    report["confusion"] = confusion
    return report


@dataclass
class LabelDefinition:
    """One label of a guideline: what it means, examples, and the line it is defined on."""

    definition: str
    examples: list[str]
    line: int


@dataclass
class Guideline:
    """An annotation guideline: every allowed label with its definition and examples."""

    source: str
    labels: dict[str, LabelDefinition]


_GUIDELINE_SHAPE = ("labels:\n  positive:\n    definition: the review recommends the film\n"
                    "    examples: [\"a triumph\"]")


def load_guideline(path: str | Path) -> Guideline:
    """Read and check an annotation guideline (YAML).

    The file is ``labels:`` mapping each label to ``definition`` (a non-empty string)
    and ``examples`` (a non-empty list of strings); nothing else is allowed per label.

    Args:
        path: the YAML file.

    Returns:
        The guideline.

    Raises:
        DataError: the file is missing, not YAML, or not of that shape; every problem
            is listed with its line.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{source}: the guideline cannot be read ({e})",
                        hint="check the path to the guideline YAML file") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise DataError(f"{source}{where}: the guideline is not valid YAML "
                        f"({getattr(e, 'problem', None) or e})", hint="fix the YAML syntax") from None
    problems: list[str] = []
    labels: dict[str, LabelDefinition] = {}
    node = _mapping_value(root, "labels")
    if node is None:
        problems.append(f"{source}:1 labels: the guideline needs a 'labels' mapping, like\n"
                        f"{_GUIDELINE_SHAPE}")
    else:
        for key, value in node.value:
            line = key.start_mark.line + 1
            name = str(key.value)
            where = f"{source}:{line} labels.{name}"
            if name in labels:
                problems.append(f"{where}: the label is defined twice; keep one definition")
                continue
            entry = _label_entry(value, where, problems)
            if entry is not None:
                labels[name] = LabelDefinition(entry[0], entry[1], line)
    if problems:
        raise DataError(f"{source}: {len(problems)} problem(s) in the guideline",
                        findings=problems, hint="every label needs a definition and examples")
    return Guideline(source, labels)


def _mapping_value(node: yaml.Node | None, key: str) -> yaml.MappingNode | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if k.value == key and isinstance(v, yaml.MappingNode) and v.value:
            return v
    return None


def _label_entry(node: yaml.Node, where: str, problems: list[str]):
    if not isinstance(node, yaml.MappingNode):
        problems.append(f"{where}: must be a mapping with 'definition' and 'examples'")
        return None
    before = len(problems)
    keys = {k.value: v for k, v in node.value}
    for extra in sorted(set(keys) - {"definition", "examples"}):
        problems.append(f"{where}.{extra}: unknown key; only 'definition' and 'examples' "
                        "are read (a typo?)")
    definition = keys.get("definition")
    if not isinstance(definition, yaml.ScalarNode) or not str(definition.value).strip():
        problems.append(f"{where}.definition: missing or empty; say what the label means")
    examples = keys.get("examples")
    if not isinstance(examples, yaml.SequenceNode) or not examples.value \
            or not all(isinstance(e, yaml.ScalarNode) and e.value.strip() for e in examples.value):
        problems.append(f"{where}.examples: must be a non-empty list of example texts")
    if len(problems) > before:
        return None
    assert definition is not None and examples is not None  # both checked just above
    return str(definition.value), [str(e.value) for e in examples.value]


def check_against_guideline(labels: Sequence[object], lines: Sequence[int], source: str,
                            field_name: str, guideline: Guideline) -> list[Finding]:
    """An error per row whose label is missing or not defined in the guideline.

    Args:
        labels: the label of each row.
        lines: the line of each row.
        source: the data file, for the findings.
        field_name: the label column, for the findings.
        guideline: the allowed labels.

    Returns:
        One ``missing_label`` or ``unknown_label`` error per bad row.
    """
    known = list(guideline.labels)
    findings = []
    for value, line in zip(labels, lines, strict=True):
        text = label_text(value)
        if text == "":
            findings.append(Finding(source, line, field_name, "missing_label",
                                    "the row has no label; label it or drop the row", ERROR))
        elif text not in guideline.labels:
            close = difflib.get_close_matches(text, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            findings.append(Finding(
                source, line, field_name, "unknown_label",
                f"label {show_value(value)} is not in the guideline {guideline.source} "
                f"(labels: {', '.join(known)}){hint}; fix the row or define the label", ERROR))
    return findings


@dataclass
class LabelReport:
    """What ``labels_in_file`` found; ``findings`` are per row, errors and warnings."""

    source: str
    label: str | None
    inputs: list[str]
    counts: dict[str, int] = field(default_factory=dict)
    conflicts: list[dict] = field(default_factory=list)
    agreement: dict | None = None
    unused_labels: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def to_json(self) -> dict:
        """The report as JSON-ready data."""
        return {"file": self.source, "label": self.label, "inputs": self.inputs,
                "counts": self.counts, "conflicts": self.conflicts,
                "agreement": self.agreement, "unused_labels": self.unused_labels,
                "findings": [str(f) for f in self.findings]}


def labels_in_file(path: str | Path, label: str | None = None, fields: list[str] | None = None,
                   annotators: list[str] | None = None, annotations: str | None = None,
                   guideline: str | Path | None = None) -> LabelReport:
    """Check the labels of a data file.

    Args:
        path: the data file.
        label: the label (or answer) column: counted, checked for conflicts and against
            the guideline.
        fields: the input columns; by default every column but the label and annotations.
        annotators: columns holding one annotator's label each (two or more).
        annotations: one column holding a list of labels (or a JSON list as text).
        guideline: a guideline YAML; labels and annotations not in it are errors.

    Returns:
        The report.

    Raises:
        DataError: nothing to check, a column or the guideline is missing or malformed,
            or an annotations cell is not a list.
    """
    if not label and not annotators and not annotations:
        raise DataError("nothing to check: name a label column, annotators or annotations",
                        hint="e.g. --label label, or --annotators rater1,rater2")
    table = read_table(path)
    require_columns(table, [c for c in [label, annotations, *(annotators or [])] if c], "column")
    rules = load_guideline(guideline) if guideline else None
    skip = [c for c in [label, annotations, *(annotators or [])] if c]
    inputs = text_columns(table, fields, skip)
    report = LabelReport(table.source, label, inputs)
    if label:
        values = [row.get(label) for row in table.rows]
        report.counts = dict(sorted(Counter(label_text(v) for v in values).items()))
        texts = [row_text(row, inputs) for row in table.rows]
        for cluster in find_label_conflicts(texts, values):
            report.conflicts.append({"lines": [table.lines[i] for i in cluster],
                                     "labels": [label_text(values[i]) for i in cluster]})
            shown = ", ".join(f"{table.lines[i]}: {label_text(values[i])!r}" for i in cluster)
            for i in cluster:
                report.findings.append(Finding(
                    table.source, table.lines[i], label, "conflicting_labels",
                    f"the same input has different labels on lines {shown}; keep the right "
                    "one (see `tunelab data clean`) or fix the labels", ERROR))
        if rules:
            report.findings += check_against_guideline(values, table.lines, table.source,
                                                       label, rules)
            report.unused_labels = [k for k in rules.labels if k not in report.counts]
        elif "" in report.counts:
            report.findings += [Finding(table.source, line, label, "missing_label",
                                        "the row has no label", WARNING)
                                for line, v in zip(table.lines, values, strict=True)
                                if label_text(v) == ""]
    if annotators or annotations:
        items = _annotation_items(table, annotators, annotations)
        report.agreement = agreement(items, annotators)
        if rules:
            for k, item in enumerate(items):
                present = [x for x in item if x not in (None, "")]
                report.findings += check_against_guideline(
                    present, [table.lines[k]] * len(present), table.source,
                    annotations or ",".join(annotators or []), rules)
    report.findings.sort(key=lambda f: (f.line, f.code))
    return report


def _annotation_items(table, annotators: list[str] | None,
                      annotations: str | None) -> list[list[str | None]]:
    if annotators:
        return [[label_text(row.get(a)) or None for a in annotators] for row in table.rows]
    items, bad = [], []
    for row, line in zip(table.rows, table.lines, strict=True):
        value = row.get(annotations)
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else []
            except ValueError:
                value = None
        if not isinstance(value, list):
            bad.append(f"{table.source}:{line} {annotations}: expected a list of labels "
                       f"(or a JSON list as text), got {show_value(row.get(annotations))}")
            continue
        items.append([label_text(v) or None for v in value])
    if bad:
        raise DataError(f"{table.source}: {len(bad)} annotations cell(s) are not lists",
                        findings=bad, hint='write each as a list, e.g. ["pos", "neg", "pos"]')
    return items
