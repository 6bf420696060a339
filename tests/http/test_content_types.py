"""JSON bodies sent the way curl sends them: `-d '{...}'` without a content type is form-encoded on the wire,
and is read as the JSON object it is; real form fields, text and multipart bodies are a clear 415 that
changes nothing."""

from __future__ import annotations

from fastapi.routing import APIRoute

from quotagate.http.app import ROUTERS
from quotagate.http.routing import JsonBodyRoute
from tests.http.conftest import Api, bearer, two_org_manifest

FORM = {"content-type": "application/x-www-form-urlencoded"}


def test_every_route_reads_json_bodies_the_same_way() -> None:
    routes = [route for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)]
    assert routes and all(isinstance(route, JsonBodyRoute) for route in routes)
    assert any(route.body_field is not None for route in routes)


async def test_a_json_object_without_a_json_content_type_is_read_as_json(api: Api) -> None:
    headers = bearer(api.root)
    body = b'{"name": "acme-corp", "spend_cap_cents": 50000, "organization": "demo"}'
    created = await api.http.post("/v1/sub-accounts", content=body, headers=headers)  # no content type at all
    assert created.status_code == 201, created.text
    sa = created.json()
    path = f"/v1/sub-accounts/{sa['id']}"

    patched = await api.http.patch(path, content=b'{ "spend_cap_cents": 100000 }', headers={**headers, **FORM})
    assert patched.status_code == 200, patched.text
    assert patched.json()["spend_cap_cents"] == 100000
    charset = {"content-type": "application/json; charset=utf-8"}
    assert (await api.http.patch(path, content=b'{"rate_limit_rpm": 5}', headers={**headers, **charset})).json()[
        "rate_limit_rpm"
    ] == 5

    for content, content_type in (
        (b"spend_cap_cents=5", FORM["content-type"]),  # real form fields
        (b"[5]", FORM["content-type"]),  # JSON, but not an object
        (b"{not json", None),
        (b'{"spend_cap_cents": 5}', "text/plain"),
        (
            b'--x\r\ncontent-disposition: form-data; name="spend_cap_cents"\r\n\r\n5\r\n--x--\r\n',
            "multipart/form-data; boundary=x",
        ),
    ):
        extra = {"content-type": content_type} if content_type else {}
        r = await api.http.patch(path, content=content, headers={**headers, **extra})
        assert (r.status_code, r.json()["error"]["code"]) == (415, "unsupported_media_type"), (content, r.text)
        assert "must be a JSON object" in r.json()["error"]["message"]
    after = (await api.get(path)).json()
    assert (after["spend_cap_cents"], after["rate_limit_rpm"]) == (100000, 5)  # nothing changed

    # An optional body may be left out, whatever the content type says.
    issued = await api.http.post("/admin/keys/demo-key/issue", content=b"", headers={**headers, **FORM})
    assert issued.status_code == 200 and issued.json()["credential"].startswith("demo-key.")
    # The manifest endpoints take YAML or JSON text as it comes (`curl --data-binary @manifest.yaml`).
    plan = await api.http.post("/admin/manifest/plan", content=two_org_manifest(), headers={**headers, **FORM})
    assert plan.status_code == 200 and plan.json()["changes"] == []
    # Invalid JSON under a JSON content type is still a 422 with its position.
    broken = await api.http.patch(path, content=b'{"a":', headers={**headers, "content-type": "application/json"})
    assert broken.status_code == 422 and broken.json()["error"]["details"][0]["message"] == "JSON decode error"
