from __future__ import annotations

import orjson
import pytest
from envoy.config.core.v3 import base_pb2

from ext_authz.check_messages import check_input, check_response, failure_response
from ext_authz.names import REWRITE_HEADER
from ext_authz.structs import from_struct
from quotagate.apis import Provider
from quotagate.gateway.denials import deny
from quotagate.gateway.outcome import Allow
from quotagate.gateway.ticket import Ticket
from tests.ext_authz.conftest import check_request, make_ticket

OK, PERMISSION_DENIED = 0, 7
OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _allow(ticket: Ticket) -> Allow:
    return Allow(
        ticket=ticket,
        set_headers=(("authorization", "Bearer sk-provider"), ("x-quotagate-upstream", "openai_local")),
        remove_headers=("x-api-key", "x-api-token"),
        response_headers=(("x-ratelimit-remaining-requests", "5"),),
    )


def _headers(options: object) -> dict[str, str]:
    return {o.header.key: o.header.value for o in options}  # type: ignore[attr-defined]


def test_check_input_reads_method_path_headers_raw_body_and_client_address() -> None:
    request = check_request(path="/v1/chat/completions?x=1", raw_body=b'{"model": "m"}')
    got = check_input(request)
    assert (got.method, got.path, got.body, got.client_ip, got.front_door) == (
        "POST",
        "/v1/chat/completions?x=1",
        b'{"model": "m"}',
        "10.1.2.3",
        "envoy",
    )
    assert got.headers["authorization"] == "Bearer demo-key.secret"
    assert got.body_truncated is False


def test_check_input_falls_back_to_the_string_body_without_pack_as_bytes() -> None:
    assert check_input(check_request(raw_body=b"", body='{"model": "é"}')).body == '{"model": "é"}'.encode()


def test_a_partial_body_is_flagged_truncated() -> None:
    request = check_request(headers={"x-envoy-auth-partial-body": "true"})
    assert check_input(request).body_truncated is True


def test_no_source_address_means_no_client_ip() -> None:
    assert check_input(check_request(source="")).client_ip is None


def test_allow_overwrites_headers_removes_credentials_and_carries_the_ticket() -> None:
    ticket = make_ticket()
    response = check_response(_allow(ticket))
    assert response.status.code == OK
    ok = response.ok_response
    assert _headers(ok.headers) == {"authorization": "Bearer sk-provider", "x-quotagate-upstream": "openai_local"}
    assert {o.append_action for o in ok.headers} == {OVERWRITE}
    assert list(ok.headers_to_remove) == ["x-api-key", "x-api-token", REWRITE_HEADER]
    assert _headers(ok.response_headers_to_add) == {
        "x-ratelimit-remaining-requests": "5",
        "x-quotagate-request-id": ticket.request_id,  # the usage event's key, for the client
    }
    assert {o.append_action for o in ok.response_headers_to_add} == {OVERWRITE}
    assert Ticket.from_metadata(from_struct(response.dynamic_metadata)) == ticket


@pytest.mark.parametrize(
    ("changes", "marked"),
    [
        ({}, False),
        ({"inject_include_usage": True}, True),
        ({"rewrite_model": True, "model_requested": "openai/gpt-4o-mini"}, True),
    ],
)
def test_only_requests_needing_a_body_rewrite_get_the_rewrite_header(changes: dict[str, object], marked: bool) -> None:
    ok = check_response(_allow(make_ticket(**changes))).ok_response
    assert (_headers(ok.headers).get(REWRITE_HEADER) == "1") is marked
    assert (REWRITE_HEADER in ok.headers_to_remove) is not marked


def test_deny_answers_the_status_body_and_headers_with_the_reason_as_metadata() -> None:
    denial = deny(
        Provider.OPENAI,
        429,
        "rate_limit_rpm",
        "slow down",
        request_id="req-1",
        headers=(("retry-after", "7"),),
    )
    response = check_response(denial)
    assert response.status.code == PERMISSION_DENIED
    denied = response.denied_response
    assert denied.status.code == 429
    assert orjson.loads(denied.body)["error"]["code"] == "rate_limit_rpm"
    assert _headers(denied.headers)["retry-after"] == "7"
    assert _headers(denied.headers)["content-type"] == "application/json"
    assert _headers(denied.headers)["x-quotagate-request-id"] == "req-1"
    assert from_struct(response.dynamic_metadata) == {"request_id": "req-1", "deny_reason": "rate_limit_rpm"}


@pytest.mark.parametrize(
    ("path", "shape"),
    [("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic"), ("/unknown", "openai")],
)
def test_a_failed_check_fails_closed_with_503_in_the_providers_shape(path: str, shape: str) -> None:
    response = failure_response(check_request(path=path))
    assert response.status.code == PERMISSION_DENIED
    assert response.denied_response.status.code == 503
    body = orjson.loads(response.denied_response.body)
    assert (body.get("type") == "error") is (shape == "anthropic")
    assert _headers(response.denied_response.headers)["x-request-id"] == "req-0123456789"
