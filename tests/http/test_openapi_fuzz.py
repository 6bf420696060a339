"""Schemathesis against /openapi.json of the running server: no generated request, valid or not, gets a
server error, on SQLite and on PostgreSQL (stricter: NUL characters, column lengths). Bounded and
derandomized so it stays fast and repeatable (QUOTAGATE_SOAK=1: many more examples)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error

from quotagate.settings import load_settings
from tests.http.conftest import admin_token, apply, two_org_manifest
from tests.http.threaded import Served, serving_in_thread
from tests.support.gateway import issue_key

SOAK = os.environ.get("QUOTAGATE_SOAK") == "1"
EXAMPLES = {GenerationMode.POSITIVE: 60 if SOAK else 8, GenerationMode.NEGATIVE: 60 if SOAK else 6}
PORTAL = ("/api/", "/v1/models")
GLOBAL_ONLY = ("/admin/organizations", "/admin/upstreams", "/admin/manifest")


@pytest.fixture
def served(provider_env: None, use_database: str) -> Iterator[Served]:
    apply(two_org_manifest())
    with serving_in_thread(load_settings()) as running:
        yield running


def fuzz(operation: APIOperation, mode: GenerationMode, url: str, headers: dict[str, str]) -> list[str]:
    """Failures of `operation` over a bounded number of generated requests."""
    failures: list[str] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=url, headers=headers, timeout=30)
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except AssertionError as exc:
            failures.append(f"{operation.label} ({mode.value}): {str(exc)[:400]}")

    try:
        run()
    except Unsatisfiable:
        # An operation without parameters or body has no invalid variant to generate.
        assert mode is GenerationMode.NEGATIVE, operation.label
    return failures


@pytest.mark.soak
def test_no_server_errors(served: Served) -> None:
    assert served.runtime is not None
    root = {"Authorization": f"Bearer {admin_token()}"}
    # An organization admin for the rest: its creates need no organization, so more of them succeed.
    demo = {"Authorization": f"Bearer {admin_token('demo')}"}
    gateway = {"Authorization": f"Bearer {issue_key('demo-key')}"}
    served.call(served.runtime.config.refresh())
    schema = schemathesis.openapi.from_url(served.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 40
    failures: list[str] = []
    for operation in operations:
        if operation.path.startswith(PORTAL):
            headers = gateway
        else:
            headers = root if operation.path.startswith(GLOBAL_ONLY) else demo
        for mode in EXAMPLES:
            failures += fuzz(operation, mode, served.url, headers)
    assert not failures, "\n".join(failures[:20])
