"""Check over HTTP (check_http.py) on a real socket, called as Envoy's http_service calls it, over a stub core.

The Envoy side of the contract (what it forwards, what it takes from the answer) is proven end to end by the
front-door suite, which runs every case over both Check transports; this pins the Quotagate side."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from ext_authz import http_contract as contract
from ext_authz.check_http import CheckHttpServer, UnsafeHeader, answer
from ext_authz.names import REWRITE_HEADER
from quotagate.gateway.denials import deny
from quotagate.gateway.outcome import Allow, CheckInput, Outcome
from quotagate.gateway.ticket import Ticket
from tests.ext_authz.conftest import make_ticket

MAX_BODY = 64 * 1024
seen: list[CheckInput] = []


async def _check(request: CheckInput) -> Outcome:
    seen.append(request)
    mode = request.headers.get("x-test")
    if mode == "boom":
        raise RuntimeError("core bug")
    if mode == "deny-401":
        return deny(None, 401, "invalid_credential", "Invalid gateway key.", request_id="rid-401")
    if mode == "deny-503":
        return deny(None, 503, "limits_unavailable", "Limits are unavailable.", request_id="rid-503")
    if mode == "deny-429":
        return deny(
            None,
            429,
            "rate_limited_rpm",
            "Too many requests.",
            request_id="rid-429",
            headers=(("retry-after", "7"), ("x-ratelimit-remaining-requests", "0")),
        )
    if mode == "slow":
        await asyncio.sleep(0.2)
    if mode == "crlf":
        return Allow(ticket=make_ticket(), set_headers=(("authorization", "Bearer a\r\nx-evil: 1"),), remove_headers=())
    if mode == "foreign-header":
        return Allow(ticket=make_ticket(), set_headers=(("x-not-in-contract", "1"),), remove_headers=())
    ticket = make_ticket(request_id=request.headers.get("x-request-id", "req-0123456789"))
    return Allow(
        ticket=ticket,
        set_headers=(("authorization", "Bearer sk-up"),),
        remove_headers=("x-api-key",),
        response_headers=(("x-ratelimit-remaining-requests", "9"),),
    )


@pytest.fixture
async def served() -> AsyncIterator[tuple[CheckHttpServer, httpx.AsyncClient]]:
    seen.clear()
    server = CheckHttpServer(_check, max_body_bytes=MAX_BODY)
    address = await server.start("127.0.0.1:0")
    async with httpx.AsyncClient(base_url=f"http://{address}", timeout=5) as client:
        yield server, client
    await server.stop(0.5)


async def _post(
    client: httpx.AsyncClient, *, headers: dict[str, str] | None = None, body: bytes = b"{}"
) -> httpx.Response:
    return await client.post(f"{contract.PATH_PREFIX}/v1/chat/completions", headers=headers or {}, content=body)


async def test_an_allow_carries_the_upstream_headers_the_removals_and_the_ticket(
    served: tuple[CheckHttpServer, httpx.AsyncClient],
) -> None:
    _, client = served
    response = await _post(
        client,
        headers={"authorization": "Bearer demo-key.s", "x-request-id": "rid-1", contract.CLIENT_IP_HEADER: "10.9.8.7"},
        body=b'{"model": "gpt-4o-mini"}',
    )
    assert response.status_code == 200
    assert response.headers["authorization"] == "Bearer sk-up"
    removed = response.headers[contract.HEADERS_TO_REMOVE].split(",")
    assert "x-api-key" in removed
    assert REWRITE_HEADER in removed  # the ticket needs no rewrite: a client-sent mark is removed
    assert response.headers["x-ratelimit-remaining-requests"] == "9"
    ticket = Ticket.from_metadata(orjson.loads(response.headers[contract.TICKET]))
    assert ticket.request_id == "rid-1"
    assert ticket.reserved_nanos == 123_456_789
    assert response.headers["request_id"] == "rid-1"
    # The core saw the client path without the prefix, the body as sent, and the address Envoy reported.
    [request] = seen
    assert request.path == "/v1/chat/completions"
    assert request.body == b'{"model": "gpt-4o-mini"}'
    assert request.client_ip == "10.9.8.7"
    assert contract.CLIENT_IP_HEADER not in request.headers


async def test_a_refusal_keeps_its_status_body_and_headers(served: tuple[CheckHttpServer, httpx.AsyncClient]) -> None:
    _, client = served
    response = await _post(client, headers={"x-test": "deny-429"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["deny_reason"] == "rate_limited_rpm"
    assert response.json()["error"]["message"] == "Too many requests."
    unauthorized = await _post(client, headers={"x-test": "deny-401"})
    assert unauthorized.status_code == 401
    assert unauthorized.json()["error"]["code"] == "invalid_credential"


async def test_a_5xx_refusal_travels_as_403_with_its_real_status_in_metadata(
    served: tuple[CheckHttpServer, httpx.AsyncClient],
) -> None:
    """Envoy would take a 5xx answer for a failure of Check and replace the provider-shaped body."""
    _, client = served
    response = await _post(client, headers={"x-test": "deny-503"})
    assert response.status_code == contract.DENIAL_WIRE_STATUS
    assert response.headers[contract.HTTP_STATUS] == "503"
    assert response.json()["error"]["code"] == "limits_unavailable"


@pytest.mark.parametrize("mode", ["boom", "crlf", "foreign-header"])
async def test_a_core_failure_or_an_unsendable_answer_fails_closed(
    served: tuple[CheckHttpServer, httpx.AsyncClient], mode: str
) -> None:
    _, client = served
    response = await _post(client, headers={"x-test": mode})
    assert response.status_code == contract.DENIAL_WIRE_STATUS
    assert response.headers[contract.HTTP_STATUS] == "503"
    assert "x-evil" not in response.headers
    assert "authorization" not in response.headers
    assert response.json()["error"]["code"] == "gateway_error"


def test_unsafe_values_are_refused_before_anything_is_written() -> None:
    allow = Allow(ticket=make_ticket(), set_headers=(("authorization", "Bearer a\nb"),), remove_headers=())
    with pytest.raises(UnsafeHeader):
        answer(allow)


async def test_answers_on_one_keep_alive_connection_come_back_in_order(
    served: tuple[CheckHttpServer, httpx.AsyncClient],
) -> None:
    """Envoy pipelines nothing, but a slow Check must never let a later answer overtake it on a connection."""
    server, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
    for rid, mode in (("first", "slow"), ("second", "fast")):
        writer.write(
            f"POST {contract.PATH_PREFIX}/v1/chat/completions HTTP/1.1\r\nhost: check\r\nx-test: {mode}\r\n"
            f"x-request-id: {rid}\r\ncontent-length: 2\r\n\r\n{{}}".encode()
        )
    await writer.drain()
    data = b""
    while data.count(b"HTTP/1.1 200") < 2:
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        assert chunk, data
        data += chunk
    assert data.index(b"request_id: first") < data.index(b"request_id: second")
    writer.close()


async def test_health_only_outside_the_check_prefix_and_unknown_paths_are_404(
    served: tuple[CheckHttpServer, httpx.AsyncClient],
) -> None:
    _, client = served
    assert (await client.get(contract.HEALTH_PATH)).status_code == 200
    # A client path is always under the prefix: /check/health is a Check of the path /health, not health.
    assert (await client.get("/elsewhere")).status_code == 404
    await client.post(f"{contract.PATH_PREFIX}{contract.HEALTH_PATH}", content=b"{}")
    assert seen[-1].path == contract.HEALTH_PATH


async def test_a_body_past_the_limit_closes_the_connection_without_a_decision(
    served: tuple[CheckHttpServer, httpx.AsyncClient],
) -> None:
    """Envoy sends at most max_request_bytes + 1; anything far larger is not Envoy and gets no Check."""
    _, client = served
    response = await _post(client, body=b"x" * (MAX_BODY + 128 * 1024))
    assert response.status_code == 400
    assert seen == []


async def test_draining_reports_not_serving_and_refuses_new_checks(
    served: tuple[CheckHttpServer, httpx.AsyncClient],
) -> None:
    server, client = served
    in_flight = asyncio.create_task(_post(client, headers={"x-test": "slow"}))
    await asyncio.sleep(0.05)
    stopping = asyncio.create_task(server.stop(2))
    await asyncio.sleep(0.02)
    assert server.draining
    assert (await in_flight).status_code == 200  # an in-flight Check finishes
    await stopping


def _port(server: CheckHttpServer) -> int:
    assert server._server is not None
    port: int = server._server.sockets[0].getsockname()[1]
    return port
