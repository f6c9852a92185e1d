"""A task declared once: training and evaluation render the identical prompt for a row."""

from __future__ import annotations

import json

import pytest
import yaml

from tunelab.config.evaluation import load_eval_config, with_task
from tunelab.config.loader import config_from_dict, dump_config
from tunelab.config.task import TaskSettings
from tunelab.data.example import Message
from tunelab.data.task import (
    TaskPrompt,
    load_task_examples,
    resolve_task,
    task_chat,
    task_label_set,
)
from tunelab.data.template import IGNORE_INDEX, render_prompt_ids, tokenize_example
from tunelab.errors import ConfigError, DataError
from tunelab.eval.runner import load_eval_data, task_runner
from tunelab.eval.tasks import ModelCallables
from tunelab.tracking.reporter import Recorder

ROWS = {
    "classify": [{"sentence": "a warm, funny film", "label": 1, "idx": 0},
                 {"sentence": "dull and far too long", "label": 0, "idx": 1},
                 {"sentence": "the cast is great", "label": 1, "idx": 2}],
    "regress": [{"text": "how many legs has a cat?", "label": 4},
                {"text": "how many wheels has a bike?", "label": "2"},
                {"text": "a dozen is?", "label": 12.0}],
    "generate": [{"question": "What is 2+3?", "answer": "2+3 = 5\n#### 5"},
                 {"question": "What is 4*2?", "answer": "4*2 = 8\n#### 8"}],
}
TASKS = {
    "classify": {"type": "classify", "text_field": "sentence",
                 "labels": {0: "negative", 1: "positive"}},
    "regress": {"type": "regress"},
    "generate": {"type": "generate", "text_field": "question", "label_field": "answer",
                 "normalizer": "gsm8k", "system_prompt": "Solve it step by step."},
}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _stored(task: TaskSettings) -> TaskSettings:
    """The task as a run folder keeps it: dumped into config.yaml and read back."""
    cfg = config_from_dict({"data": {"train": "x.jsonl"}, "task": task.model_dump()})
    return TaskSettings.model_validate(yaml.safe_load(dump_config(cfg))["task"])


def _recording_model(seen: list) -> ModelCallables:
    def predict(chats):
        seen.extend(chats)
        return ["1"] * len(chats)

    def score(chats, choices):
        seen.extend(chats)
        return [[0.0] * len(c) for c in choices]

    return ModelCallables("recorder", predict=predict, score_choices=score)


@pytest.mark.parametrize("kind", ["classify", "regress", "generate"])
def test_training_and_evaluation_render_the_identical_prompt(kind, tmp_path, tiny_tokenizer):
    data = _write(tmp_path / f"{kind}.jsonl", ROWS[kind])
    task, label_set = resolve_task(TaskSettings.model_validate(TASKS[kind]), [data])
    train = load_task_examples(data, task, label_set)
    # Evaluation as `tunelab eval RUN --data FILE` runs it: the run's stored task, no flags.
    s = with_task(load_eval_config(None, {}), _stored(task))
    ev = load_eval_data(str(data), s)
    seen: list = []
    task_runner(s, ev, _recording_model(seen))(ev.rows)
    assert len(seen) == len(train) == len(ROWS[kind])
    for example, chat in zip(train, seen, strict=True):
        tokens = tokenize_example(tiny_tokenizer, example)
        prompt_len = tokens.labels.index(next(x for x in tokens.labels if x != IGNORE_INDEX))
        assert tokens.input_ids[:prompt_len] == render_prompt_ids(tiny_tokenizer, chat)
    # The trained answer is the label word, the number or the reference text.
    answers = [ex.messages[-1].content for ex in train]
    expected = {"classify": ["positive", "negative", "positive"], "regress": ["4", "2", "12"],
                "generate": [r["answer"] for r in ROWS["generate"]]}[kind]
    assert answers == expected


def test_a_classify_task_resolves_its_text_column_and_labels_from_the_data(tmp_path):
    data = _write(tmp_path / "t.jsonl", [{"content": "ok", "label": "b", "id": 1},
                                         {"content": "no", "label": "a", "id": 2}])
    rec = Recorder()
    task, label_set = resolve_task(TaskSettings(type="classify"), [data], rec)
    assert task.text_field == "content" and task.labels == {"a": "a", "b": "b"}
    assert label_set is not None and label_set.labels == ("a", "b")
    assert any("labels taken from the data" in line for line in rec.lines)
    examples = load_task_examples(data, task, label_set, rec)
    assert examples[0].meta == {"label": "b", "id": 1}  # the label and every other column kept
    assert any("'id'" in line and "not read by the classify task" in line for line in rec.lines)
    stored = task_label_set(task)
    assert stored is not None and (stored.labels, stored.words) == (label_set.labels, label_set.words)


def test_rows_that_do_not_fit_the_task_are_listed_with_their_lines(tmp_path):
    data = _write(tmp_path / "bad.jsonl", [{"text": "fine", "label": "pos"},
                                           {"text": "odd", "label": "maybe"},
                                           {"text": "gone", "label": ""}])
    task = TaskSettings(type="classify", labels=["pos", "neg"])
    task, label_set = resolve_task(task, [data])
    with pytest.raises(DataError) as e:
        load_task_examples(data, task, label_set)
    text = "\n".join(e.value.findings or [])
    assert ":2 label: [unknown_label]" in text and "'maybe'" in text
    assert ":3 label: [empty_content]" in text
    number = _write(tmp_path / "n.jsonl", [{"text": "x", "label": "four"}])
    with pytest.raises(DataError, match="not fit the regress task") as e:
        load_task_examples(number, TaskSettings(type="regress"), None)
    assert "[not_number]" in "\n".join(e.value.findings or [])
    with pytest.raises(DataError, match="no column 'body'") as e:
        resolve_task(TaskSettings(type="classify", text_field="body"), [data])
    assert "task.text_field" in (e.value.hint or "")


def test_task_settings_refuse_what_cannot_work():
    with pytest.raises(ValueError, match="must hold {text}"):
        TaskSettings(type="classify", template="Classify this")
    with pytest.raises(ValueError, match="only a classify task has labels"):
        TaskSettings(type="regress", labels=["1", "2"])
    with pytest.raises(ValueError, match="share a word"):
        TaskSettings(type="classify", labels={0: "good", 1: "Good"})
    with pytest.raises(ConfigError, match="data sources take no format"):
        config_from_dict({"data": {"train": {"path": "x.jsonl", "format": "chat"}},
                          "task": {"type": "classify"}})


def test_the_template_fills_text_and_labels_and_keeps_braces_in_the_text():
    prompt = TaskPrompt("classify", ("negative", "positive"), None,
                        "Review: {text}\nAnswer {labels}.")
    chat = task_chat(prompt, [Message("user", "a {labels} {text} film")])
    assert chat[0].role == "system" and "negative, positive" in chat[0].content
    assert chat[1].content == "Review: a {labels} {text} film\nAnswer negative or positive."
    own = [Message("system", "mine"), Message("user", "x")]
    assert task_chat(prompt, own) == own
    assert task_chat(TaskPrompt("generate", system_prompt=""), [Message("user", "q")]) == \
        [Message("user", "q")]


def test_a_validation_file_may_name_its_own_text_column(tmp_path):
    from tunelab.train.run import load_run_examples

    train = _write(tmp_path / "train.jsonl", [{"sentence": f"good {i}", "label": i % 2} for i in range(6)])
    dev = _write(tmp_path / "dev.jsonl", [{"content": "fine", "label": 1}, {"content": "bad", "label": 0}])
    base = {"data": {"train": str(train), "validation": str(dev)},
            "task": {"type": "classify", "text_field": "sentence"}}
    with pytest.raises(DataError, match="no column 'sentence'") as e:
        load_run_examples(config_from_dict(base))
    assert "text_field on this data source" in str(e.value)
    base["data"]["validation"] = {"path": str(dev), "text_field": "content"}
    cfg, train_ex, val_ex = load_run_examples(config_from_dict(base))
    assert cfg.task is not None and cfg.task.text_field == "sentence"
    assert [ex.messages[1].content.split("\n")[0] for ex in val_ex] == ["Text: fine", "Text: bad"]
    with pytest.raises(ConfigError, match="add a task section"):
        config_from_dict({"data": {"train": {"path": str(train), "text_field": "x"}}})


def test_eval_tasks_of_a_task_run_take_the_run_task():
    from tunelab.config.evaluation import TrainEvalTask

    task = TaskSettings(type="classify", text_field="sentence", labels={0: "negative", 1: "positive"})
    t = with_task(TrainEvalTask(data="dev.tsv", text_field="content", limit=8), task)
    assert isinstance(t, TrainEvalTask) and (t.data, t.limit, t.every) == ("dev.tsv", 8, 1)
    assert (t.text_field, t.labels, t.method) == ("content", ["0", "1"], "likelihood")
    assert t.label_names == {"0": "negative", "1": "positive"}
    other = TrainEvalTask(data="q.jsonl", task="generate")
    assert with_task(other, task) is other  # another task: the run's does not apply
