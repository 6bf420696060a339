"""Redaction of logged prompts and responses: built-in rules plus a project's own regexes.

Runs in the prompt-log writer's thread, never on a request's path. Each match becomes
``[REDACTED:<rule>]``; the counts per rule are stored with the log. Card numbers must pass the Luhn
check, so order numbers, timestamps and other long digit runs stay readable.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

Replacer = Callable[[re.Match[str]], str]


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    accept: Callable[[str], bool] | None = None  # a further test of the match (e.g. Luhn)


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    # 13-19 digits (ISO/IEC 7812), not one repeated digit, and the Luhn checksum.
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn_valid(digits)


def _phone(text: str) -> bool:
    return 7 <= sum(ch.isdigit() for ch in text) <= 15


# Order matters: secrets and cards before phones, so a card's digit groups are not taken for a phone.
BUILTIN_RULES: tuple[Rule, ...] = (
    Rule("api_key", re.compile(r"\bsk-ant-[A-Za-z0-9_-]{16,}")),
    Rule("api_key", re.compile(r"\bsk-(?:proj-|svcacct-)?[A-Za-z0-9_-]{20,}")),
    Rule("api_key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    Rule("api_key", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),  # JWT
    Rule("api_key", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{16,}")),
    # A Quotagate gateway credential: <key_id>.<secret>, the secret 43 characters of urlsafe base64.
    Rule("api_key", re.compile(r"\b[A-Za-z0-9][A-Za-z0-9_-]{2,63}\.[A-Za-z0-9_-]{40,128}(?![A-Za-z0-9_-])")),
    Rule("email", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")),
    Rule("card_number", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), _card),
    # International (+CC ...) or North American (NNN) NNN-NNNN shapes; bare digit runs are not phones.
    Rule(
        "phone",
        re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?![\w])"),
        _phone,
    ),
    Rule("phone", re.compile(r"(?<![\w(])(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w])"), _phone),
)


class Redactor:
    def __init__(self, custom: Iterable[tuple[str, str]] = ()) -> None:
        """`custom`: (name, regex) pairs from the manifest, applied after the built-in rules."""
        self.rules = (*BUILTIN_RULES, *(Rule(name, re.compile(pattern)) for name, pattern in custom))

    def text(self, value: str, counts: Counter[str] | None = None) -> str:
        counts = counts if counts is not None else Counter()
        for rule in self.rules:
            value = rule.pattern.sub(_replacer(rule, counts), value)
        return value

    def body(self, raw: bytes, counts: Counter[str]) -> str:
        """A request body: JSON string values are redacted one by one (escapes decoded first, so
        `\\u0040` cannot hide an `@`); anything else as text."""
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self.text(raw.decode("utf-8", "replace"), counts)
        return orjson.dumps(self._walk(doc, counts)).decode()

    def _walk(self, node: Any, counts: Counter[str]) -> Any:
        if isinstance(node, str):
            return self.text(node, counts)
        if isinstance(node, list):
            return [self._walk(item, counts) for item in node]
        if isinstance(node, dict):
            return {key: self._walk(value, counts) for key, value in node.items()}
        return node


def _replacer(rule: Rule, counts: Counter[str]) -> Replacer:
    def replace(match: re.Match[str]) -> str:
        if rule.accept is not None and not rule.accept(match.group(0)):
            return match.group(0)
        counts[rule.name] += 1
        return f"[REDACTED:{rule.name}]"

    return replace
