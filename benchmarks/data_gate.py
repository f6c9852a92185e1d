"""Throughput of the data gate on SST-2's 67,349-row train file: check, dedup, split.

    python benchmarks/data_gate.py                      # ../shared/data/sst2/train.tsv
    python benchmarks/data_gate.py --file other.jsonl --model none --json

Stages, each timed on its own, in rows per second:

* check: ``check_data`` as `tunelab data check --no-near-dups` runs it: read, parse,
  validate every row, token lengths with the model's chat template, exact duplicates,
  conflicting labels, personal data. Target: 10,000 rows/s.
* near-dup: ``find_near_duplicates`` over the texts the check compares (MinHash LSH,
  then exact Jaccard of each candidate pair). Target: 5,000 rows/s.
* check + near-dup: the whole `tunelab data check` (both of the above in one call).
* split: ``split_rows`` 80/10/10, stratified by label, near-duplicate clusters kept in
  one part.

Wall-clock rows/s are the figures; CPU seconds (all threads of this process) and the
load average are printed beside them, because on a shared machine the wall clock
measures the neighbours too. Peak memory is the process's maximum resident set size (``ru_maxrss``) at the end,
tokenizer included. Target: under 2 GB. The tokenizer is loaded before timing starts.
Run it on an otherwise idle machine (or under ``nice``, knowing the figures drop).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

from _requires import CORE, require

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FILE = REPO.parent / "shared" / "data" / "sst2" / "train.tsv"
TARGETS = {"check": 10_000, "near_dup": 5_000}  # rows/s
MAX_PEAK_MB = 2048


CPU: dict[str, float] = {}  # stage -> CPU seconds of this process (all threads)


def _timed(fn, stage: str):
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    CPU[stage] = time.process_time() - cpu
    return out, time.perf_counter() - start


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--file", default=str(DEFAULT_FILE), help="the data file (default: SST-2 train)")
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="tokenizer and chat template for token lengths; 'none' to skip")
    p.add_argument("--threshold", type=float, default=None, help="near-duplicate Jaccard threshold")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    a = p.parse_args(argv)
    require(["tunelab"], CORE)  # no extra: the gate runs on the core dependencies

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tunelab.gate.check import _compare_text, check_data
    from tunelab.gate.dedup import DEFAULT_THRESHOLD, find_near_duplicates
    from tunelab.recipes.data_gate import gate_tokenizer

    path = Path(a.file)
    if not path.is_file():
        print(f"{path} is absent: ../shared/data is only beside the project checkout",
              file=sys.stderr)
        return 2
    threshold = a.threshold or DEFAULT_THRESHOLD
    tokenizer, model, notes = gate_tokenizer(a.model)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)

    load_before = os.getloadavg()[0]
    result, t_check = _timed(lambda: check_data(path, tokenizer=tokenizer, near_duplicates=False),
                             "check")
    rows = result.rows_read
    texts = [_compare_text(e) for e in result.examples]
    clusters, t_near = _timed(lambda: find_near_duplicates(texts, threshold), "near_dup")
    full, t_full = _timed(lambda: check_data(path, tokenizer=tokenizer, threshold=threshold),
                          "check_with_near_dup")
    figures = {
        "file": str(path), "rows": rows, "model": model, "threshold": threshold,
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "check_rows_per_s": round(rows / t_check), "check_s": round(t_check, 2),
        "near_dup_rows_per_s": round(len(texts) / t_near), "near_dup_s": round(t_near, 2),
        "near_dup_clusters": len(clusters),
        "near_dup_rows": sum(len(c) for c in clusters),
        "check_with_near_dup_rows_per_s": round(rows / t_full), "check_with_near_dup_s": round(t_full, 2),
        "findings": full.counts(),
    }
    try:
        from tunelab.gate.split import split_rows
    except ImportError:
        figures["split"] = "tunelab.gate.split.split_rows is not available"
    else:
        labels = [str(e.meta.get("label", "")) for e in result.examples]
        parts, t_split = _timed(lambda: split_rows(len(texts), [0.8, 0.1, 0.1], 0,
                                                   strata=labels, together=clusters), "split")
        figures["split_rows_per_s"] = round(len(texts) / t_split)
        figures["split_s"] = round(t_split, 3)
        figures["split_sizes"] = [parts.count(k) for k in range(3)]
    figures["peak_mb"] = round(_peak_mb())
    figures["cpu_s"] = {k: round(v, 2) for k, v in CPU.items()}
    figures["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]

    missed = [k for k, target in TARGETS.items() if figures[f"{k}_rows_per_s"] < target]
    if figures["peak_mb"] >= MAX_PEAK_MB:
        missed.append("peak_mb")
    figures["targets_missed"] = missed
    if a.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{path.name}: {rows:,} rows, model {model or 'none'}, {os.cpu_count()} CPUs, "
              f"load average {figures['load_average'][0]} -> {figures['load_average'][1]}")
        print(f"  check (tokens, exact dups, PII)  {figures['check_rows_per_s']:>9,} rows/s  "
              f"{t_check:6.2f} s   target >= {TARGETS['check']:,}")
        print(f"  near-duplicates (t={threshold})      {figures['near_dup_rows_per_s']:>9,} rows/s  "
              f"{t_near:6.2f} s   target >= {TARGETS['near_dup']:,}  "
              f"({len(clusters):,} clusters, {figures['near_dup_rows']:,} rows)")
        print(f"  check + near-duplicates          {figures['check_with_near_dup_rows_per_s']:>9,} rows/s  "
              f"{t_full:6.2f} s")
        if "split_rows_per_s" in figures:
            print(f"  split 80/10/10 stratified        {figures['split_rows_per_s']:>9,} rows/s  "
                  f"{figures['split_s']:6.3f} s   parts {figures['split_sizes']}")
        else:
            print(f"  split: {figures['split']}")
        print(f"  peak memory                      {figures['peak_mb']:>9,} MB            "
              f"target < {MAX_PEAK_MB:,}")
        print("  CPU seconds: " + ", ".join(f"{k} {v}" for k, v in figures["cpu_s"].items()))
        print("  targets: " + ("all met" if not missed else "missed: " + ", ".join(missed)))
    return 1 if a.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
