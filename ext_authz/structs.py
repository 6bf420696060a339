"""protobuf Struct <-> plain dict, for the ticket carried as Envoy dynamic metadata (upb messages, typed Any)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def to_struct(data: Mapping[str, Any], into: Any) -> None:
    """Fill `into` (a Struct field of a message, so no copy is made) from JSON-able data.

    Field by field rather than Struct.update, which costs twice as much on the Check path."""
    fields = into.fields
    for key, value in data.items():
        if isinstance(value, str):
            fields[key].string_value = value
        elif isinstance(value, bool):
            fields[key].bool_value = value
        elif isinstance(value, int | float):
            fields[key].number_value = value
        elif value is None:
            fields[key].null_value = 0
        elif isinstance(value, Mapping):
            to_struct(value, fields[key].struct_value)
        else:
            fields[key].list_value.extend(value)


def from_struct(struct: Any) -> dict[str, Any]:
    return {key: _value(value) for key, value in struct.fields.items()}


def _value(value: Any) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return value.number_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return from_struct(value.struct_value)
    if kind == "list_value":
        return [_value(v) for v in value.list_value.values]
    return None
