"""Fake-provider fixtures: one HTTP and one HTTPS server per session, SDK clients bound to either.

Other suites can reuse ``quotagate.fake_provider.testing.running_fake_provider`` directly.
"""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from quotagate.fake_provider.testing import FakeProvider, running_fake_provider


@pytest.fixture(scope="session")
def fake_http() -> Iterator[FakeProvider]:
    with running_fake_provider() as fake:
        yield fake


@pytest.fixture(scope="session")
def fake_https() -> Iterator[FakeProvider]:
    with running_fake_provider(tls=True) as fake:
        yield fake


@pytest.fixture(params=["http", "https"])
def fake(request: pytest.FixtureRequest) -> FakeProvider:
    """The session's fake provider over plain HTTP and over TLS (trustme CA), with an empty request log."""
    provider: FakeProvider = request.getfixturevalue(f"fake_{request.param}")
    provider.clear_requests()
    return provider


@pytest.fixture
def http_client(fake: FakeProvider) -> Iterator[httpx.Client]:
    with httpx.Client(verify=fake.verify, timeout=10) as client:
        yield client


@pytest.fixture
def openai_client(fake: FakeProvider, http_client: httpx.Client) -> openai.OpenAI:
    # No retries: an injected error must surface as the SDK's exception, once.
    return openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-upstream", http_client=http_client, max_retries=0)


@pytest.fixture
def anthropic_client(fake: FakeProvider, http_client: httpx.Client) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=fake.base_url, api_key="sk-ant-upstream", http_client=http_client, max_retries=0
    )
