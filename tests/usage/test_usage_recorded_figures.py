"""Every recorded provider response yields exactly the figures it reports (table in ``_expected``)."""

from __future__ import annotations

import pytest

from quotagate.usage import ParseResult, parser_for

from ._expected import EXPECTED
from ._fixtures import Case, all_cases


def parse(case: Case) -> ParseResult:
    parser = parser_for(case.api, streaming=case.streaming)
    parser.feed(case.body)
    return parser.finish()


def test_the_table_covers_every_recorded_case() -> None:
    assert sorted(EXPECTED) == sorted(c.id for c in all_cases())


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.id)
def test_recorded_response_yields_its_figures(case: Case) -> None:
    expected = EXPECTED[case.id]
    result = parse(case)
    assert result.usage == expected.usage
    assert result.served_model == expected.model
    assert result.error == expected.error
    assert result.complete, "every recording ends with its terminal event or a whole JSON body"
    assert not result.malformed
    assert result.dropped_events == 0
    if expected.text is not None:
        assert result.output_text == expected.text
    assert result.output_text.startswith(expected.starts)
    for part in expected.contains:
        assert part in result.output_text
    assert result.output_text_chars == len(result.output_text)


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.id)
def test_error_bodies_carry_no_usage(case: Case) -> None:
    result = parse(case)
    if case.status >= 400:
        assert result.usage is None
        assert result.error is not None
    else:
        assert result.error is None


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.id)
def test_the_table_agrees_with_the_recorded_usage_objects(case: Case) -> None:
    """A cross-check of the hand-written table (not of the parsers) against ``usage_observed``: the
    last recorded usage object's own totals match the table's classes."""
    observed = case.meta["usage_observed"]
    assert isinstance(observed, list)
    expected = EXPECTED[case.id].usage
    if not observed:
        assert expected is None
        return
    assert expected is not None
    last = observed[-1]["usage"]
    if case.api.provider == "anthropic":
        assert expected.input_tokens == last["input_tokens"]
        assert expected.cached_input_tokens == last["cache_read_input_tokens"]
        assert expected.cache_write_tokens == last["cache_creation_input_tokens"]
        assert expected.output_tokens == last["output_tokens"]
    else:
        prompt = last.get("prompt_tokens", last.get("input_tokens"))
        assert expected.prompt_tokens == prompt
        assert expected.output_tokens == last.get("completion_tokens", last.get("output_tokens", 0))
        assert expected.total_tokens == last["total_tokens"]
