"""Envoy suites: one front door (fake provider + Quotagate + Envoy) per module."""

from __future__ import annotations

from tests.support.envoy import envoy_stack

__all__ = ["envoy_stack"]
