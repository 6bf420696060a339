"""Errors the core raises, typed by origin so front doors map them to the right status."""

from __future__ import annotations


class QuotagateError(Exception):
    """Base of every error Quotagate raises on purpose; the CLI prints its message."""

    exit_code = 1


class ConfigError(QuotagateError):
    """Settings or a manifest are invalid; nothing was changed."""

    exit_code = 2


class NotFoundError(QuotagateError):
    """A named object (key, organization, ...) does not exist."""

    exit_code = 3


class BackendUnavailable(QuotagateError):
    """A storage or counter backend cannot be reached; decisions fail closed."""

    exit_code = 4


class ConflictError(QuotagateError):
    """The request is valid but clashes with the current state (an id in use, a revoked key, a replayed key)."""

    exit_code = 5
