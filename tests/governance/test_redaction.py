"""Redaction rules on a corpus: what must go, and what must stay readable."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import orjson
import pytest

from quotagate.governance.redaction import (
    TIMEOUT_RULE,
    WITHHELD,
    Redactor,
    check_custom_pattern,
    luhn_valid,
)
from tests.conftest import REPO
from tests.support.clock import Clock

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
    # GitHub, Slack, Google, Stripe, AWS, PEM private keys, JWTs, name=value secrets
    ("api_key", "GITHUB_TOKEN=ghp_16C7e42F292c6912E7710c838347Ae178B4a"),
    ("api_key", "oauth gho_16C7e42F292c6912E7710c838347Ae178B4a done"),
    ("api_key", "github_pat_11ABCDEFG0123456789abc_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrStUv"),
    ("api_key", "slack xoxb-2637192812-2637192813-AbCdEfGhIjKlMnOpQrStUvWx"),
    ("api_key", "user token xoxp-1234567890-1234567890-1234567890-abcdef1234567890"),
    ("api_key", "app token xoxa-2-1234567890-abcdefghij"),
    ("api_key", "post to https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"),
    ("api_key", "maps key AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY in the url"),
    ("api_key", "stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("api_key", "restricted rk_live_51H8abcdEFGHijklMNOPqrst"),
    ("api_key", "test key sk_test_4eC39HqLyjWDarjtT1zdp7dc"),
    ("api_key", "aws_access_key_id = AKIAIOSFODNN7EXAMPLE"),
    ("api_key", "session ASIAY34FZKBOKMUTVV7A"),
    (
        "api_key",
        "jwt eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLCJleHAiOjEzMDA4MTkzODB9.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
    ),
    (
        "private_key",
        "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\n"
        "aFDrBz9vFqU4yQ==\n-----END RSA PRIVATE KEY-----\nthanks",
    ),
    (
        "private_key",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,3F17F5316E2BAC89\n\n"
        "MIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----",
    ),
    ("private_key", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ (cut off)"),
    ("private_key", "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIB0=\n-----END PRIVATE KEY-----"),
    ("secret", "DATABASE password=hunter2 please"),
    ("secret", "passwd: s3cr3t!"),
    ("secret", "secret=abc123"),
    ("secret", 'config {"client_secret": "a8f5f167f44f4964e6c998dee827110c"}'),
    ("secret", "db_password: 'correct horse battery staple'"),
    ("secret", "api_key=12345-abcde"),
    ("secret", "?user=bob&password=pa55word&next=/"),
]

# Exactly what stays of a text: the name of a name=value secret, the text around a PEM block.
EXACT = [
    ("password=hunter2 please", "password=[REDACTED:secret] please"),
    ("DB_PASSWORD = 'x y z', next", "DB_PASSWORD = [REDACTED:secret], next"),
    ('{"client_secret": "sk-proj-Abcdefghijklmnopqrstuvwxyz0123456789"}', '{"client_secret": "[REDACTED:api_key]"}'),
    ("?user=bob&password=pa55word&next=/", "?user=bob&password=[REDACTED:secret]&next=/"),
    (
        "before\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBYp\n-----END EC PRIVATE KEY-----\nafter",
        "before\n[REDACTED:private_key]\nafter",
    ),
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
    # near misses of the secret rules
    "ghp_short",
    "the gho_ prefix marks OAuth tokens",
    "xoxo, see you soon",
    "xoxb-123",  # too short
    "AIzaSy is how Google keys begin",
    "sk_live_ alone",
    "AKIA plus sixteen",
    "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----",
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----",
    "passwords must be 12 characters or more",
    "a password manager helps",
    "the secret ingredient is love",
    "secretary of state",
    "password_hint: blue",
    "api keys are rotated monthly",
    "eyJ is how a JWT starts",
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


@pytest.mark.parametrize(("text", "expected"), EXACT)
def test_what_stays(text: str, expected: str) -> None:
    assert REDACTOR.text(text) == expected


# Input built to make a badly written rule backtrack: runs of the characters the rules repeat, with
# boundaries everywhere, and the one character each rule needs missing at the end.
ADVERSARIAL = [
    "a." * 100_000,  # an email's local part with no @
    "a@" + "b." * 100_000,  # a domain that never ends in a TLD
    "eyJ-" * 50_000,  # JWT starts without dots
    " +11111111111111111111x" * 9_000,  # phone numbers that are too long
    "1 " * 100_000,  # card digits that never reach 13
    "-----BEGIN PRIVATE KEY-----" * 8_000,  # private-key headers without a body or an end
    "password=" * 22_000,
    "sk-" * 70_000,
    "xoxb-" * 40_000,
    "a-" * 100_000,  # gateway-credential key ids without a dot
]


_RUN_ADVERSARIAL = """
from quotagate.governance.redaction import Redactor
from tests.governance.test_redaction import ADVERSARIAL
for text in ADVERSARIAL:
    Redactor().text(text)
"""


def test_builtin_rules_stay_linear_on_adversarial_input() -> None:
    """The built-in rules as the writer runs them, on 200 KB inputs built to make them backtrack, in a
    process killed after 30 s: linear rules take about 3 s in all; one quadratic rule (as the email rule
    was: every dot of "a.a.a..." started a scan to the end) takes over a minute on the first input."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", _RUN_ADVERSARIAL], env=env, check=True, timeout=30)


def test_a_custom_regex_that_backtracks_is_refused_at_manifest_load() -> None:
    check_custom_pattern(r"TICKET-\d+")
    check_custom_pattern(r"(?i)emp-[0-9]{6}\b")
    with pytest.raises(ValueError, match="invalid regular expression"):
        check_custom_pattern(r"(unclosed")
    with pytest.raises(ValueError, match="backtracks catastrophically"):
        check_custom_pattern(r"(a+)+$")
    with pytest.raises(ValueError, match="backtracks catastrophically"):
        check_custom_pattern(r"(.*,)*$")


def test_the_manifest_refuses_a_catastrophic_redaction_pattern() -> None:
    from pydantic import ValidationError

    from quotagate.manifest.schema import PromptLogging

    PromptLogging.model_validate({"mode": "redacted", "redact": [{"name": "ok", "pattern": "TICKET-[0-9]+"}]})
    with pytest.raises(ValidationError, match="backtracks catastrophically"):
        PromptLogging.model_validate({"mode": "redacted", "redact": [{"name": "bad", "pattern": "(x+x+)+y"}]})


def test_a_custom_regex_out_of_budget_withholds_the_content_and_cools_down() -> None:
    """A pattern that slipped past the trial (here built without the manifest) cannot stall the writer:
    the call gives up at its budget and stores nothing of the content, and for the cool-down the rule
    is not run again: that project's content is withheld straight away."""
    clock = Clock()
    bad = Redactor([("bad", r"(a|aa)+$")], budget_base_s=0.05, budget_per_char_s=0, cooldown_s=60, clock=clock)
    counts: Counter[str] = Counter()
    assert bad.text("mail bob@example.com " + "a" * 40 + "!", counts) == WITHHELD
    assert counts == Counter({"email": 1, TIMEOUT_RULE: 1})
    counts.clear()
    body = orjson.loads(bad.body(b'{"model":"m","messages":[{"content":"hello"},{"content":"aaa"}]}', counts))
    assert body == {"model": WITHHELD, "messages": [{"content": WITHHELD}, {"content": WITHHELD}]}
    assert counts == Counter({TIMEOUT_RULE: 3})
    clock.now += 61  # cooled down: the rule runs again, and fine input passes
    assert bad.text("hello aaa", counts) == "hello [REDACTED:bad]"
    # Redactors without custom rules (other projects) never withhold.
    assert Redactor(clock=clock).text("a" * 40 + "!") == "a" * 40 + "!"
