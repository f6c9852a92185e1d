"""`tunelab retrain`: continue a served run on new data, and promote it only if it is not worse.

The new run's config is the old run's (its resolved ``config.yaml``) with four changes:
the training data is the given file; the held-out set (the old run's validation file,
or ``--eval``) is its validation file; it starts from the old run's LoRA adapter
(``model.adapter``); and its length is ``--steps``/``--epochs``, else the old run's
``train.epochs`` with ``max_steps`` dropped (a step count sized for the old data would
overfit a small feedback file). Phases and a search section are dropped; anything else
can be overridden with ``KEY=VALUE`` as for `tunelab train`.

Then both runs are evaluated on the held-out set, one model in memory at a time, and
compared by paired bootstrap (``tunelab.eval.compare``). What is measured follows the
held-out set, whatever the method: a file of preference pairs is judged by how strongly
each run prefers the chosen answers (``tunelab.eval.preference``: the mean log-prob
margin, then the share of pairs whose chosen answer is the likelier); other rows by the
evaluation layer (the run's task when it has one, else the perplexity of the held-out
answers). A DPO retrain judged on supervised rows is checked for harm to those answers
only (a note says so); on held-out pairs it is judged on what it was trained to change.
A DPO run validates on the held-out set only when it is pairs. The new run is
**worse** when the whole confidence interval of its primary statistic's difference lies
on the worse side of 0; a worse run, or one that cannot be compared, is never promoted.
A run that is not worse may be promoted as a canary variant of an experiment in a serve
YAML (``tunelab.config.serve_edit``); the serve file is checked before training, so a
typo costs no training time.

A data file beside a feedback gate report (``gate.json``) that failed is refused.

This module prints nothing and sets no exit codes: ``tunelab.cli.retrain`` does.
"""

from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tunelab.config.evaluation import EvalSettings, with_task
from tunelab.config.loader import config_from_dict
from tunelab.config.schema import DEFAULT_RUNS_DIR, RunConfig
from tunelab.config.serve_edit import CanaryEdit, add_canary
from tunelab.data.example import Example
from tunelab.data.load import load_examples
from tunelab.data.pairs import not_pairs
from tunelab.errors import DataError, StoreError, TrainingError, UsageError
from tunelab.eval.callables import load_callables
from tunelab.eval.compare import compare_results
from tunelab.eval.during_training import eval_hook
from tunelab.eval.preference import reward_accuracy, score_pairs
from tunelab.eval.runner import fit_text_field, load_eval_data, task_runner
from tunelab.eval.tasks import TaskResult
from tunelab.files import write_json_atomic
from tunelab.models.runs import load_for_inference, run_settings, task_of_run
from tunelab.tracking.reporter import SILENT, Reporter
from tunelab.tracking.run_dir import SUMMARY, find_run
from tunelab.train.phased import run_training

Method = Literal["sft", "dpo"]
TRAIN_METHOD = {"sft": "lora", "dpo": "dpo"}  # --method -> train.method
GATE_REPORT = "gate.json"  # what `tunelab feedback export` writes beside its files
RESULT_FILE = "retrain.json"  # the comparison and the decision, in the new run's folder


@dataclass
class Promotion:
    """Where to promote a run that is not worse: a serve YAML, an experiment, a share."""

    config: Path
    experiment: str
    weight: float


@dataclass
class RetrainResult:
    """The new run, the comparison against the old one, and the decision."""

    old_run: Path
    new_run: Path
    heldout: str
    task: str
    primary: str
    lower_is_better: bool
    comparison: dict
    worse: bool
    reason: str  # one line with the numbers that decided
    promoted: CanaryEdit | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def difference(self) -> dict:
        """The paired-bootstrap record of the primary statistic (new minus old)."""
        return self.comparison["differences"][self.comparison["models"][1]][self.primary]

    def as_dict(self) -> dict:
        promoted = None
        if self.promoted is not None:
            p = self.promoted
            promoted = {"config": str(p.config), "experiment": p.experiment,
                        "variant": p.variant, "weights": p.weights,
                        "model_added": p.model_added,
                        "backup": None if p.backup is None else str(p.backup)}
        return {"old_run": str(self.old_run), "new_run": str(self.new_run),
                "heldout": self.heldout, "task": self.task, "primary": self.primary,
                "lower_is_better": self.lower_is_better, "worse": self.worse,
                "promotable": not self.worse, "reason": self.reason,
                "difference": self.difference, "comparison": self.comparison,
                "promoted": promoted, "notes": self.notes}


def _old_run(ref: str, runs_dir: str) -> Path:
    run = find_run(ref, runs_dir)
    if run is None:
        raise StoreError(f"no run {ref!r} (looked for a folder and under {runs_dir}/)",
                         hint="`tunelab runs list` shows the runs")
    if not (run / SUMMARY).is_file():
        raise StoreError(f"run {run} did not finish (no {SUMMARY}); it has no adapter to continue",
                         hint="retrain a finished run")
    if not (run / "adapter").is_dir():
        raise StoreError(f"run {run} has no LoRA adapter (adapter/); retrain continues an "
                         "adapter, and this run trained full or frozen weights",
                         hint="train a new run with `tunelab train` instead")
    return run


def _check_data(data: str) -> None:
    p = Path(data)
    if not p.is_file():
        raise DataError(f"the training data {data} is missing",
                        hint="export feedback with `tunelab feedback export --out DIR`, then "
                             "pass DIR/sft.jsonl (or DIR/pairs.jsonl with --method dpo)")
    report = p.parent / GATE_REPORT
    if not report.is_file():
        return
    try:
        files = json.loads(report.read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return  # not a feedback gate report: nothing to hold the data to
    for f in files if isinstance(files, list) else []:
        if isinstance(f, dict) and Path(str(f.get("path"))).name == p.name and not f.get("ok"):
            raise DataError(f"the data gate failed {data} ({f.get('errors')} error(s) in "
                            f"{report})", hint="fix or drop the feedback it names, then export "
                                               "again; nothing trains on data that failed the gate")


def _heldout(old_cfg: dict, eval_path: str | None, run: Path) -> str:
    if eval_path is not None:
        if not Path(eval_path).is_file():
            raise DataError(f"the held-out file {eval_path} is missing",
                            hint="give the file both runs are judged on with --eval")
        return str(Path(eval_path).resolve())
    sources = (old_cfg.get("data") or {}).get("validation") or []
    if not sources:
        raise UsageError(f"run {run.name} has no validation file to judge the new run on (it "
                         "held out a split of its training data)",
                         hint="pass the held-out file with --eval FILE")
    first = sources[0]
    return str(first["path"] if isinstance(first, dict) else first)


def heldout_pairs(old: Path, heldout: str, reporter: Reporter = SILENT) -> list[Example] | None:
    """The held-out pairs when the held-out file holds preference pairs; None for other rows.

    A run with a task is judged by its task (its held-out file is a table, never pairs).

    Raises:
        DataError: the file is unreadable or has bad rows (a file is read in the format of
            its first row, so pairs mixed with other rows are bad rows).
    """
    if task_of_run(old) is not None:
        return None
    examples = load_examples(heldout, reporter=reporter)  # one format per file
    return None if not_pairs(examples) else examples


def retrain_config(old: Path, data: str, heldout: str, method: Method, steps: int | None,
                   epochs: float | None, name: str, runs_dir: str,
                   overrides: list[str] | None = None, reporter: Reporter = SILENT,
                   validate_on_heldout: bool = True) -> RunConfig:
    """The new run's config: the old run's, continued from its adapter on ``data``.

    ``validate_on_heldout`` False (a DPO run whose held-out set is not pairs): the run
    has no validation set, as DPO validates on pairs only.

    Raises:
        ConfigError: the result is invalid (an override, or a method this tunelab lacks).
    """
    raw = run_settings(old)
    raw["model"] = {**raw.get("model", {}), "adapter": str((old / "adapter").resolve())}
    raw["data"] = {**raw.get("data", {}), "train": [{"path": str(Path(data).resolve())}],
                   "validation": [{"path": heldout}] if validate_on_heldout else [],
                   "validation_split": 0.0, "train_rows": None}
    train = {**raw.get("train", {}), "method": TRAIN_METHOD[method]}
    if steps is not None:
        train["max_steps"] = steps
    elif epochs is not None:
        train.update(epochs=epochs, max_steps=None)
    else:
        if train.get("max_steps") is not None:
            reporter.info(f"train.max_steps {train['max_steps']} was sized for the old data; "
                          f"training {train.get('epochs')} epoch(s) of the new data instead "
                          "(--steps or --epochs to choose)")
        train["max_steps"] = None
    raw["train"] = train
    if raw.get("phases"):
        reporter.info("the old run had phases; the retrain is one phase from its final adapter")
    raw.update(phases=[], search=None, output={"dir": runs_dir, "name": name})
    return config_from_dict(raw, overrides, source=f"{old}/config.yaml (retrained)")


def _settings(run: Path, heldout: str, reporter: Reporter) -> EvalSettings:
    task = task_of_run(run)
    if task is None:  # a chat run: how well it predicts the held-out answers
        return EvalSettings(task="perplexity")
    return fit_text_field(with_task(EvalSettings(), task), task, heldout, reporter)


def _evaluate_pairs(runs: list[Path], pairs: list[Example], s: EvalSettings, max_length: int,
                    runs_dir: str, reporter: Reporter) -> tuple[list[TaskResult], list[str]]:
    """Each run's preference result on the held-out pairs, and notes on what was scored."""
    results: list[TaskResult] = []
    kept: list[list[int]] = []
    for run in runs:
        reporter.info(f"evaluating {run.name} on {len(pairs)} held-out preference pairs")
        loaded = load_for_inference(str(run), runs_dir)
        result, idx = score_pairs(run.name, loaded.model, loaded.tokenizer, pairs,
                                  s.batch_size, loaded.chat_template, max_length)
        results.append(result)
        kept.append(idx)
        del loaded
        gc.collect()  # one model in memory at a time
    if any(k != kept[0] for k in kept):  # the same tokenizer keeps the same pairs
        raise TrainingError("the two runs scored different held-out pairs (their tokenizers "
                            "differ), so they cannot be compared pair by pair",
                            hint="judge them on a held-out file of rows with --eval")
    notes = []
    if len(kept[0]) < len(pairs):
        notes.append(f"{len(pairs) - len(kept[0])} of {len(pairs)} held-out pairs are longer "
                     f"than data.max_length {max_length} tokens and were not scored")
    acc = reward_accuracy(results[0], results[1])
    if acc is not None:
        notes.append(f"the new run prefers the chosen answer more than the old run does on "
                     f"{acc:.1%} of {len(kept[0])} held-out pairs (DPO reward accuracy, the old "
                     "run as reference)")
    return results, notes


def _evaluate(runs: list[Path], heldout: str, s: EvalSettings, runs_dir: str,
              reporter: Reporter) -> list[TaskResult]:
    data = load_eval_data(heldout, s, reporter)
    assert s.max_new_tokens is not None  # EvalSettings fills in the task's default
    results: list[TaskResult] = []
    for run in runs:
        reporter.info(f"evaluating {run.name} on {len(data.rows)} held-out rows ({s.task})")
        model = load_callables(str(run), runs_dir, s.max_new_tokens, s.batch_size, reporter)
        results.append(task_runner(s, data, model)(data.rows))
        del model
        gc.collect()  # one model in memory at a time
    return results


def judge(comparison: dict, primary: str, lower_is_better: bool) -> tuple[bool, str]:
    """Whether the second model of a comparison is worse, and the line that says why.

    Worse: the confidence interval of ``new - old`` lies wholly on the worse side of 0.
    Undefined numbers count as worse: a run that cannot be compared is not promoted.
    """
    new = comparison["models"][1]
    rec = comparison["differences"][new][primary]
    pct = f"{round(comparison['confidence'] * 100)}%"
    if rec["diff"] is None or rec["ci_low"] is None:
        return True, f"{primary} cannot be compared on these rows; not promotable"
    side = "higher" if lower_is_better else "lower"
    numbers = (f"{primary} {rec['a']:.4f} -> {rec['b']:.4f}, difference {rec['diff']:+.4f} "
               f"[{pct} CI {rec['ci_low']:+.4f}, {rec['ci_high']:+.4f}] ({side} is worse)")
    worse = rec["ci_low"] > 0 if lower_is_better else rec["ci_high"] < 0
    verdict = "worse: the whole interval is on the worse side" if worse else "not worse"
    return worse, f"{verdict}: {numbers}"


def run_retrain(ref: str, data: str, method: Method = "sft", steps: int | None = None,
                epochs: float | None = None, out_name: str | None = None,
                eval_path: str | None = None, runs_dir: str = DEFAULT_RUNS_DIR,
                promote: Promotion | None = None, overrides: list[str] | None = None,
                reporter: Reporter = SILENT) -> RetrainResult:
    """Retrain run ``ref`` on ``data``, judge it against ``ref``, and promote it if asked.

    Args:
        ref: the served run (a folder, or a name under ``runs_dir``).
        data: chat rows (``sft``) or preference pairs (``dpo``), e.g. an export's files.
        method: ``sft`` (supervised, LoRA) or ``dpo`` (preference pairs).
        steps, epochs: how long to train (see the module docstring for the default).
        out_name: the new run's name under ``runs_dir`` (default: ``<old>-retrain-<time>``).
        eval_path: the held-out file (default: the old run's validation file).
        runs_dir: where runs are looked up and the new run goes.
        promote: add the new run to an experiment when it is not worse.
        overrides: ``KEY=VALUE`` changes to the new run's config.
        reporter: progress lines and bars.

    Returns:
        The result; ``promoted`` is None when the run is worse or no promotion was asked.

    Raises:
        StoreError: ``ref`` is not a finished LoRA run, or the new run's folder exists.
        DataError: ``data`` or the held-out file is missing, or the gate failed ``data``.
        UsageError, ConfigError: bad options, a serve file without the experiment.
        TunelabError: whatever training or evaluation raises.
    """
    old = _old_run(ref, runs_dir)
    _check_data(data)
    old_cfg = run_settings(old)
    heldout = _heldout(old_cfg, eval_path, old)
    if method == "dpo" and task_of_run(old) is not None:
        raise UsageError(f"run {old.name} has a task ({task_of_run(old)}): it answers one label "
                         "per row, and DPO trains on chat pairs",
                         hint="retrain it with --method sft on corrected rows")
    pairs = heldout_pairs(old, heldout, reporter)  # before training: a bad file costs nothing
    notes = []
    if method == "dpo" and pairs is None:
        notes.append(f"the held-out set {heldout} is not preference pairs: the DPO run is judged "
                     "on its answers (did it harm them?), not on preferences; pass held-out "
                     "pairs with --eval to judge what it learned")
    name = out_name or f"{old.name}-retrain-{time.strftime('%Y%m%d-%H%M%S')}"
    if promote is not None:  # a wrong file or experiment fails now, not after training
        add_canary(promote.config, promote.experiment, name, str(Path(runs_dir, name).resolve()),
                   promote.weight, dry_run=True)
    cfg = retrain_config(old, data, heldout, method, steps, epochs, name, runs_dir, overrides,
                         reporter, validate_on_heldout=method != "dpo" or pairs is not None)
    reporter.info(f"retraining {old.name} from its adapter on {data} ({method}) -> {name}")
    new = run_training(cfg, reporter, task_hook=eval_hook)
    if not (new / SUMMARY).is_file():
        raise StoreError(f"the retrain {new} stopped before it finished; nothing was compared",
                         hint=f"continue it with `tunelab train {new}/config.yaml --resume {new}`")
    if pairs is not None:
        s = EvalSettings()  # the bootstrap's resamples, seed and confidence, and a batch size
        results, more = _evaluate_pairs([old, new], pairs, s, cfg.data.max_length, runs_dir,
                                        reporter)
        notes += more
    else:
        s = _settings(old, heldout, reporter)
        results = _evaluate([old, new], heldout, s, runs_dir, reporter)
    comparison = compare_results(results, s.bootstrap_samples, s.seed, s.confidence)
    primary = results[0].primary
    lower = primary in results[0].lower_is_better
    worse, reason = judge(comparison, primary, lower)
    result = RetrainResult(old, new, heldout, results[0].task, primary, lower, comparison,
                           worse, reason, notes=notes)
    if promote is not None and not worse:
        result.promoted = add_canary(promote.config, promote.experiment, new.name,
                                     str(new.resolve()), promote.weight)
    write_json_atomic(new / RESULT_FILE, result.as_dict())
    return result
