"""Likely personal data: what is found, what stays silent, and how it is masked."""

from __future__ import annotations

import pytest

from tunelab.gate.pii import find_pii, luhn_ok, mask


def kinds(text):
    return [(m.kind, m.text) for m in find_pii(text)]


@pytest.mark.parametrize("text, expected", [
    ("write to jane.doe+news@mail.co.uk today", [("email", "jane.doe+news@mail.co.uk")]),
    ("call +44 20 7946 0958 now", [("phone", "+44 20 7946 0958")]),
    ("call (555) 123-4567.", [("phone", "(555) 123-4567")]),
    ("call 555-123-4567", [("phone", "555-123-4567")]),
    ("card 4111 1111 1111 1111 please", [("card", "4111 1111 1111 1111")]),
    ("card 5500-0000-0000-0004", [("card", "5500-0000-0000-0004")]),
    ("amex 378282246310005", [("card", "378282246310005")]),
    ("host 192.168.1.20 is down", [("ip_address", "192.168.1.20")]),
    ("v6 2001:db8::8a2e:370:7334 up", [("ip_address", "2001:db8::8a2e:370:7334")]),
    ("key sk-proj-abcdefghijklmnopqrstuvwxyz0123", [("api_key", "sk-proj-abcdefghijklmnopqrstuvwxyz0123")]),
    ("aws AKIAIOSFODNN7EXAMPLE", [("api_key", "AKIAIOSFODNN7EXAMPLE")]),
    ("gh ghp_" + "A1b2" * 9, [("api_key", "ghp_" + "A1b2" * 9)]),
    ("-----BEGIN RSA PRIVATE KEY-----\nMII", [("api_key", "-----BEGIN RSA PRIVATE KEY-----")]),
])
def test_finds_each_kind(text, expected):
    assert kinds(text) == expected


@pytest.mark.parametrize("text", [
    "Natalia sold 48 clips in April and 24 in May: 48 + 24 = 72. #### 72",
    "On 2020-10-12 it cost $1,234.56 at 12:30:45.",
    "version 1.2.3.4 and v10.0.0.1 were released",
    "localhost is 127.0.0.1",
    "4111 1111 1111 1112 fails Luhn; 1234567890123456 is no scheme",
    "100000 * 3 = 300000 and 3.14159265358979",
    "mail user@example.com or admin@test.example.org (documentation domains)",
    "the ratio 1:2:3 and the time 10:20:30",
    "sk-short and hf_too_short",
    "",
])
def test_ordinary_text_stays_silent(text):
    assert kinds(text) == []


def test_a_card_number_is_not_also_a_phone():
    assert [m.kind for m in find_pii("pay with 4111-1111-1111-1111")] == ["card"]


def test_luhn():
    assert luhn_ok("4111111111111111") and luhn_ok("79927398713")
    assert not luhn_ok("4111111111111112") and not luhn_ok("79927398710")


@pytest.mark.parametrize("text, masked", [
    ("jane@mail.com", "j***@mail.com"),
    ("555-123-4567", "***-***-4567"),
    ("4111 1111 1111 1111", "**** **** **** 1111"),
    ("10.1.2.3", "10.1.*.*"),
    ("AKIAIOSFODNN7EXAMPLE", "AKIA...(20 chars)"),
])
def test_mask_keeps_only_a_hint(text, masked):
    (match,) = find_pii(f"see {text} here")
    assert mask(match) == masked
    assert text not in mask(match) or len(text) < 5
