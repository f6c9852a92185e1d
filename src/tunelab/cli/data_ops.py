"""`tunelab data dedup|leakage|labels|clean|split|balance|augment`: the data gate's operations.

``register(subparsers)`` adds the sub-commands to the ``data`` group; each sets
``func`` to a function that returns the exit code: 0 when done (dedup only reports),
1 when a check finds errors (leakage, conflicting or unknown labels). User errors are
raised as ``TunelabError`` for ``tunelab.cli.main`` to print. Printing lives here; the
work is in ``tunelab.data`` and, where a model is needed, ``tunelab.recipes.data_ops``.
"""

from __future__ import annotations

import argparse
import json

from tunelab.cli import exits
from tunelab.cli.args import (
    checked_by,
    non_negative_float,
    non_negative_int,
    positive_int,
    rate,
    similarity,
)
from tunelab.config.schema import DEFAULT_MODEL
from tunelab.data.findings import Finding
from tunelab.errors import DataError
from tunelab.files import write_json_atomic
from tunelab.gate.augment import PARAPHRASE_MAX_NEW_TOKENS, PARAPHRASE_TEMPERATURE, parse_methods
from tunelab.gate.dedup import DEFAULT_NUM_PERM, DEFAULT_SEMANTIC_THRESHOLD, DEFAULT_THRESHOLD
from tunelab.gate.split import parse_ratios

_SHOWN = 20  # findings printed before "... and N more"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the data-gate sub-commands to the ``data`` sub-parser group."""
    _dedup(subparsers)
    _leakage(subparsers)
    _labels(subparsers)
    _clean(subparsers)
    _split(subparsers)
    _balance(subparsers)
    _augment(subparsers)


def _columns(p: argparse.ArgumentParser, what: str = "compared") -> None:
    p.add_argument("--field", action="append", default=None, metavar="COL",
                   help=f"a column {what} (repeat for several); default: every column but "
                        "--exclude")
    p.add_argument("--exclude", action="append", default=[], metavar="COL",
                   help="a column never compared, e.g. the label (repeatable)")


def _near(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", type=similarity, default=DEFAULT_THRESHOLD,
                   help=f"5-gram Jaccard similarity of near duplicates (default {DEFAULT_THRESHOLD})")
    p.add_argument("--no-near", action="store_true", help="exact duplicates only")


def _dedup(sub) -> None:
    p = sub.add_parser("dedup", help="find exact, near and semantic duplicate rows")
    p.add_argument("file", help="the data file (.jsonl, .json, .csv, .tsv or .parquet)")
    _columns(p)
    _near(p)
    p.add_argument("--num-perm", type=positive_int, default=DEFAULT_NUM_PERM,
                   help=f"MinHash permutations (default {DEFAULT_NUM_PERM}; more: finer "
                   "similarity estimates)")
    p.add_argument("--semantic", type=similarity, nargs="?", const=DEFAULT_SEMANTIC_THRESHOLD,
                   default=None, metavar="COSINE", help="also semantic duplicates (embedding "
                   f"cosine, default {DEFAULT_SEMANTIC_THRESHOLD}); needs the 'semantic' extra")
    p.add_argument("--report", metavar="FILE", help="write the clusters as JSON here")
    p.set_defaults(func=_cmd_dedup)


def _cmd_dedup(a: argparse.Namespace) -> int:
    from tunelab.data.table import read_table, row_text
    from tunelab.gate.dedup import duplicates_in_file

    if a.semantic is not None:
        from tunelab.recipes.data_ops import require_semantic

        require_semantic()  # before minutes of work, not after
    report = duplicates_in_file(a.file, a.field, a.exclude, not a.no_near, a.threshold,
                                a.num_perm)
    if a.semantic is not None:
        from tunelab.recipes.data_ops import semantic_duplicates

        table = read_table(a.file)
        texts = [row_text(r, report.fields) for r in table.rows]
        report.clusters["semantic"] = semantic_duplicates(texts, a.semantic)
    summary = report.to_json()
    print(f"{a.file}: {report.rows} rows, compared by {', '.join(report.fields)}")
    for kind in report.clusters:
        s = summary[kind]
        print(f"  {kind}: {s['clusters']} cluster(s), {s['rows_in_clusters']} rows, "
              f"{s['rows_removable']} removable")
    _print_findings(report.findings())
    _write_report(a.report, summary)
    return exits.OK


def _leakage(sub) -> None:
    p = sub.add_parser("leakage", help="rows shared between train, validation and test files")
    p.add_argument("files", nargs="+", help="two or more files, training file first")
    _columns(p)
    _near(p)
    p.add_argument("--report", metavar="FILE", help="write the pairs as JSON here")
    p.set_defaults(func=_cmd_leakage)


def _cmd_leakage(a: argparse.Namespace) -> int:
    from tunelab.gate.leakage import leakage_in_files

    report = leakage_in_files(a.files, a.field, a.exclude, not a.no_near, a.threshold)
    summary = report.to_json()
    for f in report.files[1:]:
        print(f"{f}: {summary['leaked_rows'][f]} of {report.rows[f]} rows also in an earlier file")
    kinds = {k: sum(1 for x in report.leaks if x.kind == k) for k in ("exact", "near")}
    print(f"pairs: {kinds['exact']} exact, {kinds['near']} near")
    _print_findings(report.findings())
    _write_report(a.report, summary)
    return exits.PROBLEMS if report.leaks else exits.OK


def _labels(sub) -> None:
    p = sub.add_parser("labels", help="conflicting labels, annotator agreement, guideline")
    p.add_argument("file", help="the data file (.jsonl, .json, .csv, .tsv or .parquet)")
    p.add_argument("--label", help="the label (or answer) column")
    p.add_argument("--field", action="append", default=None, metavar="COL",
                   help="an input column (repeatable); default every other column")
    p.add_argument("--annotators", type=_names, help="columns of one annotator each: A,B[,C]")
    p.add_argument("--annotations", metavar="COL", help="a column holding a list of labels")
    p.add_argument("--guideline", help="a YAML guideline: labels with definition and examples")
    p.add_argument("--report", metavar="FILE", help="write the report as JSON here")
    p.set_defaults(func=_cmd_labels)


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _cmd_labels(a: argparse.Namespace) -> int:
    from tunelab.gate.labels import labels_in_file

    report = labels_in_file(a.file, a.label, a.field, a.annotators, a.annotations, a.guideline)
    if a.label:
        counts = ", ".join(f"{k or '(none)'}: {v}" for k, v in report.counts.items())
        print(f"{a.file}: labels in {a.label!r}: {counts}")
        print(f"  conflicts: {len(report.conflicts)} input(s) with different labels")
    if report.unused_labels:
        print(f"  guideline labels never used: {', '.join(report.unused_labels)}")
    if report.agreement:
        g = report.agreement
        kappa = "undefined" if g["kappa"] is None else f"{g['kappa']:.3f}"
        print(f"  agreement ({g['method']} kappa over {g['items']} items, "
              f"{g['items_left_out']} left out for missing labels): {kappa}")
        for label, k in g["per_label"].items():
            print(f"    {label}: {'undefined' if k is None else f'{k:.3f}'}")
    _print_findings(report.findings)
    _write_report(a.report, report.to_json())
    return exits.PROBLEMS if any(f.is_error for f in report.findings) else exits.OK


def _clean(sub) -> None:
    p = sub.add_parser("clean", help="normalize text, handle missing values, redact, dedup")
    p.add_argument("input", help="the data file to clean")
    p.add_argument("-o", "--output", required=True, help="the cleaned file (never the input)")
    p.add_argument("--log", help="the change log (CSV); default OUTSTEM.changes.csv")
    p.add_argument("--missing", action="append", default=[], metavar="COL=drop|fill:VALUE",
                   help="what to do with an absent or empty value (COL may be *); repeatable")
    p.add_argument("--redact", nargs="?", const="all", default=None, metavar="KINDS",
                   help="replace personal data with [EMAIL], [PHONE], [CARD], [IP], "
                        "[API_KEY]; all kinds, or a list like EMAIL,PHONE")
    p.add_argument("--field", action="append", default=None, metavar="COL",
                   help="a column that makes rows duplicates (repeatable); default all")
    p.add_argument("--near", type=similarity, nargs="?", const=DEFAULT_THRESHOLD, default=None,
                   metavar="THRESHOLD", help=f"also drop near duplicates (default {DEFAULT_THRESHOLD})")
    p.set_defaults(func=_cmd_clean)


def _cmd_clean(a: argparse.Namespace) -> int:
    from tunelab.gate.clean import CleanOptions, clean_file, parse_missing, parse_redact

    options = CleanOptions(missing=parse_missing(a.missing), redact=parse_redact(a.redact),
                           dedup_fields=a.field, near_threshold=a.near)
    s = clean_file(a.input, a.output, options, a.log)
    actions = ", ".join(f"{k} {v}" for k, v in sorted(s["actions"].items())) or "none"
    print(f"{s['output']}: {s['rows_out']} of {s['rows_in']} rows kept; changes: {actions}")
    print(f"change log: {s['log']}")
    return exits.OK


def _split(sub) -> None:
    p = sub.add_parser("split", help="deterministic, stratified, duplicate-aware split")
    p.add_argument("input", help="the data file to split")
    p.add_argument("--ratios", type=checked_by(parse_ratios), default="0.8,0.1,0.1",
                   help="e.g. 0.8,0.1,0.1 (sum 1)")
    p.add_argument("--names", type=_names, help="part names; default train,validation,test")
    p.add_argument("--stratify", metavar="COL", help="keep this column's class proportions")
    p.add_argument("--group", metavar="COL", help="rows with equal values share a part")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="the same seed gives the same split (default 0)")
    p.add_argument("--out-dir", help="where the parts go; default beside the input")
    p.add_argument("--field", action="append", default=None, metavar="COL",
                   help="a column compared for duplicates (repeatable)")
    _near(p)
    p.set_defaults(func=_cmd_split)


def _cmd_split(a: argparse.Namespace) -> int:
    from tunelab.gate.split import split_file

    m = split_file(a.input, a.ratios, a.seed, a.out_dir, a.names, a.stratify,
                   a.group, a.field, None if a.no_near else a.threshold)
    for name, part in m["parts"].items():
        counts = m["class_counts"][name] if m["class_counts"] else None
        extra = f"  {json.dumps(counts)}" if counts else ""
        print(f"{name}: {part['rows']} rows -> {part['path']}{extra}")
    print(f"kept together: {m['clusters_kept_together']} cluster(s); largest deviation from "
          f"the ratios: {m['max_deviation_rows']} row(s)")
    return exits.OK


def _balance(sub) -> None:
    p = sub.add_parser("balance", help="over- or under-sample to a label distribution")
    p.add_argument("input", help="the data file to balance")
    p.add_argument("-o", "--output", required=True, help="the balanced file (never the input)")
    p.add_argument("--label", required=True, metavar="COL", help="the label column")
    p.add_argument("--target", default="uniform", help="uniform, or LABEL=SHARE,...")
    p.add_argument("--method", choices=("over", "under"), default="over",
                   help="repeat rows of small classes (over) or drop rows of large ones (under)")
    p.add_argument("--size", type=positive_int, help="a total row count instead of --method")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="the same seed picks the same rows (default 0)")
    p.set_defaults(func=_cmd_balance)


def _cmd_balance(a: argparse.Namespace) -> int:
    from tunelab.gate.balance import balance_file

    m = balance_file(a.input, a.output, a.label, a.target, a.method, a.seed, a.size)
    for label, c in m["counts"].items():
        print(f"{label}: {c['before']} -> {c['after']}")
    print(f"{m['output']}: {m['size']} rows")
    return exits.OK


def _augment(sub) -> None:
    p = sub.add_parser("augment", help="paraphrase with a local model, word dropout and swap")
    p.add_argument("input", help="the data file to augment")
    p.add_argument("-o", "--output", required=True, help="the augmented file (never the input)")
    p.add_argument("--field", required=True, metavar="COL", help="the text column to change")
    p.add_argument("--methods", type=checked_by(parse_methods), default="dropout,swap",
                   help="some of paraphrase,dropout,swap")
    p.add_argument("--copies", type=positive_int, default=1, help="new rows per method and row")
    p.add_argument("-p", type=rate, default=0.1, help="word dropout / swap rate, in (0, 1)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="the same seed gives the same new rows (default 0)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="the paraphrasing model")
    p.add_argument("--max-new-tokens", type=positive_int, default=PARAPHRASE_MAX_NEW_TOKENS,
                   help=f"most tokens per paraphrase (default {PARAPHRASE_MAX_NEW_TOKENS})")
    p.add_argument("--temperature", type=non_negative_float, default=PARAPHRASE_TEMPERATURE,
                   help="paraphrase sampling temperature; 0 = greedy "
                        f"(default {PARAPHRASE_TEMPERATURE})")
    p.set_defaults(func=_cmd_augment)


def _cmd_augment(a: argparse.Namespace) -> int:
    from tunelab.recipes.data_ops import augment_with_model

    m = augment_with_model(a.input, a.output, a.field, a.methods, a.copies, a.p,
                           a.seed, a.model, a.max_new_tokens, a.temperature)
    for method, c in m["counts"].items():
        if isinstance(c, dict):
            print(f"{method}: {c['added']} added ({c['unchanged']} unchanged, "
                  f"{c['duplicate']} duplicate, {c['empty']} empty, not added)")
    print(f"{m['output']}: {m['rows_out']} rows ({m['rows_in']} before)")
    return exits.OK


def _print_findings(findings: list[Finding]) -> None:
    for f in findings[:_SHOWN]:
        print(f"  {f}")
    if len(findings) > _SHOWN:
        print(f"  ... and {len(findings) - _SHOWN} more (--report FILE lists them all)")


def _write_report(path: str | None, report: dict) -> None:
    if path:
        write_json_atomic(path, report, error=DataError)
        print(f"report: {path}")
