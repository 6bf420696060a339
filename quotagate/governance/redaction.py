"""Redaction of logged prompts and responses: built-in rules plus a project's own regexes.

Runs in the prompt-log writer's thread, never on a request's path. Each match becomes
``[REDACTED:<rule>]``; the counts per rule are stored with the log. Card numbers must pass the Luhn
check, so order numbers, timestamps and other long digit runs stay readable.

One thread redacts for every project, so no rule may stall it:

* The built-in rules run in time linear in the text: a match can only start where a run of its
  characters starts (a look-behind), and quantifiers that could split a run many ways are possessive.
  A test feeds each rule adversarial input.
* A project's custom regexes are untrusted: they run on the ``regex`` module (in its ``re``-compatible
  mode) with a time budget per call, and are tried on pathological input when the manifest is
  validated. A call that runs out of budget withholds the content (``[REDACTED:timeout]``: nothing
  unredacted is ever stored) and the custom rules of that redactor are skipped, their content
  withheld, for a cool-down, so a bad pattern costs its own project's logs, not the other projects'.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import regex

log = logging.getLogger(__name__)

TIMEOUT_RULE = "timeout"
WITHHELD = f"[REDACTED:{TIMEOUT_RULE}]"
# Custom rules of one call (a request body, a response text) may take BASE + PER_CHAR x its length.
CUSTOM_BUDGET_BASE_S = 0.05
CUSTOM_BUDGET_PER_CHAR_S = 2e-6
COOLDOWN_S = 60.0  # after a timeout, how long that redactor's custom rules are skipped
# A manifest pattern is tried on these many repeated characters with this timeout per trial.
TRIAL_LENGTH = 5000
TRIAL_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    accept: Callable[[str], bool] | None = None  # a further test of the match (e.g. Luhn)
    keep: int = 0  # a group whose text stays in place (e.g. the `password=` before a redacted value)


@dataclass(frozen=True)
class CustomRule:
    name: str
    pattern: regex.Pattern[str]


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


_SECRET_NAMES = (
    r"password|passwd|passphrase|secret|secret[_-]?key|client[_-]?secret|api[_-]?key|apikey|access[_-]?key"
    r"|private[_-]?key|auth[_-]?token|access[_-]?token|refresh[_-]?token"
)

# Order matters: secrets and cards before phones, so a card's digit groups are not taken for a phone.
BUILTIN_RULES: tuple[Rule, ...] = (
    # PEM private keys (PKCS#1/#8, EC, OpenSSH, encrypted), headers included; an unterminated block (a
    # key cut off mid-paste) is redacted to its end. Public keys and certificates are not secrets.
    Rule(
        "private_key",
        re.compile(
            r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----(?:[A-Za-z0-9+/=\s:,.()]|-(?!----))*"
            r"(?:-----END [A-Z0-9 ]{0,40}PRIVATE KEY-----)?"
        ),
    ),
    Rule("api_key", re.compile(r"\bsk-ant-[A-Za-z0-9_-]{16,}")),
    Rule("api_key", re.compile(r"\bsk-(?:proj-|svcacct-)?[A-Za-z0-9_-]{20,}")),
    Rule("api_key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    Rule("api_key", re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}\b")),  # GitHub tokens
    Rule("api_key", re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}")),  # GitHub fine-grained tokens
    Rule("api_key", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),  # Slack tokens
    Rule("api_key", re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+")),
    Rule("api_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])")),  # Google API keys
    Rule("api_key", re.compile(r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}")),  # Stripe secret/restricted
    Rule("api_key", re.compile(r"\bwhsec_[A-Za-z0-9+/=]{24,}")),  # webhook signing secrets
    Rule("api_key", re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    Rule("api_key", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{16,}")),
    # A Quotagate gateway credential: <key_id>.<secret>, the secret 43 characters of urlsafe base64.
    Rule("api_key", re.compile(r"\b[A-Za-z0-9][A-Za-z0-9_-]{2,63}\.[A-Za-z0-9_-]{40,128}(?![A-Za-z0-9_-])")),
    # `password=...`, `"client_secret": "..."`, `api_key: ...`: the name stays, the value goes.
    Rule(
        "secret",
        re.compile(
            rf"(?i)((?:{_SECRET_NAMES})[\"']?[ \t]*[=:][ \t]*)(?![\"']?\[REDACTED:)(\"[^\"\n]+\"|'[^'\n]+'|[^\s\"',;&]+)",
        ),
        keep=1,
    ),
    Rule(
        "email",
        re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]++(?:\.[A-Za-z0-9-]++)*\.[A-Za-z]{2,}\b"),
    ),
    Rule("card_number", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), _card),
    # International (+CC ...) or North American (NNN) NNN-NNNN shapes; bare digit runs are not phones.
    Rule(
        "phone",
        re.compile(r"(?<![\w+])\+\d{1,3}+(?:[ .-]?\(?\d{1,4}+\)?){2,5}(?![\w])"),
        _phone,
    ),
    Rule("phone", re.compile(r"(?<![\w(])(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w])"), _phone),
)


def compile_custom(pattern: str) -> regex.Pattern[str]:
    """A custom rule's pattern as the writer runs it: Python `re` syntax, on the `regex` module (V0)."""
    return regex.compile(pattern, flags=regex.V0)


def check_custom_pattern(pattern: str) -> None:
    """Raise ValueError for a pattern that does not compile, or that backtracks catastrophically on a
    long run of one character (each character of the pattern, and a few common ones, followed by one
    that rarely matches): such a pattern would spend its time budget on every capture."""
    try:
        compiled = compile_custom(pattern)
    except regex.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    for ch in sorted({*pattern, *"a0 _-.@"} - set("\\")):
        for end in ("\x00", "!"):
            try:
                compiled.search(ch * TRIAL_LENGTH + end, timeout=TRIAL_TIMEOUT_S)
            except TimeoutError:
                raise ValueError(
                    f"the pattern backtracks catastrophically (over {TRIAL_TIMEOUT_S:g} s on {TRIAL_LENGTH} "
                    f"repeated {ch!r} characters); rewrite it without nested or overlapping repetition"
                ) from None


class Redactor:
    def __init__(
        self,
        custom: Iterable[tuple[str, str]] = (),
        *,
        budget_base_s: float = CUSTOM_BUDGET_BASE_S,
        budget_per_char_s: float = CUSTOM_BUDGET_PER_CHAR_S,
        cooldown_s: float = COOLDOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`custom`: (name, regex) pairs from the manifest, applied after the built-in rules."""
        self.rules = BUILTIN_RULES
        self.custom = tuple(CustomRule(name, compile_custom(pattern)) for name, pattern in custom)
        self._base, self._per_char, self._cooldown, self._clock = budget_base_s, budget_per_char_s, cooldown_s, clock
        self._skip_until = float("-inf")  # custom rules are skipped (content withheld) until then

    def text(self, value: str, counts: Counter[str] | None = None) -> str:
        return _Pass(self, counts if counts is not None else Counter(), len(value)).redact(value)

    def body(self, raw: bytes, counts: Counter[str]) -> str:
        """A request body: JSON string values are redacted one by one (escapes decoded first, so
        `\\u0040` cannot hide an `@`); anything else as text."""
        run = _Pass(self, counts, len(raw))
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return run.redact(raw.decode("utf-8", "replace"))
        return orjson.dumps(run.walk(doc)).decode()


class _Pass:
    """One call's redaction: the custom rules share one deadline; after a timeout everything left of the
    call is withheld."""

    def __init__(self, redactor: Redactor, counts: Counter[str], size: int) -> None:
        self._r = redactor
        self._counts = counts
        now = redactor._clock()
        self._deadline = now + redactor._base + redactor._per_char * size
        self._withhold = bool(redactor.custom) and now < redactor._skip_until

    def redact(self, value: str) -> str:
        for rule in self._r.rules:
            value = rule.pattern.sub(_replacer(rule, self._counts), value)
        if not self._r.custom:
            return value
        for custom in self._r.custom:
            remaining = self._deadline - self._r._clock()
            if self._withhold or remaining <= 0:
                return self._withheld(custom.name)
            try:
                value = custom.pattern.sub(_custom_replacer(custom.name, self._counts), value, timeout=remaining)
            except TimeoutError:
                return self._withheld(custom.name)
        return value

    def _withheld(self, rule: str) -> str:
        if not self._withhold:
            self._withhold = True
            self._r._skip_until = self._r._clock() + self._r._cooldown
            log.warning(
                "custom redaction rule %r ran out of its time budget: content withheld, and the custom rules "
                "%s skipped (their content withheld) for %.0f s",
                rule,
                [c.name for c in self._r.custom],
                self._r._cooldown,
            )
        self._counts[TIMEOUT_RULE] += 1
        return WITHHELD

    def walk(self, node: Any) -> Any:
        if isinstance(node, str):
            return self.redact(node)
        if isinstance(node, list):
            return [self.walk(item) for item in node]
        if isinstance(node, dict):
            return {key: self.walk(value) for key, value in node.items()}
        return node


def _replacer(rule: Rule, counts: Counter[str]) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        if rule.accept is not None and not rule.accept(match.group(0)):
            return match.group(0)
        counts[rule.name] += 1
        kept = match.group(rule.keep) if rule.keep else ""
        return f"{kept}[REDACTED:{rule.name}]"

    return replace


def _custom_replacer(name: str, counts: Counter[str]) -> Callable[[regex.Match[str]], str]:
    def replace(_match: regex.Match[str]) -> str:
        counts[name] += 1
        return f"[REDACTED:{name}]"

    return replace
