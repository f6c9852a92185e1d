"""Output filters: personal-data redaction and a blocklist of patterns, applied to answers.

``redact_pii`` replaces what the data gate's detectors find (``tunelab.gate.pii``:
emails, phone numbers, card numbers, IP addresses, API keys) with ``[redacted]``; the
blocklist replaces each match of its regular expressions with ``[blocked]``. The names
of the filters that changed an answer go to the request log's ``filtered`` column.

A filter sees a whole answer: a pattern or an email can straddle any boundary between
streamed chunks, so with a filter on, a streamed answer is generated in full, filtered,
and then sent (as one content chunk). Time to first token is then the whole answer's
time; that is the price of filtering what a client receives. This module knows nothing
of HTTP or the engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tunelab.config.serve import FilterSettings
from tunelab.gate.pii import find_pii

REDACTED = "[redacted]"
BLOCKED = "[blocked]"


@dataclass
class OutputFilter:
    """The filters of a server, built once from its settings."""

    redact_pii: bool = False
    blocklist: list[re.Pattern[str]] = field(default_factory=list)

    @classmethod
    def from_settings(cls, s: FilterSettings) -> OutputFilter:
        return cls(s.redact_pii, [re.compile(p) for p in s.blocklist])

    @property
    def active(self) -> bool:
        """Whether any filter is on (a streamed answer is then sent whole)."""
        return self.redact_pii or bool(self.blocklist)

    def apply(self, text: str) -> tuple[str, list[str]]:
        """The filtered text and the names of the filters that changed it (``pii``, ``blocklist``)."""
        changed: list[str] = []
        if self.redact_pii:
            redacted = redact(text)
            if redacted != text:
                text = redacted
                changed.append("pii")
        if self.blocklist:
            out = text
            for pattern in self.blocklist:
                out = pattern.sub(BLOCKED, out)
            if out != text:
                text = out
                changed.append("blocklist")
        return text, changed


def redact(text: str) -> str:
    """``text`` with every personal-data match of ``tunelab.gate.pii`` replaced by ``[redacted]``."""
    spans = sorted((m.start, m.start + len(m.text)) for m in find_pii(text))
    out, pos = [], 0
    for start, end in spans:
        if start < pos:  # overlaps a span already replaced
            start = pos
        if start >= end:
            continue
        out.append(text[pos:start])
        out.append(REDACTED)
        pos = end
    out.append(text[pos:])
    return "".join(out)
