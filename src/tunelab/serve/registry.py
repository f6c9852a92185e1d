"""The models a server answers for: loading, grouping adapters on a shared base, rendering.

``load_registry`` turns the references given to ``tunelab serve`` (store names, model
folders, run folders or run names) into ``ServedModel`` entries, one per name a request
may put in ``model``. Runs whose LoRA adapters sit on the same base model share one copy
of that base and one ``ServingEngine``: each adapter is loaded beside the others
(PEFT multi-adapter), and the engine applies each request's own adapter in a mixed batch.
The base model itself, when it is also served, answers through the same engine with no
adapter. Full-weight runs and other models get an engine each.

A request's messages are rendered exactly as training rendered a row: the run's task
prompt (``tunelab.data.task.task_chat``) and the run's chat template
(``tunelab.data.template``), with the request's tools rendered in the run's stored tool
format (``tunelab.models.runs.run_tool_format``: the template's own ``tools=`` or the
fallback layout; probed from the template for models and runs that stored none). A run records the fingerprint of its template at training
time; a run that this server would render differently is refused.

A reference that is a ``.gguf`` file is served by llama.cpp (the ``llamacpp`` extra;
``tunelab.serve.llamacpp_engine``), with an engine of its own. Its prompts are rendered
the same way: the tokenizer is the file's own (loaded by transformers), the chat template
is the file's ``tokenizer.chat_template``, the stop ids are that tokenizer's end-of-turn
ids and the file's EOS, and a file exported from a run with a task
(``tunelab.task``) gets the run's task prompt.

This module knows nothing of HTTP; ``tunelab.serve.app`` sits above it.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config.task import TaskSettings
from tunelab.data.example import Message
from tunelab.data.task import TaskPrompt, task_chat, task_label_set
from tunelab.data.template import (
    end_of_turn_ids,
    render_prompt_ids,
    resolve_chat_template,
    resolve_tool_format,
    template_fingerprint,
)
from tunelab.db import NAME_LENGTH
from tunelab.errors import ModelError, StoreError, UsageError
from tunelab.models.gguf_read import is_gguf, load_gguf_tokenizer, read_gguf_metadata
from tunelab.models.llamacpp import LlamaCppMissingError, LlamaCppModel, llamacpp_available
from tunelab.models.loading import load_causal_lm, load_tokenizer
from tunelab.models.resolve import resolve_model
from tunelab.models.runs import run_base_path, run_settings, run_tool_format, task_of_run
from tunelab.serve.batching import (
    BASE_ADAPTER,
    BatchScheduler,
    EngineSettings,
    ServingEngine,
    run_engines,
)
from tunelab.serve.llamacpp_engine import LlamaCppScheduler
from tunelab.tracking.reporter import SILENT, Reporter
from tunelab.tracking.run_dir import find_run

DEFAULT_CONTEXT = 2048  # tokens, for a model config that states no maximum position
# The llama.cpp model object's own context is not used by the server (it decodes on a
# multi-sequence context of its own), so it is kept at llama.cpp's smallest useful size.
GGUF_OWN_CONTEXT = 256  # tokens


@dataclass
class ServedModel:
    """One name a request can ask for, and how to render and answer for it."""

    name: str
    engine: ServingEngine
    adapter: str | None  # PEFT adapter name inside ``engine``; None: the model's own weights
    tokenizer: Any
    chat_template: str
    task: TaskSettings | None
    context_length: int
    created: int = field(default_factory=lambda: int(time.time()))
    source: str = ""  # the folder it was loaded from
    tool_format: str | None = None  # template | fallback, as the run trained; None: probe

    def render(self, messages: Sequence[Message | dict], tools: Sequence[dict] = ()) -> list[int]:
        """Prompt ids for a chat: the task's prompt (if any) and the chat template, with
        ``tools`` (function specs) in the run's tool format, as in training.

        Raises:
            DataError: the template cannot render these turns.
        """
        chat = [m if isinstance(m, Message) else Message(m["role"], m["content"])
                for m in messages]
        if self.task is not None:
            chat = task_chat(TaskPrompt.of(self.task, task_label_set(self.task)), chat)
        return render_prompt_ids(self.tokenizer, chat, self.chat_template, tools,
                                 self.tool_format)

    def encode(self, text: str) -> list[int]:
        """Ids of raw text (``/v1/completions``): no template, no special tokens added."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


@dataclass
class ModelRegistry:
    """The served models by name, and the engines behind them (sharing one wake-up)."""

    models: dict[str, ServedModel]
    engines: list[ServingEngine]
    _thread: threading.Thread | None = None

    def get(self, name: str) -> ServedModel:
        """The model named ``name``; KeyError if none."""
        return self.models[name]

    def run(self, until: Callable[[], bool]) -> None:
        """Step the engines on the calling thread (a server's main thread: see
        ``ServingEngine``) until ``until()`` is true or they are closed."""
        run_engines(self.engines, until)

    def start(self) -> None:
        """Step the engines on a background thread instead (tests, library callers)."""
        if self._thread is None and self.engines:
            self._thread = threading.Thread(target=run_engines, args=(self.engines,),
                                            name="tunelab-engines", daemon=True)
            self._thread.start()

    def drain(self, timeout: float) -> bool:
        """Stop taking requests; True when every engine finished its work within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        return all([e.drain(max(0.0, deadline - time.monotonic())) for e in self.engines])

    def close(self) -> None:
        for e in self.engines:
            e.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)


@dataclass
class _Entry:
    """A resolved reference before loading."""

    name: str
    ref: str
    run_dir: Path | None
    weights: Path  # the folder to load weights from (the base, for an adapter run)
    adapter_dir: Path | None
    tokenizer_dir: Path
    template: str | None  # as configured (None: the tokenizer's own)
    task: TaskSettings | None
    trust_remote_code: bool = False
    tool_format: str | None = None  # as the run stored it (None: probe the template)


def gguf_path(ref: str) -> Path | None:
    """The file, when ``ref`` names a GGUF to serve with llama.cpp (a ``.gguf`` name, or a
    file that starts with the GGUF magic); None otherwise.

    Raises:
        ModelError: a ``.gguf`` name that is not a GGUF file, or llama-cpp-python is missing.
    """
    path = Path(ref).expanduser()
    named = path.suffix.lower() == ".gguf"
    if not named and not (path.is_file() and is_gguf(path)):
        return None
    if not path.is_file():
        raise ModelError(f"{path} does not exist", hint="give the path of a .gguf file")
    if not is_gguf(path):
        raise ModelError(f"{path} is not a GGUF file (it does not start with 'GGUF')",
                         hint="export one with `tunelab export RUN --gguf OUT.gguf`")
    if not llamacpp_available():
        raise LlamaCppMissingError(f"serving {path.name}")
    return path


def _resolve(name: str, ref: str, runs_dir: str, reporter: Reporter) -> _Entry:
    gguf = gguf_path(ref)
    if gguf is not None:  # served by llama.cpp; only the name and the file are used
        return _Entry(name, ref, None, gguf, None, gguf, None, None)
    run_dir = find_run(ref, runs_dir)
    if run_dir is None:
        path = resolve_model(ref, reporter=reporter)
        return _Entry(name, ref, None, path, None, path, None, None)
    if not (run_dir / "summary.json").is_file():
        raise StoreError(f"run {run_dir} did not finish (no summary.json)",
                         hint="serve a finished run; an unfinished run has no final weights")
    cfg = run_settings(run_dir)
    trust = bool(cfg["model"].get("trust_remote_code", False))
    template, task = cfg["data"].get("chat_template"), task_of_run(run_dir)
    tools = run_tool_format(run_dir)
    if (run_dir / "model").is_dir():
        return _Entry(name, ref, run_dir, run_dir / "model", None, run_dir / "tokenizer",
                      template, task, trust, tools)
    if not (run_dir / "adapter").is_dir():
        raise StoreError(f"run {run_dir} has neither adapter/ nor model/", hint="train it again")
    return _Entry(name, ref, run_dir, run_base_path(run_dir, reporter), run_dir / "adapter",
                  run_dir / "tokenizer", template, task, trust, tools)


def _check_fingerprint(entry: _Entry, tokenizer: Any, reporter: Reporter) -> str:
    """The template to serve ``entry`` with; refuses one that differs from training's."""
    template = resolve_chat_template(tokenizer, entry.template)
    if entry.run_dir is None:
        return template
    inputs = entry.run_dir / "inputs.json"
    recorded = None
    if inputs.is_file():
        recorded = json.loads(inputs.read_text(encoding="utf-8")).get("chat_template_fingerprint")
    if recorded is None:
        reporter.warning(f"{entry.name}: the run records no chat-template fingerprint (trained "
                         "by an older tunelab); it is served with its configured template unchecked")
        return template
    now = template_fingerprint(tokenizer, entry.template)
    if now != recorded:
        raise StoreError(
            f"{entry.name}: the chat template this server would use (fingerprint {now}) is not "
            f"the one the run was trained with ({recorded}); its answers would drift",
            hint=f"restore the run's tokenizer files and data.chat_template in "
                 f"{entry.run_dir / 'config.yaml'}, or train again with the new template")
    return template


def _adapter_name(name: str, taken: set[str]) -> str:
    base = re.sub(r"\W", "_", name) or "adapter"  # PEFT keys modules by the name: no dots
    out, n = base, 1
    while out in taken or out == BASE_ADAPTER:
        n += 1
        out = f"{base}_{n}"
    return out


def _load_gguf(entry: _Entry, settings: EngineSettings, wake: threading.Condition,
               reporter: Reporter) -> ServedModel:
    """A GGUF file served by llama.cpp, rendering prompts as its source model did."""
    meta = read_gguf_metadata(entry.weights)
    tokenizer = load_gguf_tokenizer(entry.weights)
    template = resolve_chat_template(tokenizer, meta.chat_template)
    if meta.fingerprint is not None and template_fingerprint(tokenizer, template) != meta.fingerprint:
        raise StoreError(
            f"{entry.name}: the file's tokenizer and chat template render chats differently "
            f"(fingerprint {template_fingerprint(tokenizer, template)}) from the run it was "
            f"exported from ({meta.fingerprint}); its answers would drift",
            hint="export the run again with this version of tunelab, or serve the run itself")
    model = LlamaCppModel(entry.weights, n_ctx=GGUF_OWN_CONTEXT)
    stop = set(end_of_turn_ids(tokenizer)) | ({meta.eos_id} if meta.eos_id is not None else set())
    context = model.context_length or meta.context_length or DEFAULT_CONTEXT
    reporter.info(f"{entry.name}: llama.cpp, context {context} tokens"
                  + (f", exported from {meta.source}" if meta.source else "")
                  + (f", task {meta.task.type}" if meta.task is not None else ""))
    engine = ServingEngine(LlamaCppScheduler(model, frozenset(stop), context, settings), wake)
    # The run's tool format, as the export recorded it; a file without one has its template probed.
    return ServedModel(entry.name, engine, None, tokenizer, template, meta.task, context,
                       source=str(entry.weights),
                       tool_format=resolve_tool_format(tokenizer, template, meta.tool_format))


def _context_length(model: Any) -> int:
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(n) if isinstance(n, int) and n > 0 else DEFAULT_CONTEXT


def load_registry(refs: list[str], aliases: dict[str, str], runs_dir: str,
                  settings: EngineSettings, reporter: Reporter = SILENT) -> ModelRegistry:
    """Load every model to serve; adapter runs on one base share that base and its engine.

    Args:
        refs: store names, model folders, run folders or run names; each is served under
            its run name (a run) or the reference itself.
        aliases: extra served names, each for a reference (loaded once if also in ``refs``).
        runs_dir: where run names are looked up.
        settings: the engines' limits.
        reporter: told what is loaded.

    Raises:
        UsageError: nothing to serve, two references claim one name, or a name is longer
            than the request log keeps (``tunelab.db.NAME_LENGTH``).
        ModelNotFoundError, StoreError: a reference cannot be loaded, or its template drifted.
    """
    named: list[tuple[str, str]] = []
    for ref in refs:
        run_dir = find_run(ref, runs_dir)
        named.append((run_dir.name if run_dir is not None else ref, ref))
    named += list(aliases.items())
    if not named:
        raise UsageError("no model to serve", hint="name a run or a model: `tunelab serve RUN`")
    names = [n for n, _ in named]
    long = [n for n in names if len(n) > NAME_LENGTH]
    if long:  # the request log stores the name whole; a request could not name it anyway
        raise UsageError(f"{len(long)} served name(s) are longer than {NAME_LENGTH} characters "
                         f"(the first is {len(long[0])}: {long[0][:60]!r}...)",
                         hint="serve it under a shorter name: an alias in the serve config "
                              "(`aliases: {NAME: PATH}`)")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UsageError(f"two models would be served as {', '.join(dupes)}",
                         hint="give one of them another name with an alias in the serve config")
    entries = [_resolve(n, r, runs_dir, reporter) for n, r in named]
    groups: dict[tuple[str, bool], list[_Entry]] = {}
    ggufs = [e for e in entries if e.weights.is_file()]
    for e in entries:  # one engine per distinct weights folder; adapters join their base's
        if not e.weights.is_file():
            groups.setdefault((str(e.weights.resolve()), e.trust_remote_code), []).append(e)
    models: dict[str, ServedModel] = {}
    engines: list[ServingEngine] = []
    wake = threading.Condition()  # one thread steps every engine; a submit to any wakes it
    for e in ggufs:  # an engine each (no adapters to share a base with)
        reporter.info(f"loading {e.weights} for {e.name} (llama.cpp)")
        models[e.name] = _load_gguf(e, settings, wake, reporter)
        engines.append(models[e.name].engine)
    for (weights, trust), group in groups.items():
        reporter.info(f"loading {weights} for {', '.join(e.name for e in group)}")
        model = load_causal_lm(Path(weights), trust, "float32")
        tokenizers = {e.name: load_tokenizer(e.tokenizer_dir, trust_remote_code=trust) for e in group}
        vocab = max(len(t) for t in tokenizers.values())
        if vocab > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(vocab, mean_resizing=False)
        adapter_of: dict[str, str | None] = {}
        for e in group:
            if e.adapter_dir is None:  # the weights themselves, beside any adapters
                adapter_of[e.name] = BASE_ADAPTER if len(group) > 1 else None
                continue
            name = _adapter_name(e.name, {a for a in adapter_of.values() if a})
            if hasattr(model, "peft_config"):
                model.load_adapter(str(e.adapter_dir), adapter_name=name)
            else:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, str(e.adapter_dir), adapter_name=name)
            adapter_of[e.name] = name
        model.eval()
        stop: set[int] = set()
        for t in tokenizers.values():
            stop |= end_of_turn_ids(t)
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        stop |= {eos} if isinstance(eos, int) else set(eos or [])
        first = tokenizers[group[0].name]
        pad = first.pad_token_id if first.pad_token_id is not None else first.eos_token_id
        context = _context_length(model)
        engine = ServingEngine(BatchScheduler(model, frozenset(stop),
                                              int(pad if pad is not None else 0), context,
                                              settings), wake)
        engines.append(engine)
        for e in group:
            tok = tokenizers[e.name]
            template = _check_fingerprint(e, tok, reporter)
            models[e.name] = ServedModel(e.name, engine, adapter_of[e.name], tok, template, e.task,
                                         context, source=str(e.run_dir or e.weights),
                                         tool_format=resolve_tool_format(tok, template,
                                                                         e.tool_format))
    return ModelRegistry(models, engines)
