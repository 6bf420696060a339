"""The dashboard's API over the real server (the HTTP suite's fixtures) and the page in a real browser."""

from __future__ import annotations

from tests.http.conftest import api, api_db, provider_env

__all__ = ["api", "api_db", "provider_env"]
