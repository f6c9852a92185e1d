"""A synthetic support-ticket routing task for the quickstart.

A fictional shop routes each customer ticket to one of six internal queues. Queues have
code names (Atlas, Beacon, ...) rather than plain words of the ticket, so the answer is
not a word the model can copy from the ticket: it must learn the mapping from what the
customer asks to the queue. The system prompt lists what each queue handles, so the
label is always determinable from the ticket and the prompt, and every ticket template
belongs to exactly one queue.

Tickets are built from templates written for this module, filled with slot values and
shuffled with a seeded ``random.Random``: no text is copied from any data set, and the
same seed gives the same tickets on every machine.

This module knows nothing of tokenizers, models or files; ``to_jsonl_rows`` returns
rows that the caller writes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from tunelab.data.example import Example, Message

# Queue code names, in the order the system prompt lists them.
TEAMS: tuple[str, ...] = ("Atlas", "Beacon", "Comet", "Dune", "Ember", "Fjord")

# Kept short on purpose: it is in every row, so its tokens dominate training time.
SYSTEM_PROMPT = (
    "Route the ticket to a team: Atlas (billing), Beacon (login, account), "
    "Comet (shipping), Dune (tech bugs), Ember (returns), Fjord (sales, pricing). "
    "Answer with the team name only."
)

# The task's size in the quickstart (the training settings measured on these rows are in
# tunelab.recipes.quickstart.RECOMMENDED). ~90 tokens per row: system prompt 51, ticket ~20,
# template ~16, answer 3.
TRAIN_ROWS = 640  # 6 teams x ~107. Fewer risks stopping before the routing is learned
TEST_ROWS = 120  # 6 teams x 20, enough to read a 30-point gain

_NAMES = ("Maria", "Tom", "Aisha", "Kenji", "Lena", "Omar", "Priya", "Lucas", "Sofia",
          "Daniel", "Chen", "Fatima", "Jonas", "Elena", "Noah", "Zara")
_PRODUCTS = ("wireless headphones", "standing desk", "coffee grinder", "rain jacket",
             "yoga mat", "desk lamp", "blender", "hiking boots", "backpack",
             "phone case", "smart watch", "office chair", "kettle", "monitor stand")
_DEVICES = ("iPhone 13", "Pixel 7", "Galaxy S22", "iPad", "Windows laptop", "MacBook",
            "Android tablet", "Chromebook")
_ERRORS = ("E-102", "error 500", "E-417", "code 0x3F", "timeout error", "E-221")
_CARRIERS = ("the courier", "DHL", "UPS", "the local post", "FedEx")
_CITIES = ("Lyon", "Denver", "Osaka", "Leeds", "Porto", "Austin", "Gdansk", "Perth")
_PLANS = ("Basic", "Plus", "Pro", "Team")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July",
           "August", "September", "October", "November", "December")

_OPENERS = ("", "", "Hi, ", "Hello, ", "Hi team, ", "Good morning, ", "Hey, ", "Urgent: ")
_CLOSERS = ("", "", " Thanks.", " Thank you!", " Please help.", " Regards, {name}.",
            " Can you look into it?", " Thanks in advance.")

# Every template belongs to exactly one team; the request, not a single keyword,
# decides the team (e.g. "refund" of a double charge is Atlas, of a sent-back item Ember).
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "Atlas": (
        "I was charged twice for order #{order}, {amount} left my card two times.",
        "my invoice for {month} shows {amount} but I expected a lower amount, please correct it.",
        "my credit card payment keeps getting declined at checkout although the card is valid.",
        "I need a VAT invoice for order #{order} for my company accounts.",
        "there is a charge of {amount} on my statement that I do not recognise.",
        "how do I change the card you bill every month? The old one expired.",
        "the {plan} plan renewed and took {amount} even though I cancelled in {month}.",
        "please refund the duplicate charge of {amount} from {month}.",
        "can I pay by bank transfer instead of card for order #{order}?",
    ),
    "Beacon": (
        "I cannot log in, the site says my password is wrong even after resetting it.",
        "the password reset email never arrives in my inbox.",
        "my account got locked after too many sign-in attempts, how do I unlock it?",
        "I lost my phone and now I cannot get the two-factor code to sign in.",
        "I want to change the email address on my account to a new one.",
        "someone else seems to have signed in to my account from {city}.",
        "please delete my account and all my personal data.",
        "the sign-in page keeps sending me back to the login screen on my {device}.",
        "how can I change the username on my profile?",
    ),
    "Comet": (
        "my order #{order} has not arrived yet, it was due on {month} {day}.",
        "the tracking number for order #{order} shows no update for {days} days.",
        "{carrier} says the parcel was delivered but there is nothing at my door.",
        "can I change the delivery address of order #{order} to {city}?",
        "my {product} is stuck in customs, when will it be delivered?",
        "do you ship to {city}, and how long does delivery take?",
        "the parcel with my {product} went to the wrong address.",
        "{carrier} left a note but I was home all day, how do I get my parcel?",
        "can you send order #{order} with express delivery instead?",
    ),
    "Dune": (
        "the app crashes every time I open the settings page on my {device}.",
        "I get {error} when I try to save my cart on the website.",
        "the website is very slow and pages stop loading on my {device}.",
        "the app shows {error} after the latest update on my {device}.",
        "my wishlist does not sync between the app and the website.",
        "the checkout button does nothing when I tap it on my {device}.",
        "push notifications stopped working on my {device} since {month}.",
        "the search bar returns a blank page with {error}.",
        "images on product pages do not load in the app on my {device}.",
    ),
    "Ember": (
        "I want to return the {product} from order #{order}, it does not fit my needs.",
        "the {product} arrived damaged, can I exchange it for a new one?",
        "please send me a return label for my {product}.",
        "I sent back the {product} {days} days ago, when will the return be processed?",
        "can I exchange the {product} for a different colour?",
        "I received the wrong {product} and want to swap it for the one I ordered.",
        "is it too late to return the {product} I bought in {month}?",
        "the {product} stopped working after a week and I would like to send it back.",
        "how do I return two items from order #{order}?",
    ),
    "Fjord": (
        "what does the {plan} plan cost per year for {seats} people?",
        "we want to order {seats} units of the {product} for our office, is there a bulk discount?",
        "I would like to upgrade from {plan} to a bigger plan, what is the price difference?",
        "can you send a quote for {seats} {product}s for our company?",
        "do you offer a student discount on the {plan} plan?",
        "what is included in the {plan} plan compared with the others?",
        "we are a team of {seats} and want to talk to someone about a business plan.",
        "is there a discount if I buy the {product} together with the {plan} plan?",
        "before I buy, can someone explain the pricing of the {plan} plan?",
    ),
}


def _fill(template: str, rng: random.Random) -> str:
    slots = {
        "name": rng.choice(_NAMES),
        "product": rng.choice(_PRODUCTS),
        "device": rng.choice(_DEVICES),
        "error": rng.choice(_ERRORS),
        "carrier": rng.choice(_CARRIERS),
        "city": rng.choice(_CITIES),
        "plan": rng.choice(_PLANS),
        "month": rng.choice(_MONTHS),
        "order": str(rng.randint(10000, 99999)),
        "amount": f"${rng.randint(5, 400)}.{rng.randint(0, 99):02d}",
        "day": str(rng.randint(1, 28)),
        "days": str(rng.randint(3, 21)),
        "seats": str(rng.choice((5, 10, 12, 20, 25, 50, 100))),
    }
    return template.format(**slots)


def _ticket_text(team: str, rng: random.Random) -> str:
    body = _fill(rng.choice(_TEMPLATES[team]), rng)
    opener = rng.choice(_OPENERS)
    closer = _fill(rng.choice(_CLOSERS), rng)
    if not opener:
        body = body[0].upper() + body[1:]
    return f"{opener}{body}{closer}"


def _example(text: str, team: str, ticket_id: str) -> Example:
    return Example(
        messages=[
            Message("system", SYSTEM_PROMPT),
            Message("user", text),
            Message("assistant", team),
        ],
        source="ticket_routing",
        meta={"label": team, "id": ticket_id},
    )


def make_tickets(n: int, seed: int) -> list[Example]:
    """Generate ``n`` tickets, balanced over ``TEAMS`` and in a seeded random order.

    Ticket texts are unique within one call. Team counts differ by at most one.

    Args:
        n: number of tickets.
        seed: the same seed gives the same tickets.

    Returns:
        Examples with system, user and assistant messages and ``meta`` holding
        ``label`` (the team) and ``id``.

    Raises:
        ValueError: ``n`` is negative.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    teams = [TEAMS[i % len(TEAMS)] for i in range(n)]
    rng.shuffle(teams)
    seen: set[str] = set()
    out = []
    for i, team in enumerate(teams):
        # Slot combinations run to millions per team: a repeat is rare and retried.
        for _ in range(1000):
            text = _ticket_text(team, rng)
            if text not in seen:
                break
        else:  # pragma: no cover - needs far more tickets than any run uses
            raise ValueError(f"cannot make {n} distinct tickets; ask for fewer")
        seen.add(text)
        out.append(_example(text, team, f"t{seed}-{i:05d}"))
    return out


def make_splits(n_train: int, n_test: int, seed: int) -> tuple[list[Example], list[Example]]:
    """Train and test tickets with no ticket text in both, each balanced over ``TEAMS``.

    Args:
        n_train: training tickets.
        n_test: held-out tickets.
        seed: the same seed gives the same splits.

    Returns:
        ``(train, test)``.
    """
    pool = make_tickets(n_train + n_test, seed)  # texts are unique within one call
    quota = {t: n_test // len(TEAMS) + (i < n_test % len(TEAMS)) for i, t in enumerate(TEAMS)}
    train: list[Example] = []
    test: list[Example] = []
    for ex in pool:
        team = ex.meta["label"]
        if quota[team] > 0 and len(test) < n_test:
            quota[team] -= 1
            test.append(ex)
        else:
            train.append(ex)
    return train, test


def to_jsonl_rows(examples: Sequence[Example]) -> list[dict]:
    """Rows in the OpenAI chat format, ready for ``json.dumps`` one per line.

    Returns:
        ``{"messages": [{"role", "content"}, ...], "label": ..., "id": ...}`` per example.
    """
    return [
        {
            "messages": [{"role": m.role, "content": m.content} for m in ex.messages],
            **ex.meta,
        }
        for ex in examples
    ]
