"""Write the small data files the example configs train on (run from anywhere).

    python examples/data/make_data.py

Every file is made from tunelab's own synthetic support-ticket task
(``tunelab.data.tasks.ticket_routing``: fictional tickets routed to six code-named
teams) plus reply sentences written here, so nothing is copied from a data set and the
same files come out on every machine. The files are committed beside this script so the
examples run as shipped; a test checks that they are what this script writes.

Each file holds different tickets (one pool of unique ticket texts is sliced):

    train.jsonl         48 chat rows: system prompt, ticket, team name
    valid.jsonl         12 chat rows, the same task (the validation file of several examples)
    domain.jsonl        24 chat rows: ticket -> a one-sentence reply naming the team
    alpaca_a.json       24 Alpaca rows (a JSON array): route the ticket
    alpaca_b.jsonl      24 Alpaca rows (JSONL): write the reply
    conversations.json  24 ShareGPT conversations; the ticket sits between <ticket> tags,
                        every third one has a follow-up turn
"""

from __future__ import annotations

import json
from pathlib import Path

from tunelab.data.tasks import ticket_routing as task

HERE = Path(__file__).resolve().parent
SEED = 0
SIZES = {"train": 48, "valid": 12, "domain": 24, "alpaca_a": 24, "alpaca_b": 24, "conversations": 24}

# What each team does next, for the reply rows (the domain phase learns to write these).
NEXT_STEP = {
    "Atlas": "Atlas, our billing team, will check the charge and reply within one business day.",
    "Beacon": "Beacon, our account team, will help you get back into your account today.",
    "Comet": "Comet, our shipping team, will trace the parcel and send you an update.",
    "Dune": "Dune, our technical team, will look into the error and tell you the fix.",
    "Ember": "Ember, our returns team, will send you a return label and confirm the refund.",
    "Fjord": "Fjord, our sales team, will send you the prices and plan details.",
}
REPLY_INSTRUCTION = "Write a one-sentence reply telling the customer which team handles the ticket."
FOLLOW_UP = "What happens next?"


def _chat(system: str, user: str, answer: str) -> dict:
    return {"messages": [{"role": "system", "content": system},
                         {"role": "user", "content": user},
                         {"role": "assistant", "content": answer}]}


def _sharegpt(i: int, text: str, team: str) -> dict:
    turns = [{"from": "human", "value": f"<ticket>{text}</ticket>"}, {"from": "gpt", "value": team}]
    if i % 3 == 0:
        turns += [{"from": "human", "value": FOLLOW_UP}, {"from": "gpt", "value": NEXT_STEP[team]}]
    return {"system": task.SYSTEM_PROMPT, "conversations": turns}


def build() -> dict[str, str]:
    """The text of each data file, by file name."""
    pool = task.make_tickets(sum(SIZES.values()), seed=SEED)  # ticket texts are unique in a pool
    parts, start = {}, 0
    for name, n in SIZES.items():
        parts[name] = [(ex.messages[1].content, ex.meta["label"]) for ex in pool[start:start + n]]
        start += n

    def jsonl(rows: list[dict]) -> str:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    reply_system = "You answer support tickets in one sentence."
    return {
        "train.jsonl": jsonl([_chat(task.SYSTEM_PROMPT, t, team) for t, team in parts["train"]]),
        "valid.jsonl": jsonl([_chat(task.SYSTEM_PROMPT, t, team) for t, team in parts["valid"]]),
        "domain.jsonl": jsonl([_chat(reply_system, t, NEXT_STEP[team]) for t, team in parts["domain"]]),
        "alpaca_a.json": json.dumps([{"instruction": task.SYSTEM_PROMPT, "input": t, "output": team}
                                     for t, team in parts["alpaca_a"]], ensure_ascii=False, indent=1) + "\n",
        "alpaca_b.jsonl": jsonl([{"instruction": REPLY_INSTRUCTION, "input": t, "output": NEXT_STEP[team]}
                                 for t, team in parts["alpaca_b"]]),
        "conversations.json": json.dumps([_sharegpt(i, t, team) for i, (t, team) in enumerate(parts["conversations"])],
                                         ensure_ascii=False, indent=1) + "\n",
    }


def main() -> None:
    for name, text in build().items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
