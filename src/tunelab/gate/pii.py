"""Find text that looks like personal data or secrets: emails, phones, cards, IPs, keys.

A finding here is a likely match, not a proof: card numbers must pass the Luhn check and
start like a real card scheme, IP addresses must parse, phone numbers need the shape of
a real one (a ``+`` country code, or ``(555) 123-4567`` style groups), and API keys are
matched by the published prefixes of common providers. Dates, prices, version numbers,
long numbers in arithmetic and addresses at documentation domains (``example.com``) stay
silent. The matched value is never echoed in full:
``mask`` keeps only enough of it to find it again.

This module knows nothing of rows or files; ``tunelab.gate.check`` turns matches into
findings.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

# Kinds, in the order findings list them, with how a message names each.
KINDS = {
    "email": "an email address",
    "phone": "a phone number",
    "card": "a payment card number (it passes the Luhn check)",
    "ip_address": "an IP address",
    "api_key": "an API key or secret",
}

_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
                    r"\.[A-Za-z]{2,24}(?![\w-])")
# 13 to 19 digits, optionally in groups split by single spaces or dashes.
_CARD = re.compile(r"(?<![\d.,-])\d(?:[ -]?\d){12,18}(?![\d.,]\d|\d)")
# Scheme prefixes (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay); with Luhn they
# keep arbitrary 16-digit numbers (one in ten passes Luhn alone) out.
_CARD_PREFIX = re.compile(r"4|5[1-5]|2[2-7]|3[47]|6011|65|64[4-9]|35|30[0-5]|36|38|62")
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"  # +44 20 7946 0958
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}"  # (555) 123-4567
    r"|\d{3}[.-]\d{3}[.-]\d{4}"  # 555-123-4567
    r")(?![\w-]|\.\d)")
_IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
                   r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# Domains reserved for documentation (RFC 2606): addresses there belong to no one.
_EXAMPLE_DOMAIN = re.compile(r"(?:^|\.)(?:example\.(?:com|org|net)|[^.]+\.(?:test|example|invalid))$",
                             re.IGNORECASE)
_VERSION = re.compile(r"\b(?:v|version|ver\.?)\s*$", re.IGNORECASE)
_API_KEY = re.compile(
    r"(?<![\w-])(?:"
    r"sk-(?:proj-|ant-|live-)?[A-Za-z0-9_-]{20,}"  # OpenAI, Anthropic
    r"|(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}"  # GitHub
    r"|xox[abeoprs]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_-]{35}"  # Google
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JSON web token
    r"|-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----"
    r")")
# Cheap tests that rule a text out before the patterns run (most rows hold no digits,
# no '@' and none of the key prefixes).
_HAS_DIGIT = re.compile(r"\d")
_KEY_HINT = re.compile(r"sk-|_live_|_test_|AKIA|ASIA|gh[pousr]_|github_pat_|xox|AIza|hf_|"
                       r"glpat-|eyJ|PRIVATE KEY")


@dataclass(frozen=True)
class PiiMatch:
    """One likely piece of personal data in a text.

    Args:
        kind: one of ``KINDS``.
        start: character offset of the match in the text.
        text: the matched characters.
    """

    kind: str
    start: int
    text: str


def luhn_ok(digits: str) -> bool:
    """Whether a string of digits passes the Luhn checksum of payment cards.

    Args:
        digits: decimal digits only.

    Returns:
        ``True`` when the checksum is 0 modulo 10.
    """
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match) -> bool:
    raw = match.group()
    if " " in raw and "-" in raw:
        return False
    digits = raw.replace(" ", "").replace("-", "")
    return (_CARD_PREFIX.match(digits) is not None and len(set(digits)) > 1
            and luhn_ok(digits))


def _phone(match: re.Match) -> bool:
    digits = sum(ch.isdigit() for ch in match.group())
    return 8 <= digits <= 15


def _ipv4(text: str, match: re.Match) -> bool:
    if _VERSION.search(text[max(0, match.start() - 10):match.start()]):
        return False  # "version 1.2.3.4"
    address = ipaddress.IPv4Address(match.group())
    return not (address.is_loopback or address.is_unspecified)  # 127.0.0.1 names no one


def _ipv6(match: re.Match) -> bool:
    raw = match.group()
    if raw.count(":") < 2 or ("::" not in raw and raw.count(":") != 7):
        return False  # times like 12:30:45 and short runs of colons
    if sum(c.isalnum() for c in raw) < 3:
        return False
    try:
        ipaddress.IPv6Address(raw)
    except ValueError:
        return False
    return True


def find_pii(text: str) -> list[PiiMatch]:
    """Every likely email, phone, card number, IP address and API key in a text.

    Args:
        text: any string.

    Returns:
        The matches in order of kind (as in ``KINDS``), then of position. A card
        number is not also reported as a phone number.
    """
    found: list[PiiMatch] = []
    if "@" in text:
        found += [PiiMatch("email", m.start(), m.group()) for m in _EMAIL.finditer(text)
                  if not _EXAMPLE_DOMAIN.search(m.group().rpartition("@")[2])]
    if _HAS_DIGIT.search(text):
        cards = [m for m in _CARD.finditer(text) if _card(m)]
        taken = {i for m in cards for i in range(m.start(), m.end())}
        found += [PiiMatch("phone", m.start(), m.group()) for m in _PHONE.finditer(text)
                  if _phone(m) and m.start() not in taken]
        found += [PiiMatch("card", m.start(), m.group()) for m in cards]
        found += [PiiMatch("ip_address", m.start(), m.group()) for m in _IPV4.finditer(text)
                  if _ipv4(text, m)]
    if "::" in text or text.count(":") >= 7:
        found += [PiiMatch("ip_address", m.start(), m.group()) for m in _IPV6.finditer(text)
                  if _ipv6(m)]
    if _KEY_HINT.search(text):
        found += [PiiMatch("api_key", m.start(), m.group()) for m in _API_KEY.finditer(text)]
    order = list(KINDS)
    found.sort(key=lambda m: (order.index(m.kind), m.start))
    return found


def mask(match: PiiMatch) -> str:
    """A shortened, masked form of a match, enough to find it but not to use it.

    Args:
        match: one match from ``find_pii``.

    Returns:
        E.g. ``j***@example.com``, ``***-***-4567``, ``192.168.*.*``, ``sk-p...(51 chars)``.
    """
    text = match.text
    if match.kind == "email":
        user, _, domain = text.partition("@")
        return f"{user[:1]}***@{domain}"
    if match.kind in ("phone", "card"):
        keep = 4
        shown, seen = [], 0
        for ch in reversed(text):
            if ch.isdigit():
                seen += 1
                shown.append(ch if seen <= keep else "*")
            else:
                shown.append(ch)
        return "".join(reversed(shown))
    if match.kind == "ip_address":
        if "." in text:
            return ".".join(text.split(".")[:2] + ["*", "*"])
        return text.split(":")[0] + ":*:*"
    return f"{text[:4]}...({len(text)} chars)"
