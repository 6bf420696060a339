"""Property-based tests (hypothesis) on what clients and operators hand the gateway: request bodies at Check,
credentials, and manifests. No input crashes anything or gets a 5xx; refusals are clear 4xx / validation
errors; refused input changes no counter and no configuration.

Bounded in CI (the `quotagate-ci` profile: 200 examples, derandomized so a run is repeatable);
QUOTAGATE_SOAK=1 loads `quotagate-soak` (5,000 examples, random) and runs the tests marked `soak` longer."""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quotagate.apis import Api
from quotagate.app import open_app
from quotagate.errors import ConfigError
from quotagate.gateway.outcome import Allow, CheckInput, Deny
from quotagate.gateway.request import MAX_MODEL_CHARS, MAX_OUTPUT_LIMIT, BadRequest, ParsedRequest, parse_request
from quotagate.identity.authenticate import AuthFailure, authenticate
from quotagate.identity.credentials import (
    _KEY_ID,
    _SECRET,
    CREDENTIAL_HEADERS,
    Credential,
    MalformedCredential,
    credential_from_headers,
    parse_credential,
)
from quotagate.manifest.desired import desired_state
from quotagate.manifest.load import ManifestError, load_text, validate_document
from quotagate.settings import load_settings
from quotagate.store.admin_tokens_repo import issue_admin_token, verify_admin_token
from quotagate.store.config_state import read_config_version
from tests.http.conftest import admin_token, bearer
from tests.http.threaded import Served, serving_in_thread
from tests.security.conftest import counter_snapshot
from tests.support.envoy import prepare_home, stack_manifest

SOAK = os.environ.get("QUOTAGATE_SOAK") == "1"
# examples/local-demo.yaml with stored provider keys (no environment needed); its upstream is never called.
BASE_MANIFEST = stack_manifest("127.0.0.1:9")
EXAMPLE = yaml.safe_load(BASE_MANIFEST)
_COMMON: dict[str, Any] = {"deadline": None, "database": None, "suppress_health_check": list(HealthCheck)}
settings.register_profile("quotagate-ci", max_examples=200, derandomize=True, **_COMMON)
settings.register_profile("quotagate-soak", max_examples=5000, **_COMMON)
FUZZ = settings.get_profile("quotagate-soak" if SOAK else "quotagate-ci")
# Manifest applies over HTTP (a transaction, a snapshot reload) are slower: fewer of them.
FUZZ_SERVED = settings(FUZZ, max_examples=2000 if SOAK else 40)

# Any JSON value, integers past 64 bits and non-finite numbers included (stdlib json writes them; orjson refuses).
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["gpt-4o-mini", "claude-sonnet-4-6", "text-embedding-3-small", "openai/gpt-4o-mini", ""])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)
FIELDS = ("model", "messages", "input", "stream", "stream_options", "max_tokens", "max_completion_tokens")
request_objects = st.fixed_dictionaries(
    {},
    optional={
        **{name: json_values for name in FIELDS},
        "model": st.sampled_from(["gpt-4o-mini", "claude-sonnet-4-6", "gpt-5.4", "nope"]) | st.text(max_size=300),
        "max_tokens": st.integers() | json_values,
        "max_output_tokens": st.integers() | json_values,
        "stream": st.booleans() | json_values,
    },
)


E = TypeVar("E", bound=BaseException)


def _attempt(fn: Callable[..., Any], expected: type[E], *args: Any) -> tuple[Any, E | None]:
    """fn(*args), or the `expected` exception it raised (any other exception fails the test)."""
    try:
        return fn(*args), None
    except expected as exc:
        return None, exc


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


bodies = (
    st.binary(max_size=300)
    | json_values.map(_dumps)
    | request_objects.map(_dumps)
    | st.tuples(request_objects.map(_dumps), st.binary(max_size=8)).map(lambda t: t[0][:-1] + t[1] + t[0][-1:])
)


# -- request bodies


@FUZZ
@given(api=st.sampled_from(list(Api)), raw=bodies)
def test_parse_request_answers_a_parsed_request_or_a_clear_400(api: Api, raw: bytes) -> None:
    parsed, refused = _attempt(parse_request, BadRequest, api, raw)
    if refused is not None:
        assert refused.status == 400
        assert refused.code in {"invalid_request", "missing_model", "invalid_model"}
        assert str(refused) and "\n" not in str(refused)
        return
    assert isinstance(parsed, ParsedRequest)
    assert isinstance(parsed.model, str) and 0 < len(parsed.model) <= MAX_MODEL_CHARS
    assert parsed.model == parsed.model.strip()
    assert not any(unicodedata.category(ch) == "Cc" for ch in parsed.model)  # no control characters
    assert isinstance(parsed.stream, bool) and isinstance(parsed.include_usage, bool)
    assert parsed.max_output is None or (type(parsed.max_output) is int and 1 <= parsed.max_output <= MAX_OUTPUT_LIMIT)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, str]]:
    """One runtime (embedded backend, stored provider keys) on a loop in a thread, and its key's credential.
    Module-scoped: hypothesis calls each test many times per fixture."""
    config = load_settings(home=tmp_path_factory.mktemp("fuzz-home"), config_refresh_ms=50, auth_failure_limit=0)
    credential = prepare_home(config, BASE_MANIFEST, "demo-key")
    with serving_in_thread(config) as running:
        yield running, credential


PATHS = ("/v1/chat/completions", "/v1/messages", "/v1/responses", "/v1/embeddings", "/v1/completions")


@FUZZ
@given(path=st.sampled_from(PATHS), raw=bodies)
def test_check_never_answers_5xx_and_a_refusal_changes_no_counter(
    served: tuple[Served, str], path: str, raw: bytes
) -> None:
    server, credential = served
    runtime = server.runtime
    assert runtime is not None
    req = CheckInput(
        method="POST",
        path=path,
        headers={"authorization": f"Bearer {credential}", "content-type": "application/json"},
        body=raw,
        client_ip="127.0.0.1",
        front_door="test",
    )

    async def decide() -> tuple[Any, Any, Any]:
        now = datetime.now(UTC).timestamp()
        before = await counter_snapshot(runtime, now)
        outcome = await runtime.gatekeeper.check(req)
        return before, outcome, await counter_snapshot(runtime, now)

    before, outcome, after = server.call(decide())
    if isinstance(outcome, Allow):
        return
    assert isinstance(outcome, Deny)
    assert 400 <= outcome.status < 500, (outcome.status, outcome.reason, outcome.body[:300])
    assert json.loads(outcome.body)  # the provider's error shape, always JSON
    assert after == before, outcome.reason


# -- credentials

header_values = st.text(max_size=120) | st.builds(
    lambda k, s, sep: f"{k}{sep}{s}",
    st.from_regex(_KEY_ID, fullmatch=True),
    st.text(max_size=140),
    st.sampled_from(".:"),
)
credential_headers = st.dictionaries(
    st.sampled_from([*CREDENTIAL_HEADERS, "x-other", "proxy-authorization"]),
    header_values | header_values.map(lambda v: "Bearer " + v) | header_values.map(lambda v: "bearer  " + v),
    max_size=4,
)


@FUZZ
@given(raw=header_values)
def test_parse_credential_is_none_or_a_well_formed_credential_that_round_trips(raw: str) -> None:
    credential = parse_credential(raw)
    if credential is None:
        return
    assert _KEY_ID.match(credential.key_id) and _SECRET.match(credential.secret)
    assert parse_credential(str(credential)) == credential
    assert credential.secret not in repr(credential)


@FUZZ
@given(headers=credential_headers)
def test_credentials_from_any_headers_never_raise_and_never_authenticate(
    served: tuple[Served, str], headers: dict[str, str]
) -> None:
    server, _ = served
    assert server.runtime is not None
    credential = credential_from_headers(headers)
    assert credential is None or isinstance(credential, Credential | MalformedCredential)
    outcome = authenticate(server.runtime.config.snapshot, server.runtime.app.hasher, credential, datetime.now(UTC))
    assert outcome in (AuthFailure.MISSING_CREDENTIAL, AuthFailure.INVALID_CREDENTIAL)
    assert (outcome is AuthFailure.MISSING_CREDENTIAL) == (credential is None)


def test_the_real_credential_does_authenticate(served: tuple[Served, str]) -> None:
    """The property above is not vacuous: the same call with the issued credential finds its identity."""
    server, credential = served
    assert server.runtime is not None
    for headers in ({"authorization": f"Bearer {credential}"}, {"x-api-key": credential}, {"x-api-token": credential}):
        found = authenticate(
            server.runtime.config.snapshot,
            server.runtime.app.hasher,
            credential_from_headers(headers),
            datetime.now(UTC),
        )
        assert not isinstance(found, AuthFailure), headers


def test_arbitrary_admin_tokens_never_raise() -> None:
    admin_token()
    app = open_app()
    try:
        now = datetime.now(UTC)

        @FUZZ
        @given(raw=header_values)
        def check(raw: str) -> None:
            assert verify_admin_token(app.db, app.hasher, raw, now) is None

        check()
    finally:
        app.close()


# -- manifests


def _paths(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*at, i))


PATHS_IN_EXAMPLE = [p for p in _paths(EXAMPLE) if p]


def _mutate(doc: Any, path: tuple[Any, ...], action: str, value: Any) -> Any:
    doc = json.loads(json.dumps(doc))
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "replace":
        parent[last] = value
    elif action == "delete":
        del parent[last]
    elif action == "duplicate" and isinstance(parent, list):
        parent.insert(last, json.loads(json.dumps(parent[last])))
    elif isinstance(parent, dict):
        parent[f"unknown_{last}"] = value
    return doc


mutations = st.lists(
    st.tuples(
        st.sampled_from(PATHS_IN_EXAMPLE),
        st.sampled_from(["replace", "delete", "duplicate", "add"]),
        json_values,
    ),
    min_size=1,
    max_size=3,
)


def _mutated(edits: list[tuple[tuple[Any, ...], str, Any]]) -> Any:
    doc = EXAMPLE
    for path, action, value in edits:
        try:
            doc = _mutate(doc, path, action, value)
        except (KeyError, IndexError, TypeError):  # an earlier edit removed or retyped this path
            continue
    return doc


@FUZZ
@given(edits=mutations)
def test_a_mutated_manifest_validates_or_lists_clear_problems(edits: list[tuple[tuple[Any, ...], str, Any]]) -> None:
    doc = _mutated(edits)
    manifest, refused = _attempt(validate_document, ManifestError, doc)
    if refused is not None:
        assert refused.problems
        for problem in refused.problems:
            assert isinstance(problem.path, str) and problem.message
        return
    desired_state(manifest)  # a valid manifest always has a desired state


@FUZZ
@given(text=st.text(max_size=400) | json_values.map(lambda v: json.dumps(v, allow_nan=True)))
def test_any_text_loads_or_fails_with_a_manifest_error(text: str) -> None:
    _, refused = _attempt(load_text, ConfigError, text)
    assert refused is None or (isinstance(refused, ManifestError) and refused.problems)


@pytest.fixture(scope="module")
def manifest_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, str]]:
    """The admin API over a home holding BASE_MANIFEST, and a global admin token."""
    config = load_settings(home=tmp_path_factory.mktemp("manifest-home"), config_refresh_ms=50, auth_failure_limit=0)
    prepare_home(config, BASE_MANIFEST, "demo-key")
    app = open_app(config)
    try:
        with app.db.transaction(immediate=True) as session:
            _, token = issue_admin_token(session, app.hasher, organization=None, name=None, actor="test")
    finally:
        app.close()
    with serving_in_thread(config) as running:
        yield running, str(token)


@pytest.mark.soak
@FUZZ_SERVED
@given(edits=mutations, as_yaml=st.booleans())
def test_the_admin_api_refuses_a_bad_manifest_with_422_and_changes_nothing(
    manifest_api: tuple[Served, str], edits: list[tuple[tuple[Any, ...], str, Any]], as_yaml: bool
) -> None:
    server, token = manifest_api
    runtime = server.runtime
    assert runtime is not None
    doc = _mutated(edits)
    text = yaml.safe_dump(doc) if as_yaml else json.dumps(doc, allow_nan=True)
    with runtime.app.db.read() as session:
        version = read_config_version(session)
    r = httpx.post(
        server.url + "/admin/manifest/apply",
        content=text.encode(),
        headers={**bearer(token), "content-type": "application/yaml" if as_yaml else "application/json"},
        timeout=30,
    )
    assert r.status_code < 500, r.text
    if r.status_code == 200:
        # A valid mutation was applied: put the example back so the next example starts from it.
        back = httpx.post(
            server.url + "/admin/manifest/apply",
            content=BASE_MANIFEST.encode(),
            headers={**bearer(token), "content-type": "application/yaml"},
            timeout=30,
        )
        assert back.status_code == 200, back.text
        return
    assert r.status_code in (400, 413, 415, 422), r.text
    error = r.json()["error"]
    assert error["code"] in ("invalid_manifest", "validation_failed", "bad_request") and error["message"]
    with runtime.app.db.read() as session:
        assert read_config_version(session) == version  # nothing was written
