"""False alarms and detections of the drift check, on real data with a real tokenizer.

    python benchmarks/drift_alarms.py                 # SST-2 against itself and GSM8K
                                                      # (../shared/data, or $TUNELAB_SHARED/data)
    python benchmarks/drift_alarms.py --trials 100 --json

The reference is a seeded 5,000 of SST-2's train sentences (as `tunelab monitor` samples
a run's training rows) with their label words, tokenized by the default model's
tokenizer. For each production size (50, 200, 1,000, 2,000 prompts):

* same population: ``--trials`` fresh samples of the same file, answered with their own
  labels. Reported per feature: how often the check alarmed (PSI > 0.2 and p < 0.01,
  the target is 0), how often p < 0.01 alone (about 1% when the test is honest) and
  the largest PSI.
* another data set: one sample of GSM8K questions, answered with a label at random
  (only the prompts moved): PSI, p and the verdict per feature.

Seconds per check (tokenizing the prompts and every test) are printed beside them.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
from pathlib import Path

from _requires import CORE, require

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TUNELAB_SHARED", REPO.parent / "shared")) / "data"
SIZES = (50, 200, 1000, 2000)
WORDS = ("negative", "positive")


def main() -> int:
    require(["tunelab", "numpy", "scipy"], CORE)
    from tunelab.config.schema import DEFAULT_MODEL
    from tunelab.config.serve import MonitorSettings
    from tunelab.eval.drift import Reference, compare, tokenize
    from tunelab.eval.drift_reference import REFERENCE_ROWS
    from tunelab.models.loading import load_tokenizer
    from tunelab.models.resolve import resolve_model

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=40, help="same-population samples per size")
    p.add_argument("--model", default=DEFAULT_MODEL, help="whose tokenizer (a store name or folder)")
    p.add_argument("--json", action="store_true", help="one JSON object, last")
    a = p.parse_args()
    sst2, gsm8k = DATA / "sst2" / "train.tsv", DATA / "gsm8k" / "gsm_8k_train.json"
    if not sst2.is_file() or not gsm8k.is_file():
        sys.exit(f"error: {DATA} lacks sst2/train.tsv or gsm8k/gsm_8k_train.json")
    tok = load_tokenizer(resolve_model(a.model))
    with open(sst2, encoding="utf-8") as f:
        rows = [(r["sentence"], WORDS[int(r["label"])]) for r in csv.DictReader(f, delimiter="\t")]
    questions = [r["instruction"] for r in json.loads(gsm8k.read_text(encoding="utf-8"))]
    rng = random.Random(0)
    train = rng.sample(rows, REFERENCE_ROWS)
    ref = Reference(tokenize(tok, [t for t, _ in train]), [w for _, w in train], list(WORDS))
    settings = MonitorSettings()
    out: dict = {"model": a.model, "trials": a.trials, "reference_rows": REFERENCE_ROWS,
                 "psi_threshold": settings.psi_threshold, "p_value": settings.p_value, "sizes": {}}
    for n in SIZES:
        stats: dict[str, dict] = {}
        started = time.perf_counter()
        for _ in range(a.trials):
            sample = rng.sample(rows, n)
            report = compare(ref, tokenize(tok, [t for t, _ in sample]), settings,
                             [w for _, w in sample])
            for f in report.features:
                s = stats.setdefault(f.feature, {"alarms": 0, "p_below": 0, "max_psi": 0.0})
                s["alarms"] += f.drifted
                s["p_below"] += f.p_value < settings.p_value
                s["max_psi"] = max(s["max_psi"], round(f.psi, 4))
        per_check = (time.perf_counter() - started) / a.trials
        shifted = compare(ref, tokenize(tok, rng.sample(questions, n)), settings,
                          [rng.choice(WORDS) for _ in range(n)])
        out["sizes"][n] = {"same": stats, "seconds_per_check": round(per_check, 3),
                           "gsm8k": {f.feature: {"psi": round(f.psi, 3), "p": f.p_value,
                                                 "drifted": f.drifted}
                                     for f in shifted.features}}
        if not a.json:
            same = ", ".join(f"{k} {v['alarms']}/{a.trials} alarms ({v['p_below']} p<0.01, "
                             f"max PSI {v['max_psi']:.3f})" for k, v in stats.items())
            moved = ", ".join(f"{f.feature} PSI {f.psi:.3f} p {f.p_value:.1g} "
                              f"{'DRIFT' if f.drifted else 'ok'}" for f in shifted.features)
            print(f"{n:>5} prompts ({per_check:.2f} s/check)\n  SST-2: {same}\n  GSM8K: {moved}")
    if a.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
