from __future__ import annotations

from google.protobuf import struct_pb2

from ext_authz.structs import from_struct, to_struct
from quotagate.gateway.ticket import Ticket
from tests.ext_authz.conftest import make_ticket


def test_a_ticket_survives_the_struct_round_trip() -> None:
    ticket = make_ticket(monitored=("rpm:project:p1", "tpm:key:k"), remaining_tokens=None)
    struct = struct_pb2.Struct()
    to_struct(ticket.to_metadata(), struct)
    assert Ticket.from_metadata(from_struct(struct)) == ticket


def test_every_value_kind_converts() -> None:
    struct = struct_pb2.Struct()
    to_struct({"s": "x", "n": 2.5, "b": True, "null": None, "nested": {"k": "v"}, "list": [1, "a"]}, struct)
    assert from_struct(struct) == {
        "s": "x",
        "n": 2.5,
        "b": True,
        "null": None,
        "nested": {"k": "v"},
        "list": [1.0, "a"],
    }
