"""The dashboard's API over the real server (the HTTP suite's fixtures) and the page in a real browser."""

from __future__ import annotations

import pytest

from tests.http.conftest import api, api_db, provider_env

__all__ = ["api", "api_db", "provider_env"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives the dashboard in headless Chromium (scripts/test-prereqs)")
