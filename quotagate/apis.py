"""The provider APIs Quotagate understands, keyed by request path."""

from __future__ import annotations

from enum import StrEnum


class Provider(StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class Api(StrEnum):
    """One wire format: how a request body is read and where usage comes back."""

    OPENAI_CHAT = "openai.chat.completions"
    OPENAI_COMPLETIONS = "openai.completions"
    OPENAI_EMBEDDINGS = "openai.embeddings"
    OPENAI_RESPONSES = "openai.responses"
    ANTHROPIC_MESSAGES = "anthropic.messages"

    @property
    def provider(self) -> Provider:
        return Provider.ANTHROPIC if self is Api.ANTHROPIC_MESSAGES else Provider.OPENAI


# Paths as clients send them (the OpenAI and Anthropic SDKs both use a /v1 prefix).
API_BY_PATH: dict[str, Api] = {
    "/v1/chat/completions": Api.OPENAI_CHAT,
    "/v1/completions": Api.OPENAI_COMPLETIONS,
    "/v1/embeddings": Api.OPENAI_EMBEDDINGS,
    "/v1/responses": Api.OPENAI_RESPONSES,
    "/v1/messages": Api.ANTHROPIC_MESSAGES,
}


def api_for_path(path: str) -> Api | None:
    """The API a request path addresses, ignoring any query string; None when Quotagate does not meter it."""
    return API_BY_PATH.get(path.split("?", 1)[0].rstrip("/") or "/")
