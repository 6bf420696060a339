"""Envoy suites: envoy-data-plane's generated classes are imported once here, quietly (their pydantic
decorators raise deprecation warnings at import that say nothing about Quotagate)."""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import ext_authz.envoy_config  # noqa: F401
