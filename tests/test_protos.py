"""The Envoy APIs the gateway implements exist, with the shapes it relies on, in the pinned xds-protos build,
and decode with the upb runtime (protos/README.md)."""

from __future__ import annotations

import pytest
from envoy.service.auth.v3 import external_auth_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2
from google.protobuf.internal import api_implementation

SERVICES = [
    (external_auth_pb2, "envoy.service.auth.v3.Authorization", "Check", False, False, "CheckRequest", "CheckResponse"),
    (
        external_processor_pb2,
        "envoy.service.ext_proc.v3.ExternalProcessor",
        "Process",
        True,
        True,
        "ProcessingRequest",
        "ProcessingResponse",
    ),
]


def test_messages_decode_with_upb() -> None:
    assert api_implementation.Type() == "upb"


@pytest.mark.parametrize(
    ("module", "service", "method", "client_stream", "server_stream", "request_type", "response_type"), SERVICES
)
def test_the_implemented_method_has_the_expected_shape(
    module: object,
    service: str,
    method: str,
    client_stream: bool,
    server_stream: bool,
    request_type: str,
    response_type: str,
) -> None:
    descriptor = module.DESCRIPTOR.services_by_name[service.rsplit(".", 1)[1]]  # type: ignore[attr-defined]
    assert descriptor.full_name == service
    found = descriptor.methods_by_name[method]
    package = service.rsplit(".", 1)[0]
    assert found.input_type.full_name == f"{package}.{request_type}"
    assert found.output_type.full_name == f"{package}.{response_type}"
    assert found.client_streaming is client_stream
    assert found.server_streaming is server_stream


def test_the_fields_the_adapters_read_exist() -> None:
    check = external_auth_pb2.CheckRequest.DESCRIPTOR
    http = check.fields_by_name["attributes"].message_type.fields_by_name["request"].message_type
    http = http.fields_by_name["http"].message_type
    assert {"method", "path", "headers", "body", "raw_body"} <= set(http.fields_by_name)
    processing = external_processor_pb2.ProcessingRequest.DESCRIPTOR
    assert {"request_headers", "request_body", "response_headers", "response_body", "metadata_context"} <= set(
        processing.fields_by_name
    )
