"""Where logged prompt content goes: handed over on the request path, written elsewhere."""

from __future__ import annotations

from typing import Protocol

from quotagate.gateway.ticket import Ticket


class ContentSink(Protocol):
    """Takes a request body (Check) and the response text (metering) of an admitted request.

    Both calls return at once and never raise: they only queue the content when the request's
    project logs prompts; redaction and the database write happen in a background writer."""

    def request(self, ticket: Ticket, body: bytes) -> None: ...

    def response(self, ticket: Ticket, text: str) -> None: ...
