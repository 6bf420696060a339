"""The canonical form is RFC 8785 exactly, whichever serializer writes it."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from quotagate.ledger.chain import MAX_SAFE_INT, Entry, canonical_bytes, json_safe, seal

SAFE = st.integers(-MAX_SAFE_INT, MAX_SAFE_INT)
SCALARS = st.none() | st.booleans() | SAFE | st.text() | st.floats(allow_nan=False, allow_infinity=False)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(VALUES)
def test_canonical_bytes_is_rfc8785(value: Any) -> None:
    assert canonical_bytes(value) == bytes(rfc8785.dumps(value))


def test_the_cases_where_orjson_differs_take_rfc8785() -> None:
    assert canonical_bytes({"x": 5.0, "y": 1e21}) == b'{"x":5,"y":1e+21}'
    assert canonical_bytes({"\ue000": 1, "\U0001f600": 2}) == '{"\U0001f600":2,"\ue000":1}'.encode()
    with pytest.raises(rfc8785.IntegerDomainError):
        canonical_bytes({"n": 2**53})


def test_amounts_beyond_the_exact_range_are_refused() -> None:
    with pytest.raises(ValueError, match="split the entry"):
        seal(Entry("acme", 1, "credit", "c", 2**53, "2026-01-01T00:00:00.000000+00:00", {}), "0" * 64)


def test_json_safe_keeps_big_integers_exact_as_strings() -> None:
    assert json_safe({"a": [2**60, -(2**60), 5, True], "b": None}) == {
        "a": [str(2**60), str(-(2**60)), 5, True],
        "b": None,
    }
