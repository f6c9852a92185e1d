"""`tunelab generate` and `tunelab chat`: answer prompts, with the run's task when it has one.

A run trained for a task is asked that task's prompt (``tunelab.data.task.task_chat``,
the function training rendered its rows with): a classifier's answer is the label word
its likelihood scoring picks, with the class probabilities, exactly as `tunelab eval`
scores it. A run without a task, or ``use_task=False``, gets the messages as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunelab.config.schema import DEFAULT_RUNS_DIR
from tunelab.config.task import TaskSettings
from tunelab.data.example import Message
from tunelab.data.task import LabelSet, TaskPrompt, task_chat, task_label_set
from tunelab.eval.callables import build_callables
from tunelab.eval.tasks import predict_labels
from tunelab.models.runs import load_for_inference
from tunelab.serve.engine import GenerationEngine
from tunelab.tracking.reporter import SILENT, Reporter


@dataclass
class Answer:
    """One answer: the text, and for a classifier scored by likelihood the probabilities."""

    text: str
    probabilities: dict[str, float] = field(default_factory=dict)  # answer word -> probability


@dataclass
class Answerer:
    """A loaded model that answers chats, through its task when it has one."""

    engine: GenerationEngine
    loaded: Any
    task: TaskSettings | None
    label_set: LabelSet | None
    reporter: Reporter = SILENT

    def chats(self, messages: list[list[Message]]) -> list[list[Message]]:
        """The chats as sent: through the task's prompt when there is a task."""
        if self.task is None:
            return messages
        prompt = TaskPrompt.of(self.task, self.label_set)
        return [task_chat(prompt, m) for m in messages]

    def answer(self, messages: list[list[Message]], max_new_tokens: int,
               temperature: float = 0.0, seed: int = 0) -> list[Answer]:
        """Answer each chat (greedy unless ``temperature`` > 0)."""
        chats = self.chats(messages)
        task, labels = self.task, self.label_set
        if task is not None and labels is not None and task.method == "likelihood":
            model = build_callables(self.loaded.model, self.loaded.tokenizer,
                                    self.loaded.chat_template, self.loaded.label,
                                    max_new_tokens, len(chats) or 1, self.reporter,
                                    self.loaded.tool_format)
            preds = predict_labels(model, chats, labels, "likelihood", task.abstain_below)
            probs = preds.probabilities or [[] for _ in chats]
            return [Answer(a, dict(zip(labels.words, p, strict=True)))
                    for a, p in zip(preds.answers, probs, strict=True)]
        outs = self.engine.generate([[{"role": m.role, "content": m.content} for m in c]
                                     for c in chats],
                                    max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                                    temperature=max(temperature, 1e-5), seed=seed)
        return [Answer(o) for o in outs]


def load_answerer(ref: str, runs_dir: str = DEFAULT_RUNS_DIR, use_task: bool = True,
                  reporter: Reporter = SILENT) -> Answerer:
    """Load a run or model for answering; a run's task applies unless ``use_task`` is False.

    Raises:
        ModelNotFoundError, StoreError: the reference cannot be loaded.
        ConfigError: the run's task is invalid.
    """
    loaded = load_for_inference(ref, runs_dir, reporter=reporter)
    engine = GenerationEngine(loaded.model, loaded.tokenizer, loaded.chat_template,
                              loaded.tool_format)
    task = loaded.task if use_task else None
    labels = task_label_set(task) if task is not None else None
    if task is not None:
        words = f" (answers: {', '.join(labels.words)})" if labels is not None else ""
        reporter.info(f"{loaded.label}: asking its {task.type} task's prompt{words}; "
                      "--no-task sends the text as it is")
    return Answerer(engine, loaded, task, labels, reporter)
