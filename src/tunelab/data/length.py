"""The over-length policy: drop, truncate or refuse rows longer than max_length tokens.

Nothing is cut silently: the counts come back to the caller for the run summary, and
``error`` names every offending row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunelab.data.template import TokenizedExample
from tunelab.errors import DataError


@dataclass
class LengthReport:
    """What the policy did (rows, not tokens)."""

    policy: str
    max_length: int
    kept: int = 0
    dropped: int = 0
    truncated: int = 0
    no_loss_tokens: int = 0  # rows with nothing to train on (all answers weight 0, or cut away)
    longest: int = 0
    dropped_lines: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["dropped_lines"] = self.dropped_lines[:100]
        return d


def apply_length_policy(rows: list[TokenizedExample], max_length: int,
                        policy: str) -> tuple[list[TokenizedExample], LengthReport]:
    """Apply the over-length policy; rows without any answer token are set aside too.

    Raises:
        DataError: policy is ``error`` and a row is longer than ``max_length``.
    """
    rep = LengthReport(policy, max_length)
    out: list[TokenizedExample] = []
    too_long = []
    for r in rows:
        rep.longest = max(rep.longest, len(r))
        if len(r) > max_length:
            where = f"{r.source}:{r.line}"
            if policy == "error":
                too_long.append(f"{where}: {len(r)} tokens > data.max_length {max_length}")
                continue
            if policy == "drop":
                rep.dropped += 1
                rep.dropped_lines.append(where)
                continue
            r = TokenizedExample(r.input_ids[:max_length], r.labels[:max_length], r.source, r.line)
            rep.truncated += 1
        if r.num_loss_tokens == 0:
            rep.no_loss_tokens += 1
            rep.dropped_lines.append(f"{r.source}:{r.line} (no answer tokens)")
            continue
        out.append(r)
    if too_long:
        raise DataError(f"{len(too_long)} row(s) are longer than data.max_length", too_long,
                        hint="raise data.max_length, or set data.overlength: drop | truncate")
    rep.kept = len(out)
    return out, rep
