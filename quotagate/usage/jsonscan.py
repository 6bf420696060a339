"""Cheap reads of raw JSON text, for the hot path and for salvage, without parsing a whole document.

They rely on one property of JSON: inside a string every ``"`` is escaped, so ``"key":`` can only
match a real key, never text that merely quotes one.
"""

from __future__ import annotations

import contextlib
import re

import orjson

# The body of a JSON string (after its opening quote), unrolled so long strings scan fast.
_STRING_BODY = r'[^"\\]*(?:\\.[^"\\]*)*'
_MODEL = re.compile(r'"model"\s*:\s*"(' + _STRING_BODY + ')"', re.DOTALL)
_OBJECT_KEY = r'"{}"\s*:\s*\{{'


def string_values(pattern: re.Pattern[str], data: str, start: int = 0) -> list[str]:
    """The decoded values captured by ``pattern``'s one group (a string body, quotes excluded), from
    ``start`` on.

    An unterminated string (a cut stream) does not match; an undecodable escape keeps its raw text,
    which is as good for an estimate.
    """
    values: list[str] = pattern.findall(data, start)
    for i, raw in enumerate(values):
        if "\\" in raw:
            with contextlib.suppress(orjson.JSONDecodeError):
                values[i] = orjson.loads('"' + raw + '"')
    return values


def key_pattern(*keys: str) -> re.Pattern[str]:
    """A pattern capturing the string value of any of ``keys``."""
    names = "|".join(re.escape(k) for k in keys)
    return re.compile(r'"(?:' + names + r')"\s*:\s*"(' + _STRING_BODY + ')"', re.DOTALL)


class ObjectProbe:
    """Whether ``"key"`` is followed by an object (not ``null``) in raw JSON, without parsing it.

    Compact JSON (what OpenAI sends) is answered by one substring search; spaced JSON by a pattern.
    """

    __slots__ = ("_compact", "_pattern", "_quoted", "_skip")

    def __init__(self, key: str) -> None:
        self._quoted = f'"{key}"'
        self._compact = f'"{key}":{{'
        self._skip = len(self._quoted)
        self._pattern = re.compile(_OBJECT_KEY.format(re.escape(key)))

    def __call__(self, data: str) -> bool:
        i = data.find(self._quoted)
        if i < 0:
            return False
        if data.startswith(self._compact, i):
            return True
        if data.startswith(":null", i + self._skip) and data.find(self._quoted, i + self._skip) < 0:
            return False  # the usual "usage":null of every OpenAI chunk but the last
        return self._pattern.search(data, i) is not None


def last_object(text: str, key: str) -> dict[str, object] | None:
    """The last ``"key": {...}`` object in ``text`` that parses, e.g. usage at the end of a body too big
    to keep whole. Scans for the matching brace, skipping strings."""
    starts = [m.end() - 1 for m in re.finditer(_OBJECT_KEY.format(re.escape(key)), text)]
    for start in reversed(starts):
        end = _matching_brace(text, start)
        if end < 0:
            continue
        try:
            value = orjson.loads(text[start : end + 1])
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def model_name(text: str) -> str | None:
    match = _MODEL.search(text)
    return match.group(1) if match else None


def _matching_brace(text: str, start: int) -> int:
    depth = 0
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1
