"""Make tool-calling chat rows for the worked example: a support assistant that looks up
the weather and orders.

    python make_data.py OUT [--seed N]

Writes into OUT (nothing into the repository), in OpenAI's chat format with ``tools``:

* ``train.jsonl``: 300 rows. Most call one of two functions with arguments taken from
  the user's words (``get_weather(city, unit?)``, ``lookup_order(order_id,
  include_items?)``); most of those go on with the tool's result and the assistant's
  answer from it; one row in five needs no call and is answered in words.
* ``heldout.jsonl``: 80 rows that end where the model must answer: 64 that expect a
  call, with cities and order numbers the training rows never show, and 16 that expect
  none. This is what ``tunelab eval RUN heldout.jsonl --task tool_call`` scores.

The rows are generated (seeded), so no data set is needed; ``--shared`` is accepted and
ignored, as the example tests pass it to every ``make_data.py``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

TRAIN_ROWS = 300
HELDOUT_CALLS = 64
HELDOUT_PLAIN = 16
PLAIN_SHARE = 0.15  # training rows answered without a call
ANSWERED_SHARE = 0.7  # training calls followed by the result and the answer from it

SYSTEM = "You are the support assistant of an online shop."
TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "lookup_order",
        "description": "Status of an order by its number.",
        "parameters": {"type": "object", "properties": {
            "order_id": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{5}$"},
            "include_items": {"type": "boolean"}},
            "required": ["order_id"]}}},
]
CITIES = ["Paris", "Berlin", "Madrid", "Rome", "Lisbon", "Vienna", "Prague", "Warsaw",
          "Dublin", "Oslo", "Stockholm", "Helsinki", "Athens", "Budapest", "Brussels",
          "Amsterdam", "Zurich", "Geneva", "Milan", "Munich", "Hamburg", "Lyon", "Porto",
          "Seville", "Krakow", "Copenhagen", "Edinburgh", "London", "Manchester", "Toronto",
          "Chicago", "Boston", "Denver", "Seattle", "Austin", "Miami", "Tokyo", "Osaka",
          "Seoul", "Sydney", "Melbourne", "Auckland", "Cairo", "Nairobi", "Lagos", "Lima"]
HELDOUT_CITIES = ["Valencia", "Bologna", "Gdansk", "Bergen", "Tallinn", "Riga", "Vilnius",
                  "Sofia", "Belgrade", "Zagreb", "Naples", "Florence", "Marseille",
                  "Rotterdam", "Antwerp", "Dresden"]
WEATHER_ASKS = [
    ("What's the weather in {city}?", None),
    ("Is it raining in {city} right now?", None),
    ("How warm is it in {city} today?", None),
    ("Tell me the weather for {city}, in celsius please.", "celsius"),
    ("What is the temperature in {city} in fahrenheit?", "fahrenheit"),
    ("I'm flying to {city} tonight. What's the weather like there?", None),
    ("Weather in {city} in degrees fahrenheit, please.", "fahrenheit"),
    ("Could you check the weather in {city} (celsius)?", "celsius"),
]
ORDER_ASKS = [
    ("Where is my order {oid}?", None),
    ("Has order {oid} shipped yet?", None),
    ("Can you check the status of {oid}?", None),
    ("What's in my order {oid}? Please list the items.", True),
    ("Order {oid}: status and the items in it, please.", True),
    ("I never got my package, the order number is {oid}.", None),
    ("Please look up {oid} without the item list.", False),
]
PLAIN = [
    ("Thank you, that's all!", "You're welcome! Have a nice day."),
    ("Hi there!", "Hello! How can I help you today?"),
    ("What can you do?", "I can check the weather in a city and look up your orders."),
    ("Do you ship to Canada?", "Yes, we ship to Canada; delivery takes 5 to 8 working days."),
    ("How do I reset my password?", "Click 'Forgot password' on the sign-in page and follow the email."),
    ("Can I pay by bank transfer?", "Yes, bank transfer is accepted at checkout."),
    ("Goodbye.", "Goodbye! Thanks for shopping with us."),
    ("What are your opening hours?", "Our support team answers every day from 8:00 to 20:00."),
    ("Can I return a gift?", "Yes, gifts can be returned within 30 days with the gift receipt."),
    ("Is there a student discount?", "Yes, students get 10% off with a verified student email."),
    ("How do I change my address?", "Open 'My account', then 'Addresses', and edit or add one."),
    ("Do you have a store in town?", "We sell online only, so there is no shop to visit."),
]
OPENERS = ["", "Hi! ", "Hello. ", "Good morning. ", "Quick question: ", "Hey, "]
SKIES = ["sunny", "cloudy", "rainy", "windy", "foggy", "snowing"]
STATES = ["shipped", "processing", "delivered", "out for delivery"]
ITEMS = ["a blue kettle", "two mugs", "a desk lamp", "a phone case", "running shoes"]


def _order_id(rng: random.Random) -> str:
    return f"{rng.choice('ABCDEFGHJKLMNPRSTUVWXYZ')}{rng.choice('ABCDEFGHJKLMNPRSTUVWXYZ')}-{rng.randrange(10**5):05d}"


def _call(rng: random.Random, asks: list, i: int) -> tuple[str, dict, str, str]:
    """A user question, the call it needs, the tool's result and the answer from it."""
    kind, ask, value, fill = asks[i]
    if kind == "weather":
        city, unit = fill, value
        args = {"city": city, **({"unit": unit} if unit else {})}
        degrees = rng.randrange(-5, 35)
        shown = f"{degrees * 9 // 5 + 32} °F" if unit == "fahrenheit" else f"{degrees} °C"
        sky = rng.choice(SKIES)
        result = json.dumps({"city": city, "temperature": shown, "sky": sky})
        return (ask.format(city=city), {"name": "get_weather", "arguments": args}, result,
                f"It is {shown} and {sky} in {city}.")
    oid, items = fill, value
    args = {"order_id": oid, **({"include_items": items} if items is not None else {})}
    state = rng.choice(STATES)
    got = rng.sample(ITEMS, 2)
    result = json.dumps({"order_id": oid, "status": state,
                         **({"items": got} if items else {})})
    answer = f"Order {oid} is {state}." + (f" It holds {got[0]} and {got[1]}." if items else "")
    return ask.format(oid=oid), {"name": "lookup_order", "arguments": args}, result, answer


def _asks(rng: random.Random, cities: list[str], n: int) -> list[tuple]:
    """``n`` distinct questions, half about the weather, half about orders, shuffled."""
    weather = [("weather", ask, unit, city) for ask, unit in WEATHER_ASKS for city in cities]
    rng.shuffle(weather)
    weather = weather[: n // 2]
    orders = [("order", *rng.choice(ORDER_ASKS), _order_id(rng)) for _ in range(n - len(weather))]
    picked = weather + orders
    rng.shuffle(picked)
    return picked


def _row(user: str, call: dict | None, result: str | None, answer: str | None, ident: str) -> dict:
    msgs: list[dict] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    if call is None:
        msgs.append({"role": "assistant", "content": answer})
        return {"messages": msgs, "tools": TOOLS}
    msgs.append({"role": "assistant", "content": None, "tool_calls": [{
        "id": ident, "type": "function",
        "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])}}]})
    if result is not None:
        msgs += [{"role": "tool", "tool_call_id": ident, "content": result},
                 {"role": "assistant", "content": answer}]
    return {"messages": msgs, "tools": TOOLS}


def build(seed: int = 0) -> dict[str, list[dict]]:
    """The rows of each file, by file name: no question is asked twice."""
    rng = random.Random(seed)
    plain = [(opener + user, answer) for opener in OPENERS for user, answer in PLAIN]
    rng.shuffle(plain)
    n_plain = round(TRAIN_ROWS * PLAIN_SHARE)
    asks = _asks(rng, CITIES, TRAIN_ROWS - n_plain)
    train = [_row(user, None, None, answer, "") for user, answer in plain[:n_plain]]
    for i in range(len(asks)):
        user, call, result, answer = _call(rng, asks, i)
        answered = rng.random() < ANSWERED_SHARE
        train.append(_row(user, call, result if answered else None,
                          answer if answered else None, f"call_{i}"))
    rng.shuffle(train)
    held_asks = _asks(rng, HELDOUT_CITIES, HELDOUT_CALLS)
    held = [_row(*_call(rng, held_asks, i)[:2], None, None, f"call_h{i}")
            for i in range(HELDOUT_CALLS)]
    held += [_row(user, None, None, answer, "")
             for user, answer in plain[n_plain:n_plain + HELDOUT_PLAIN]]
    return {"train.jsonl": train, "heldout.jsonl": held}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the folder to write train.jsonl and heldout.jsonl into")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shared", help="ignored: the rows are generated")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in build(args.seed).items():
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"{out / name}: {len(rows)} rows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
