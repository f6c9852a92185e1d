"""Simulated users of the sentiment experiment, with the official `openai` client.

    python users.py --base-url http://127.0.0.1:8000/v1 --reviews data/production.jsonl \
        --users 60 --per-user 5                     # the API key from $OPENAI_API_KEY

Each user asks about ``--per-user`` reviews (each review asked once, in the file's order),
naming the experiment as the model and sending their name as ``user``, so they keep one
variant. A user rates every answer of a labelled review through ``POST /v1/feedback``:
up when the answer's first word is the right label, else down with the right label as
the correction, as a user who fixes a wrong answer would. Reviews without a label (the
off-topic prompts) are asked and not rated. Prints what it sent, per variant.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
from openai import OpenAI

QUESTION = "Positive or negative?"  # as make_data.py asks it in training
WORD = re.compile(r"\w+")  # a word or a number; an answer with neither is "(empty)"


def first_word(answer: str) -> str:
    m = WORD.search(answer.lower())
    return m.group(0) if m else ""


def ask(client: OpenAI, model: str, user: str, row: dict, max_tokens: int) -> dict:
    """One request, and its feedback when the review has a label."""
    prompt = f"{row['review']}\n{QUESTION}" if "label" in row else row["review"]
    raw = client.chat.completions.with_raw_response.create(
        model=model, user=user, max_tokens=max_tokens, temperature=0,
        messages=[{"role": "user", "content": prompt}])
    answer = raw.parse()
    said = answer.choices[0].message.content or ""
    out = {"user": user, "variant": raw.headers.get("X-Tunelab-Variant", "-"),
           "model": answer.model, "word": first_word(said), "rating": None}
    if "label" in row:
        body: dict = {"response_id": answer.id, "user": user}
        if out["word"] == row["label"]:
            body["rating"] = "up"
        else:
            body.update(rating="down", correction=row["label"])
        client.post("/feedback", body=body, cast_to=object)
        out["rating"] = body["rating"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base-url", required=True, help="the server's /v1 URL")
    p.add_argument("--api-key", help="default: $OPENAI_API_KEY")
    p.add_argument("--reviews", type=Path, required=True, help="JSONL of {review, label?}")
    p.add_argument("--model", default="sentiment", help="an experiment or a served model")
    p.add_argument("--users", type=int, default=60)
    p.add_argument("--per-user", type=int, default=5)
    p.add_argument("--skip", type=int, default=0, help="reviews of the file to pass over first")
    p.add_argument("--prefix", default="user", help="user names are PREFIX-001, ...")
    p.add_argument("--max-tokens", type=int, default=4)
    p.add_argument("--workers", type=int, default=4, help="users asking at the same time")
    a = p.parse_args(argv)
    rows = [json.loads(line) for line in a.reviews.read_text(encoding="utf-8").splitlines() if line]
    rows = rows[a.skip:]
    need = a.users * a.per_user
    if len(rows) < need:
        print(f"error: {a.reviews} has {len(rows)} reviews after --skip {a.skip}; "
              f"{a.users} users x {a.per_user} need {need}", file=sys.stderr)
        return 2
    client = OpenAI(base_url=a.base_url, api_key=a.api_key, timeout=120)

    def one_user(i: int) -> list[dict]:
        user = f"{a.prefix}-{i + 1:03d}"
        mine = rows[i * a.per_user:(i + 1) * a.per_user]
        return [ask(client, a.model, user, row, a.max_tokens) for row in mine]

    try:
        with ThreadPoolExecutor(a.workers) as pool:
            results = [r for rs in pool.map(one_user, range(a.users)) for r in rs]
    except openai.APIError as e:
        print(f"error: the server refused a request: {e}", file=sys.stderr)
        return 1
    print(f"sent {len(results)} requests from {a.users} users ({a.per_user} each) to "
          f"model {a.model!r}; rated {sum(r['rating'] is not None for r in results)}")
    print(f"{'variant':<10} {'served model':<24} {'users':>5} {'answers':>7} {'up':>4} "
          f"{'down+correction':>15} {'up rate':>7}  first words of the answers")
    for variant in sorted({r["variant"] for r in results}):
        mine = [r for r in results if r["variant"] == variant]
        up = sum(r["rating"] == "up" for r in mine)
        down = sum(r["rating"] == "down" for r in mine)
        rate = f"{up / (up + down):.3f}" if up + down else "-"
        words = ", ".join(f"{w or '(empty)'} {n}" for w, n in Counter(r["word"] for r in mine).most_common(4))
        models = "/".join(sorted({r["model"] for r in mine}))
        print(f"{variant:<10} {models:<24} {len({r['user'] for r in mine}):>5} {len(mine):>7} "
              f"{up:>4} {down:>15} {rate:>7}  {words}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
