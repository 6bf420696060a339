"""Organization isolation, from the OpenAPI document: every admin operation, with another organization's ids.

For each operation the test builds requests from its description alone: path ids, id filters in the query
(`organization`, `project_id`, `client_id`, `key_id`, `scope_id`) and object references in the body, each
pointed in turn at organization `demo`'s objects while an admin of organization `other` calls. Every one
must answer 404 (403 for the operator's own endpoints), never 200 and never 500. The same requests with the
caller's own ids must then work, so a 404 above comes from isolation and not from a malformed request.

A new endpoint is covered as soon as it is in the document; one with a body of a new shape fails here until
`sample_body` knows that shape, and one with no object reference at all until it is listed in NO_REFERENCE.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.http.conftest import Api, admin_token, bearer

# Object references a query may carry, and what they name.
QUERY_REFERENCES = ("organization", "project_id", "client_id", "key_id", "scope_id")
# The operator's endpoints: an organization admin is refused whatever it names (and learns nothing).
GLOBAL_ONLY = {
    ("POST", "/admin/organizations"),
    ("PATCH", "/admin/organizations/{organization}"),
    ("DELETE", "/admin/organizations/{organization}"),
    ("PUT", "/admin/upstreams/{provider}/credential"),
    ("POST", "/admin/manifest/plan"),
    ("POST", "/admin/manifest/apply"),
}
# Operations that name no object: what they answer is checked to be the caller's own.
NO_REFERENCE = {("GET", "/admin/me"), ("GET", "/admin/organizations")}


def sample_body(schema: str | None, ids: dict[str, str]) -> dict[str, Any] | None:
    """A valid body of `schema` whose references are `ids`' objects."""
    bodies: dict[str, dict[str, Any]] = {
        "SubAccountCreate": {"name": "isolation", "spend_cap_cents": 1, "organization": ids["organization"]},
        "OrganizationCreate": {"organization_id": "org-iso", "organization_slug": "iso", "organization_name": "x"},
        "ProjectCreate": {
            "organization": ids["organization"],
            "project_id": "proj-iso",
            "project_slug": "iso",
            "project_name": "x",
        },
        "ClientCreate": {"project_id": ids["project_id"], "client_id": "client-iso", "client_name": "x"},
        "QuotaCreate": {"scope_type": "project", "scope_id": ids["project_id"], "rpm_limit": 1},
        "KeyCreate": {"client_id": ids["client_id"]},
        "CreditCreate": {"scope_type": "project", "scope_id": ids["project_id"], "amount": "1"},
        "CredentialSet": {"api_key": "sk-isolation-test"},
        "AlertReceiverBody": {"format": "slack", "url": "https://hooks.example/isolation"},
        "AlertRuleBody": {
            "kind": "credit_balance",
            "scope_type": "project",
            "project_id": ids["project_id"],
            "below": "1",
        },
    }
    if schema is None:
        return None
    if schema.endswith("Patch") or schema in ("KeyIssue", "KeyRotate"):
        return {}  # every field optional
    assert schema in bodies, f"no sample body for schema {schema!r}: add one to sample_body"
    return bodies[schema]


def body_schema(operation: dict[str, Any]) -> str | None:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return None
    schema = content["schema"]
    refs = [schema["$ref"]] if "$ref" in schema else [s["$ref"] for s in schema.get("anyOf", []) if "$ref" in s]
    return str(refs[0].rsplit("/", 1)[1]) if refs else None  # None: a raw body (the manifest's YAML or JSON)


def fill(path: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"no id for a parameter of {path}: add it to the ids"
    return path


def admin_operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if {"AdminToken": []} in op.get("security", [])
    ]


def variants(
    method: str, path: str, op: dict[str, Any], theirs: dict[str, str], mine: dict[str, str]
) -> list[tuple[str, str, dict[str, str], dict[str, Any] | None]]:
    """(what, path, query, body): each reference slot pointed at `theirs`, the others at `mine`."""
    params = op.get("parameters", [])
    schema = body_schema(op)
    out = []
    # A PUT creates or replaces in the caller's organization: a name in its path is not another's object.
    if any(p["in"] == "path" for p in params) and method != "PUT":
        out.append(("path ids", fill(path, theirs), {}, sample_body(schema, mine)))
    for p in params:
        if p["in"] == "query" and p["name"] in QUERY_REFERENCES:
            out.append((f"?{p['name']}=", fill(path, mine), {p["name"]: theirs[p["name"]]}, sample_body(schema, mine)))
    if sample_body(schema, theirs) != sample_body(schema, mine):
        out.append(("body references", fill(path, mine), {}, sample_body(schema, theirs)))
    return out


async def send(
    http: httpx.AsyncClient, token: str, method: str, path: str, query: dict[str, str], body: Any
) -> httpx.Response:
    if path.startswith("/admin/manifest/"):
        return await http.request(method, path, content=b"deployment: {}", headers=bearer(token))
    return await http.request(method, path, params=query, json=body, headers=bearer(token))


async def objects_of(api: Api, org: str, token: str, names: tuple[str, str, str]) -> dict[str, str]:
    """A sub-account, an API-managed project quota, an alert receiver and rule of `org` (created by its admin)."""
    project, client, key = {
        "demo": ("proj-demo", "client-demo", "demo-key"),
        "other": ("proj-other", "client-other", "other-key"),
    }[org]
    sa_name, receiver, rule = names
    sa = await api.post("/v1/sub-accounts", {"name": sa_name, "spend_cap_cents": 100}, token)
    quota = await api.post("/admin/quotas", {"scope_type": "project", "scope_id": project, "rpm_limit": 100}, token)
    hook = await api.put(
        f"/admin/alerts/receivers/{receiver}", {"format": "slack", "url": "https://hooks.example/a"}, token
    )
    alert = await api.put(
        f"/admin/alerts/rules/{rule}",
        {"kind": "credit_balance", "scope_type": "project", "project_id": project, "below": "5"},
        token,
    )
    for r in (sa, quota, hook, alert):
        assert r.status_code in (200, 201), r.text
    return {
        "organization": org,
        "sa_id": sa.json()["id"],
        "project_id": project,
        "client_id": client,
        "key_id": key,
        "scope_id": project,
        "quota_id": quota.json()["quota_id"],
        "name": receiver,
        "rule_id": rule,
        "provider": "openai",
    }


async def test_an_organization_admin_gets_404_for_every_object_of_another(api: Api) -> None:
    demo_admin, other_admin = admin_token("demo"), admin_token("other")
    theirs = await objects_of(api, "demo", demo_admin, ("demo-customer", "demo-hook", "demo-spend"))
    mine = await objects_of(api, "other", other_admin, ("other-customer", "other-hook", "other-spend"))
    spec = (await api.http.get("/openapi.json")).json()
    operations = admin_operations(spec)
    assert len(operations) > 50

    leaks, baseline = [], []
    for method, path, op in operations:
        found = variants(method, path, op, theirs, mine)
        if (method, path) in GLOBAL_ONLY:
            expected = 403
            found = found or [("no reference", fill(path, mine), {}, sample_body(body_schema(op), mine))]
        elif (method, path) in NO_REFERENCE:
            continue
        else:
            expected = 404
            assert found, f"{method} {path} names no object: add it to NO_REFERENCE (and check its answer)"
        for what, url, query, body in found:
            r = await send(api.http, other_admin, method, url, query, body)
            if r.status_code != expected:
                leaks.append(f"{method} {path} ({what}): {r.status_code} {r.text[:200]}")
        baseline.append((method, path, op, expected))
    assert leaks == []

    # The same operations with the caller's own ids work (destructive ones last): the 404s were isolation.
    def last(item: tuple[str, str, dict[str, Any], int]) -> tuple[int, str]:
        method, path = item[0], item[1]
        order = {"GET": 0, "PUT": 1, "PATCH": 2, "POST": 3, "DELETE": 4}[method]
        return (5 if path.endswith("/revoke") else order, path)

    refused = []
    for method, path, op, expected in sorted(baseline, key=last):
        r = await send(api.http, other_admin, method, fill(path, mine), {}, sample_body(body_schema(op), mine))
        ok = r.status_code == 403 if expected == 403 else r.status_code < 300 or r.status_code == 409
        if not ok:
            refused.append(f"{method} {path}: {r.status_code} {r.text[:200]}")
    assert refused == []

    # What names nothing answers only about the caller's organization.
    assert (await api.get("/admin/me", other_admin)).json()["organization_id"] == "org-other"
    orgs = (await api.get("/admin/organizations", other_admin)).json()["data"]
    assert [o["organization_id"] for o in orgs] == ["org-other"]
