from __future__ import annotations

import orjson

from ext_authz.processor import StreamProcessor
from tests.ext_authz.conftest import Meters, make_ticket, processing_request, response_body, response_headers


def test_metering_sees_status_content_type_and_every_chunk_and_answers_nothing(meters: Meters) -> None:
    ticket = make_ticket()
    processor = StreamProcessor(meters)
    assert processor.handle(response_headers(200, "text/event-stream; charset=utf-8", ticket=ticket)) is None
    assert processor.handle(response_body(b"data: 1\n\n", ticket=ticket)) is None
    assert not processor.response_ended
    assert processor.handle(response_body(b"data: [DONE]\n\n", ticket=ticket, end=True)) is None
    assert processor.response_ended and processor.done
    (meter,) = meters.opened
    assert meter.ticket == ticket
    assert meter.headers == [(200, "text/event-stream; charset=utf-8")]
    assert meter.chunks == [b"data: 1\n\n", b"data: [DONE]\n\n"]


def test_a_response_without_body_ends_with_its_headers(meters: Meters) -> None:
    processor = StreamProcessor(meters)
    processor.handle(response_headers(204, "application/json", ticket=make_ticket(), end=True))
    assert processor.response_ended


def test_trailers_end_the_response(meters: Meters) -> None:
    ticket = make_ticket()
    processor = StreamProcessor(meters)
    processor.handle(response_headers(200, "application/json", ticket=ticket))
    processor.handle(processing_request("response_trailers", ticket=ticket))
    assert processor.response_ended


def test_header_values_are_read_from_value_when_raw_value_is_empty(meters: Meters) -> None:
    request = processing_request("response_headers", ticket=make_ticket())
    header = request.response_headers.headers.headers.add()
    header.key, header.value = ":status", "429"
    StreamProcessor(meters).handle(request)
    assert meters.opened[0].headers == [(429, None)]


def test_the_ticket_is_read_once_per_stream(meters: Meters) -> None:
    ticket = make_ticket()
    processor = StreamProcessor(meters)
    processor.handle(response_headers(200, "application/json", ticket=ticket))
    processor.handle(response_body(b"{}", ticket=None, end=True))  # later messages need not carry it
    assert len(meters.opened) == 1
    assert meters.opened[0].chunks == [b"{}"]


def test_a_stream_without_a_ticket_is_not_metered(meters: Meters) -> None:
    processor = StreamProcessor(meters)
    processor.handle(response_headers(401, "application/json", ticket=None))
    processor.handle(response_body(b"{}", ticket=None, end=True))
    assert meters.opened == []
    assert processor.meter is None


def test_a_meter_bug_never_breaks_the_stream(meters: Meters) -> None:
    meters.fail_on_chunk = True
    processor = StreamProcessor(meters)
    ticket = make_ticket()
    processor.handle(response_headers(200, "application/json", ticket=ticket))
    assert processor.handle(response_body(b"{}", ticket=ticket, end=True)) is None


def test_outside_observability_mode_every_message_gets_an_unchanged_answer(meters: Meters) -> None:
    ticket = make_ticket()
    processor = StreamProcessor(meters)
    headers = response_headers(200, "application/json", ticket=ticket)
    headers.observability_mode = False
    answer = processor.handle(headers)
    assert answer is not None
    assert answer.WhichOneof("response") == "response_headers"
    assert not answer.response_headers.HasField("response")
    body = response_body(b"{}", ticket=ticket, end=True)
    body.observability_mode = False
    answer = processor.handle(body)
    assert answer is not None
    assert answer.WhichOneof("response") == "response_body"


def _request_body(raw: bytes, ticket: object) -> object:
    request = processing_request("request_body", ticket=ticket, observe=False)  # type: ignore[arg-type]
    request.request_body.body = raw
    request.request_body.end_of_stream = True
    return request


def test_the_rewrite_filter_gets_the_new_body() -> None:
    ticket = make_ticket(inject_include_usage=True, rewrite_model=True, model_requested="openai/gpt-4o-mini")
    raw = b'{"model": "openai/gpt-4o-mini", "stream": true, "messages": []}'
    processor = StreamProcessor(Meters())
    answer = processor.handle(_request_body(raw, ticket))
    assert processor.done  # the rewrite filter sends nothing else: the stream can close
    assert answer is not None
    body = orjson.loads(answer.request_body.response.body_mutation.body)
    assert body == {"model": "gpt-4o-mini", "stream": True, "messages": [], "stream_options": {"include_usage": True}}


def test_a_body_that_needs_no_rewrite_passes_unchanged() -> None:
    answer = StreamProcessor(Meters()).handle(_request_body(b'{"model": "gpt-4o-mini"}', make_ticket()))
    assert answer is not None
    assert answer.WhichOneof("response") == "request_body"
    assert not answer.request_body.response.HasField("body_mutation")


def test_a_request_body_without_a_ticket_passes_unchanged() -> None:
    answer = StreamProcessor(Meters()).handle(_request_body(b"{}", None))
    assert answer is not None
    assert not answer.request_body.response.HasField("body_mutation")
