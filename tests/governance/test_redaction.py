"""Redaction rules on a corpus: what must go, and what must stay readable."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from quotagate.governance.redaction import Redactor, luhn_valid

REDACTOR = Redactor([("ticket", r"TICKET-\d+")])

MUST_REDACT = [
    ("email", "write to alice.smith+ml@example.co.uk today"),
    ("email", "Bob@Sub.Example.ORG"),
    ("card_number", "card 4111 1111 1111 1111 exp 12/29"),
    ("card_number", "5500-0000-0000-0004"),
    ("card_number", "amex 378282246310005"),
    ("card_number", "6011111111111117"),
    ("phone", "call +1 (415) 555-2671"),
    ("phone", "or 415-555-2671"),
    ("phone", "(415) 555-2671"),
    ("phone", "london +44 20 7946 0958"),
    ("phone", "paris +33 1 42 68 53 00"),
    ("api_key", "OPENAI_API_KEY=sk-proj-Abcdefghijklmnopqrstuvwxyz0123456789"),
    ("api_key", "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv_wxyz-0123"),
    ("api_key", "aws AKIAIOSFODNN7EXAMPLE key"),
    ("api_key", "Authorization: Bearer abcdefghijklmnop1234567890"),
    ("api_key", "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
    ("api_key", "gateway da-sk-acme-team.Q2hhbmdlTWVQbGVhc2VUaGlzSXNBVGVzdFNlY3JldDQy0"),
    ("ticket", "see TICKET-4821"),
]

MUST_KEEP = [
    "order 1234567890123 shipped",  # 13 digits, fails Luhn
    "card 4111 1111 1111 1112",  # one digit off: fails Luhn
    "0000000000000000",  # passes Luhn, but a run of one digit
    "timestamp 1767225600123 ms",
    "on 2026-11-22 at 14:05:09",
    "ip 192.168.1.100, version 1.2.3, port 8080",
    "amount 1500000 tokens, max_tokens 4096",
    "see example.com or api.openai.com",
    "sk-short",  # too short to be a key
    "a bearer of bad news",
    "user@localhost",  # no domain suffix
    "ISBN 978-3-16-148410-0",
    "the year 2025 had 365 days",
]


@pytest.mark.parametrize(("rule", "text"), MUST_REDACT)
def test_true_positives(rule: str, text: str) -> None:
    counts: Counter[str] = Counter()
    out = REDACTOR.text(text, counts)
    assert f"[REDACTED:{rule}]" in out, out
    assert counts[rule] >= 1


@pytest.mark.parametrize("text", MUST_KEEP)
def test_true_negatives(text: str) -> None:
    counts: Counter[str] = Counter()
    assert REDACTOR.text(text, counts) == text
    assert not counts


def test_luhn() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112") and not luhn_valid("79927398710")


def test_json_bodies_are_redacted_value_by_value() -> None:
    """Escapes are decoded before matching: \\u0040 cannot hide an email."""
    raw = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"mail bob\\u0040example.com, card 4111111111111111"}]}'
    counts: Counter[str] = Counter()
    doc = orjson.loads(REDACTOR.body(raw, counts))
    assert doc["model"] == "gpt-4o-mini"
    assert doc["messages"][0]["content"] == "mail [REDACTED:email], card [REDACTED:card_number]"
    assert counts == Counter({"email": 1, "card_number": 1})


def test_a_non_json_body_is_redacted_as_text() -> None:
    counts: Counter[str] = Counter()
    assert REDACTOR.body(b"plain a@b.io", counts) == "plain [REDACTED:email]"
