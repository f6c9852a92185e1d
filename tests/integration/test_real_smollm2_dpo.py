"""DPO on real SmolLM2-135M-Instruct with a few hundred HH-RLHF pairs: the held-out margin rises.

The pairs come from the whole harmless-base file, read in place. ``data.max_length`` with
``overlength: drop`` picks them by token length: after the seeded validation split, only
the pairs whose longer side fits are kept, the shortest of each split (about 16% of the
2,312, so the choice is deterministic and needs no copy of the file). The held-out share
is large (40%): a short run on a few hundred pairs moves the held-out margins by a mean
of a few nats with a spread several times that (measured), so the held-out set is made large. One epoch of LoRA
DPO over them, then every kept held-out pair is scored with ``preference_margin`` against
the reference log-probs the run stored: the mean margin must be above 0 and most pairs
must prefer the chosen answer more than the reference does (the bootstrap interval of
the mean is printed).
"""

import json
import math
import time

import numpy as np
import pytest

from shared_data import shared_file
from tunelab.cli.main import main
from tunelab.config import load_config
from tunelab.config.loader import dump_config
from tunelab.data.pairs import tokenize_pair
from tunelab.data.template import resolve_chat_template
from tunelab.eval.compare import paired_bootstrap
from tunelab.eval.tasks import mean_stat
from tunelab.models.runs import load_for_inference
from tunelab.train.preference import preference_margin
from tunelab.train.run import load_run_examples

pytestmark = [pytest.mark.real_model, pytest.mark.slow]
EXAMPLE = __import__("pathlib").Path(__file__).resolve().parents[2] / "examples" / "dpo_hh_rlhf.yaml"
MAX_LENGTH = 90  # tokens of a pair's longer side: the shortest ~16% of the 2,312 pairs fit
BETA = 0.1


def test_real_model_dpo_raises_the_held_out_margin(tmp_path, default_model):
    started = time.perf_counter()
    src = shared_file("hh_rlhf_harmless_base/test.jsonl")  # read in place, never copied
    cfg = load_config(EXAMPLE, [
        f"data.train={src}", "data.train_rows=null", "data.validation_split=0.4",
        f"data.max_length={MAX_LENGTH}", "data.overlength=drop",
        "train.max_steps=null", "train.epochs=1", "train.eval_every=0",
        "train.eval_at_start=false",  # the start is the reference: margin 0 by definition
        "train.warmup_steps=2", "train.batch_size=8", "train.learning_rate=1e-3",
        f"train.dpo.beta={BETA}", f"output.dir={tmp_path / 'runs'}", "output.name=dpo"])
    path = tmp_path / "run.yaml"
    path.write_text(dump_config(cfg))
    assert main(["train", str(path), "--no-progress"]) == 0
    run = tmp_path / "runs" / "dpo"
    summary = json.loads((run / "summary.json").read_text())
    assert 200 <= summary["train_rows"] <= 300 and summary["validation_rows"] >= 50
    assert summary["first_step_loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference

    m, ci = held_out_margins(run, summary, MAX_LENGTH, BETA)
    margins = np.array(m.margins)
    final = summary["preference"]["final_validation"]
    q1, med, q3 = np.percentile(margins, [25, 50, 75])
    print(f"\nreal SmolLM2 DPO, {summary['train_rows']} HH-RLHF pairs, {summary['steps']} steps "
          f"(beta {BETA}): held-out ({m.pairs} pairs) mean margin {m.margin:+.2f} nats "
          f"[95% CI {ci['ci_low']:+.2f}, {ci['ci_high']:+.2f}], sd {margins.std():.2f}, "
          f"quartiles {q1:+.2f} / {med:+.2f} / {q3:+.2f}, accuracy {m.accuracy:.3f}; "
          f"reward margin {final['reward_margin']:+.3f}, loss {summary['final_val_loss']:.4f} "
          f"(log 2 = 0.6931); run {summary['wall_seconds']}s, test "
          f"{time.perf_counter() - started:.0f}s")
    # What the issue asks: the preferred answers' margin rises on held-out pairs. The mean
    # is checked, with most pairs moving the right way; the interval is printed, not
    # asserted: a short run moves the margins by a mean of a few nats with a spread several
    # times that (sd ~7), so on ~140 pairs its lower end sits near 0 (measured: [-0.34,
    # +3.33] on 57 pairs). The DPO loss is printed too: a few large negative margins can
    # keep the mean loss above log 2 while the mean margin rises.
    assert m.margin > 0 and final["reward_margin"] > 0 and m.accuracy > 0.5


def held_out_margins(run, summary, max_length, beta):
    """Every kept held-out pair's margin (``preference_margin`` against the stored reference),
    checked against the run's own last validation, and the bootstrap interval of the mean."""
    loaded = load_for_inference(str(run))
    _, _, val = load_run_examples(load_config(run / "config.yaml"))  # same split, same order
    template = resolve_chat_template(loaded.tokenizer, loaded.chat_template)
    held = [e for e in val if tokenize_pair(loaded.tokenizer, e, template).longest <= max_length]
    reference = json.loads((run / "reference_logps.json").read_text())["values"]["validation"]
    assert len(held) == len(reference) == summary["validation_rows"]
    m = preference_margin(loaded.model, loaded.tokenizer, held, batch_size=8,
                          chat_template=loaded.chat_template, reference=reference,
                          max_length=max_length)
    assert m.pairs == len(held) and m.dropped == 0
    final = summary["preference"]["final_validation"]  # the run's own last validation agrees
    assert m.margin * beta == pytest.approx(final["reward_margin"], abs=1e-3)
    # the reference's margin is 0 on every pair, so the paired bootstrap of (trained -
    # reference) over the held-out pairs is the interval of the mean margin
    margins = np.array(m.margins)
    ci = paired_bootstrap(mean_stat(np.zeros_like(margins)), mean_stat(margins), len(margins),
                          samples=2000, seed=0)
    return m, ci
