"""The gRPC services on a real grpc.aio server, called as Envoy calls them, over a stub core."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ext_authz.ext_proc import ENDED_EARLY
from ext_authz.names import AUTHZ_NAMESPACE, PROBE_HEADER
from ext_authz.server import GatewayServer
from ext_authz.structs import to_struct
from quotagate.gateway.outcome import Allow, CheckInput, Outcome
from tests.ext_authz.conftest import Meters, check_request, make_ticket, response_body, response_headers


async def _check(request: CheckInput) -> Outcome:
    if request.headers.get("x-boom"):
        raise RuntimeError("core bug")
    return Allow(ticket=make_ticket(), set_headers=(("authorization", "Bearer sk-up"),), remove_headers=())


@pytest.fixture
async def served(meters: Meters) -> AsyncIterator[tuple[GatewayServer, grpc.aio.Channel]]:
    server = GatewayServer(_check, meters, max_body_bytes=1024 * 1024)
    address = await server.start("127.0.0.1:0")
    async with grpc.aio.insecure_channel(address) as channel:
        yield server, channel
    await server.stop(0.5)


async def _finishes(meters: Meters, count: int = 1) -> list[str | None]:
    for _ in range(200):
        done = [f for m in meters.opened for f in m.finishes]
        if len(done) >= count:
            return done
        await asyncio.sleep(0.01)
    raise AssertionError(f"meters never finished: {meters.opened}")


async def test_check_allows(served: tuple[GatewayServer, grpc.aio.Channel]) -> None:
    stub = external_auth_pb2_grpc.AuthorizationStub(served[1])
    response = await stub.Check(check_request())
    assert response.status.code == 0
    assert response.ok_response.headers[0].header.value == "Bearer sk-up"


async def test_a_core_exception_fails_closed_with_503(served: tuple[GatewayServer, grpc.aio.Channel]) -> None:
    stub = external_auth_pb2_grpc.AuthorizationStub(served[1])
    response = await stub.Check(check_request(headers={"x-boom": "1"}))
    assert response.denied_response.status.code == 503


async def test_a_check_with_a_body_of_the_largest_accepted_size_fits(
    served: tuple[GatewayServer, grpc.aio.Channel],
) -> None:
    stub = external_auth_pb2_grpc.AuthorizationStub(served[1])
    response = await stub.Check(check_request(raw_body=b"x" * (1024 * 1024)))
    assert response.status.code == 0


async def test_health_reports_serving(served: tuple[GatewayServer, grpc.aio.Channel]) -> None:
    stub = health_pb2_grpc.HealthStub(served[1])
    response = await stub.Check(health_pb2.HealthCheckRequest(service=""))
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_response_that_ends_finishes_its_meter_before_the_stream_closes(
    served: tuple[GatewayServer, grpc.aio.Channel], meters: Meters
) -> None:
    ticket = make_ticket()
    stub = external_processor_pb2_grpc.ExternalProcessorStub(served[1])
    messages = [
        response_headers(200, "text/event-stream", ticket=ticket),
        response_body(b"data: x\n\n", ticket=ticket),
        response_body(b"", ticket=ticket, end=True),
    ]
    answers = [a async for a in stub.Process(iter(messages))]
    assert answers == []  # observability mode: nothing to answer
    assert meters.opened[0].finishes == [None]
    assert meters.opened[0].chunks == [b"data: x\n\n", b""]


async def test_a_stream_closed_before_the_end_still_finishes_the_meter(
    served: tuple[GatewayServer, grpc.aio.Channel], meters: Meters
) -> None:
    ticket = make_ticket()
    stub = external_processor_pb2_grpc.ExternalProcessorStub(served[1])
    messages = [response_headers(200, "text/event-stream", ticket=ticket), response_body(b"data: x\n\n", ticket=ticket)]
    _ = [a async for a in stub.Process(iter(messages))]
    assert await _finishes(meters) == [ENDED_EARLY]


async def test_a_reset_stream_still_finishes_the_meter(
    served: tuple[GatewayServer, grpc.aio.Channel], meters: Meters
) -> None:
    ticket = make_ticket()
    stub = external_processor_pb2_grpc.ExternalProcessorStub(served[1])
    call = stub.Process()
    await call.write(response_headers(200, "text/event-stream", ticket=ticket))
    await call.write(response_body(b"data: x\n\n", ticket=ticket))
    for _ in range(200):  # the server has read both messages
        if meters.opened and meters.opened[0].chunks:
            break
        await asyncio.sleep(0.01)
    call.cancel()
    assert await _finishes(meters) == [ENDED_EARLY]


async def test_the_rewrite_filter_gets_answers(served: tuple[GatewayServer, grpc.aio.Channel]) -> None:
    ticket = make_ticket(inject_include_usage=True)
    request = pb.ProcessingRequest(observability_mode=False)
    to_struct(ticket.to_metadata(), request.metadata_context.filter_metadata[AUTHZ_NAMESPACE])
    request.request_body.body = b'{"model": "gpt-4o-mini", "stream": true}'
    request.request_body.end_of_stream = True
    stub = external_processor_pb2_grpc.ExternalProcessorStub(served[1])
    (answer,) = [a async for a in stub.Process(iter([request]))]
    assert b"include_usage" in answer.request_body.response.body_mutation.body


async def test_stopping_cuts_open_streams_and_finishes_their_meters(meters: Meters) -> None:
    server = GatewayServer(_check, meters, max_body_bytes=1024 * 1024)
    address = await server.start("127.0.0.1:0")
    ticket = make_ticket()
    async with grpc.aio.insecure_channel(address) as channel:
        call = external_processor_pb2_grpc.ExternalProcessorStub(channel).Process()
        await call.write(response_headers(200, "text/event-stream", ticket=ticket))
        for _ in range(200):
            if meters.opened:
                break
            await asyncio.sleep(0.01)
        await server.stop(0.2)
    assert meters.opened[0].finishes == [ENDED_EARLY]


async def test_a_metering_stream_reset_before_its_first_message_is_counted_as_unmetered(
    served: tuple[GatewayServer, grpc.aio.Channel], meters: Meters
) -> None:
    """Envoy opens a metering stream with its first message; a stream this server reads nothing from was reset
    while it waited (the process is past capacity): that response went unmetered, and the metric says so."""
    from quotagate.metrics import REGISTRY

    def lost() -> float:
        return REGISTRY.get_sample_value("quotagate_metering_streams_lost_total") or 0.0

    before = lost()
    stub = external_processor_pb2_grpc.ExternalProcessorStub(served[1])
    ticket = make_ticket()
    messages = [response_headers(200, "application/json", ticket=ticket), response_body(b"{}", ticket=ticket, end=True)]
    _ = [a async for a in stub.Process(iter(messages))]  # a stream that sends its messages is not counted
    await _finishes(meters)
    assert lost() == before

    probe = stub.Process(iter(()), metadata=((PROBE_HEADER, "1"),))  # metering_probe.py's: answered, not lost
    assert [a async for a in probe] == []
    assert lost() == before and len(meters.opened) == 1

    reset = stub.Process()  # opened, then reset before anything was sent
    await asyncio.sleep(0.2)
    reset.cancel()
    for _ in range(100):
        if lost() > before:
            break
        await asyncio.sleep(0.02)
    assert lost() == before + 1
    assert len(meters.opened) == 1  # no meter for the reset stream


async def test_the_metering_probe_measures_the_wait_of_a_stream_on_this_server(meters: Meters) -> None:
    from ext_authz.metering_probe import local_target, probe_metering
    from quotagate.metering.backlog import MeteringBacklog

    server = GatewayServer(_check, meters, max_body_bytes=1024 * 1024)
    bound = await server.start("0.0.0.0:0")  # probed on loopback
    backlog = MeteringBacklog(0.25)
    task = asyncio.create_task(probe_metering(local_target(bound), backlog, period_s=0.01))
    try:
        for _ in range(200):
            if backlog.lag_s > 0:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await server.stop(0.5)
    assert 0 < backlog.lag_s < 0.25 and not backlog.behind()
    assert meters.opened == []  # probes open no meter


def test_a_wildcard_listen_address_is_probed_on_loopback() -> None:
    from ext_authz.metering_probe import local_target

    assert local_target("0.0.0.0:50051") == "127.0.0.1:50051"
    assert local_target("[::]:50051") == "[::1]:50051"
    assert local_target("10.0.0.5:50051") == "10.0.0.5:50051"
    assert local_target("unix:/run/qg.sock") == "unix:/run/qg.sock"
