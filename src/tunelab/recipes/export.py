"""`tunelab export RUN --gguf OUT.gguf`: merge, write GGUF, prove it answers the same.

A run (its adapter merged into its base) or a store model is written as one GGUF file
(``tunelab.models.gguf_write``) with the run's chat template, stop tokens and task. Unless
``check`` is off, the written file is read back by transformers' GGUF reader, and by
llama.cpp when the ``llamacpp`` extra is installed, and each reader's greedy answers to
the check prompts are compared token for token with the merged model's
(``tunelab.eval.gguf_parity``). The file reaches ``out`` only when every reader passes;
until then it sits under a hidden name beside it, removed on failure. An Ollama
``Modelfile`` is written beside the file.

Check prompts come from ``prompts`` when given, else from the run's validation data
(its training data when it has none), rendered through the run's task and template as
training rendered them; a store model without prompts uses ``FALLBACK_PROMPTS``.

A store model without a chat template (a base model such as gemma3-270m) is prompted with
plain text: the file carries no template, the check prompts are plain texts tokenized as
the tokenizer does by default (its BOS included), and the Modelfile passes the prompt as
it is. A run always has a template (training needs one to render chats).
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config.schema import (
    DEFAULT_RUNS_DIR,
    GGUF_CHECK_NEW_TOKENS,
    GGUF_CHECK_PROMPTS,
    GGUF_TYPES,
)
from tunelab.config.task import TaskSettings
from tunelab.data.example import Message
from tunelab.data.load import load_examples
from tunelab.data.task import TaskPrompt, load_task_examples, task_label_set
from tunelab.data.template import (
    end_of_turn_ids,
    render_prompt_ids,
    resolve_chat_template,
    resolve_tool_format,
    template_fingerprint,
)
from tunelab.errors import ModelError, StoreError
from tunelab.eval.gguf_parity import HfGreedy, ParityReport, compare, reference_answers
from tunelab.files import write_text_atomic
from tunelab.models.gguf_write import check_supported, write_gguf
from tunelab.models.llamacpp import LLAMACPP_INSTALL, LlamaCppModel, llamacpp_available
from tunelab.models.modelfile import Modelfile, build_modelfile
from tunelab.models.runs import load_for_inference, run_settings
from tunelab.tracking.reporter import SILENT, Reporter
from tunelab.tracking.run_dir import find_run

FALLBACK_PROMPTS = (
    "What is the capital of France?", "Write one sentence about the sea.",
    "List three colours.", "What is 12 plus 30?", "Say hello in Spanish.",
    "Name a famous scientist and what they discovered.", "Give me a synonym for happy.",
    "How many days are in a leap year?", "Explain what a noun is in one sentence.",
    "Translate 'thank you' into French.", "What do bees make?",
    "Suggest a name for a small grey cat.", "Why is the sky blue? Answer briefly.",
    "Write a haiku about autumn.", "What is the opposite of cold?",
    "My parcel has not arrived. What should I do?",
)


class ParityError(ModelError):
    """The written GGUF does not answer like the model it came from."""


@dataclass
class ExportResult:
    out: Path
    modelfile: Path
    ftype: str
    bytes: int
    reports: list[ParityReport] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # readers not run, with why
    template_in_modelfile: bool = True

    def commands(self, name: str) -> list[str]:
        """What to run next with llama.cpp and Ollama."""
        return [f"llama-server -m {self.out} --jinja --port 8080",
                f"ollama create {name} -f {self.modelfile}",
                f"ollama run {name}"]


def export_gguf(ref: str, out: Path, ftype: str = "f32", runs_dir: str = DEFAULT_RUNS_DIR,
                check: bool = True, prompts: Path | None = None, n_prompts: int = GGUF_CHECK_PROMPTS,
                max_new_tokens: int = GGUF_CHECK_NEW_TOKENS, overwrite: bool = False,
                reporter: Reporter = SILENT) -> ExportResult:
    """Write ``ref`` (a run, or a store model) as the GGUF file ``out`` and check it.

    Raises:
        ModelError: an unknown ``ftype``.
        StoreError: ``out`` exists (without ``overwrite``), its folder is missing or cannot
            be written, or ``ref`` is not a finished run with weights.
        UnsupportedModelError: the architecture or tokenizer cannot be written.
        ParityError: a reader's answers fell below the threshold (nothing is left at ``out``).
    """
    out = Path(out)
    if ftype not in GGUF_TYPES:
        raise ModelError(f"unknown GGUF type {ftype!r}", hint=f"use one of {', '.join(GGUF_TYPES)}")
    if not out.parent.is_dir():
        raise StoreError(f"the folder {out.parent} does not exist",
                         hint="create it first, or write the file somewhere else")
    for f in (out, out.with_suffix(".Modelfile")):
        if f.exists() and not overwrite:
            raise StoreError(f"{f} exists already", hint="choose another file name, or --overwrite")
    reporter.info(f"loading {ref}")
    loaded = load_for_inference(ref, runs_dir, reporter=reporter)
    model = loaded.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()  # the adapter folded into the base weights
    model.eval()
    check_supported(model)
    tok = loaded.tokenizer
    plain = loaded.chat_template is None and not getattr(tok, "chat_template", None)
    template = None if plain else resolve_chat_template(tok, loaded.chat_template)
    if plain:
        reporter.info(f"{ref} has no chat template: writing it for plain-text prompts")
    stop = set(end_of_turn_ids(tok))
    eos = getattr(model.generation_config, "eos_token_id", None)
    stop |= {eos} if isinstance(eos, int) else set(eos or [])
    run_dir = find_run(ref, runs_dir)
    meta = {"source": str(run_dir or ref)}
    if template is not None:
        meta["chat_template_fingerprint"] = template_fingerprint(tok, loaded.chat_template)
        # How the run rendered tools: a server of the file renders them the same way.
        meta["tool_format"] = resolve_tool_format(tok, template, loaded.tool_format)
    if loaded.task is not None:
        meta["task"] = json.dumps(loaded.task.model_dump(mode="json"))
    pending = out.with_name(f".{out.stem}.unchecked-{uuid.uuid4().hex[:8]}.gguf")
    reporter.info(f"writing {ftype} GGUF")
    try:
        write_gguf(model, tok, pending, ftype=ftype, chat_template=template, name=loaded.label,
                   stop_ids=stop, metadata=meta)
        result = ExportResult(out, out.with_suffix(".Modelfile"), ftype, pending.stat().st_size)
        if check:
            ids = _check_prompts(run_dir, prompts, n_prompts, loaded.task, tok,
                                 template, reporter)
            _check(result, model, tok, pending, ids, max_new_tokens, frozenset(stop), reporter)
        mf = _modelfile(out, tok, template, stop, model, loaded.task)
        result.template_in_modelfile = mf.has_template
        os.replace(pending, out)  # the GGUF first: a Modelfile must never name a missing file
        write_text_atomic(result.modelfile, mf.text)
    except OSError as e:
        raise StoreError(f"{out}: cannot be written ({e.strerror or e})",
                         hint=f"check that you may write to {out.parent} and that the disk has room") from e
    finally:
        pending.unlink(missing_ok=True)
    return result


def _modelfile(out: Path, tok: Any, template: str | None, stop: set[int], model: Any,
               task: TaskSettings | None) -> Modelfile:
    def render(chat: list[dict]) -> str:
        return tok.apply_chat_template(chat, chat_template=template, tokenize=False,
                                       add_generation_prompt=True)

    try:
        return build_modelfile(out.name, None if template is None else render,
                               sorted({tok.convert_ids_to_tokens(i) for i in stop}),
                               int(model.config.max_position_embeddings), _task_system(task))
    except Exception as e:  # noqa: BLE001 - Jinja raises its own errors for a probe chat
        raise ModelError(f"the run's chat template fails on a probe chat for the Modelfile: {e}",
                         hint="fix the template (data.chat_template), or export a Hugging Face "
                              "folder with --merge") from e


def _task_system(task: TaskSettings | None) -> str | None:
    if task is None:
        return None
    return TaskPrompt.of(task, task_label_set(task)).system


def _check(result: ExportResult, model: Any, tok: Any, path: Path, prompts: list[list[int]],
           max_new_tokens: int, stop: frozenset[int], reporter: Reporter) -> None:
    reporter.info(f"checking {len(prompts)} greedy answers against the merged model")
    ref = reference_answers(HfGreedy(model), prompts, max_new_tokens, stop)
    readers: list[tuple[str, Any]] = [("transformers", HfGreedy(_read_back(path)))]
    if llamacpp_available():
        # A context just large enough (the file's own, 32,768 for Gemma 3, costs memory and
        # load time for nothing here), in f32: this checks the file, and llama.cpp's default
        # f16 cache alone flipped 1 of 16 SmolLM2 answers of an f32 file.
        llama = LlamaCppModel(path, n_ctx=max(map(len, prompts)) + max_new_tokens + 1,
                              f32_cache=True)
        _check_tokens(llama, tok, prompts)
        readers.append(("llama.cpp", llama))
    else:
        result.skipped.append(f"llama.cpp: not installed ({LLAMACPP_INSTALL})")
    for name, reader in readers:
        report = compare(ref, reader, name, result.ftype)
        result.reports.append(report)
        reporter.info(report.summary())
    failed = [r for r in result.reports if not r.passed]
    if failed:
        raise ParityError(
            "the GGUF does not answer like the model it came from: "
            + "; ".join(r.summary() for r in failed) + "; the file was not kept",
            hint=("a rounded type moves near-ties: try --type f32; or " if result.ftype != "f32"
                  else "") + "--no-check writes it anyway, to compare yourself")


def _check_tokens(llama: Any, tok: Any, prompts: list[list[int]]) -> None:
    """llama.cpp must split the prompts' text into the tokens the model was trained on:
    a client of llama-server or Ollama sends text, not ids."""
    texts = [tok.decode(p, skip_special_tokens=False) for p in prompts]
    differ = [t for t in texts if llama.tokenize(t) != tok(t, add_special_tokens=False)["input_ids"]]
    if differ:
        raise ParityError(
            f"llama.cpp splits {len(differ)} of {len(texts)} check prompts into other tokens "
            f"than the run's tokenizer (the first: {differ[0][:80]!r}); the file was not kept",
            hint="the tokenizer's pre-tokenizer is not the one written; export a Hugging Face "
                 "folder with --merge and convert it with llama.cpp's convert_hf_to_gguf.py")


def _read_back(path: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                     dtype=torch.float32, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ParityError(f"transformers cannot read the written GGUF back: {e}",
                          hint="this is a bug in the export; please report it") from e
    return model.eval()


def _check_prompts(run_dir: Path | None, prompts: Path | None, n: int,
                   task: TaskSettings | None, tok: Any, template: str | None,
                   reporter: Reporter) -> list[list[int]]:
    """Up to ``n`` distinct prompts, as token ids, rendered as training rendered them
    (``template`` None: plain text, each chat's turns before its answer joined by lines)."""
    chats: list[list[Message]] = []
    files = [(prompts, None)] if prompts is not None else _run_files(run_dir)
    for f, text_field in files:
        examples = (load_task_examples(f, task, task_label_set(task), reporter, text_field)
                    if task is not None else load_examples(f, reporter=reporter))
        for ex in examples:
            msgs = list(ex.messages)
            while msgs and msgs[-1].role == "assistant":
                msgs.pop()
            if msgs:
                chats.append(msgs)
        if len(chats) >= n:
            break
    if not chats and run_dir is not None:
        reporter.warning(f"{run_dir}: its data files are gone or hold no chat prompt; the "
                         "check uses built-in questions (give --prompts FILE for the run's own)")
    if not chats:
        if prompts is not None:
            raise ModelError(f"{prompts} holds no chat prompt to check with",
                             hint="give a file of chats or instruction rows")
        chats = [[Message("user", p)] for p in FALLBACK_PROMPTS]
    seen: set[tuple[int, ...]] = set()
    ids: list[list[int]] = []
    for chat in chats:
        p = (render_prompt_ids(tok, chat, template) if template is not None
             else list(tok("\n".join(m.content for m in chat))["input_ids"]))
        if tuple(p) not in seen:
            seen.add(tuple(p))
            ids.append(p)
        if len(ids) == n:
            break
    return ids


def _run_files(run_dir: Path | None) -> list[tuple[Path, str | None]]:
    """The run's validation files, else its training files (none for a store model), each
    with the text column its source names (None: the task's)."""
    if run_dir is None:
        return []
    data = run_settings(run_dir).get("data", {})
    for key in ("validation", "train"):
        sources = [s if isinstance(s, dict) else {"path": s} for s in data.get(key) or []]
        found = [(Path(s["path"]), s.get("text_field")) for s in sources if Path(s["path"]).is_file()]
        if found:
            return found
    return []
