"""tunelab.eval.drift_reference: production prompts and training rows are read alike."""

from __future__ import annotations

import json

from tunelab.config.task import TaskSettings
from tunelab.data.example import Example, Message
from tunelab.data.task import TaskPrompt, task_chat, task_label_set
from tunelab.eval.drift_reference import _input_text, _template_parts, user_text


def test_the_user_text_of_a_logged_chat_or_completion_prompt():
    chat = json.dumps([{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": "first"},
                       {"role": "assistant", "content": "ok"},
                       {"role": "user", "content": "second"}])
    assert user_text(chat) == "first\nsecond"
    assert user_text("Once upon a time") == "Once upon a time"  # a completion prompt
    assert user_text("[1, 2") == "[1, 2"  # not JSON: the text itself
    assert user_text('{"role": "user"}') == '{"role": "user"}'  # JSON, but not a chat


def test_a_task_rows_text_is_taken_out_of_its_question_template():
    task = TaskSettings(type="classify", labels={"0": "negative", "1": "positive"})
    prompt = TaskPrompt.of(task, task_label_set(task))
    text = "a gripping , funny film"
    msgs = task_chat(prompt, [Message("user", text)])
    row = Example([*msgs, Message("assistant", "positive")])
    assert msgs[-1].content != text  # the template wraps it in training
    assert _input_text(row, _template_parts(task)) == text
    custom = TaskSettings(type="generate", template="Q: {text}\nA:")
    row = Example([Message("user", "Q: how far?\nA:"), Message("assistant", "far")])
    assert _input_text(row, _template_parts(custom)) == "how far?"


def test_rows_without_a_task_compare_their_user_turns_or_text():
    row = Example([Message("system", "s"), Message("user", "one"), Message("assistant", "x"),
                   Message("user", "two")])
    assert _input_text(row, None) == "one\ntwo"
    assert _input_text(Example([], text="plain text"), None) == "plain text"
