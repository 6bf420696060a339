"""IP allowlists in Check: per key, client and project (each one that is set must allow the address),
the trusted-proxy setting, and the denied usage event."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from quotagate.gateway.outcome import Allow, Deny
from quotagate.store.snapshot_loader import load_snapshot
from tests.governance.conftest import project_of, usage_rows
from tests.support.gateway import chat_request


def allowlists(*, key: list[str] | None = None, client: list[str] | None = None, project: list[str] | None = None):  # type: ignore[no-untyped-def]
    def edit(doc: dict[str, Any]) -> None:
        p = project_of(doc)
        c = p["clients"][0]
        for target, cidrs in ((p, project), (c, client), (c["api_keys"][0], key)):
            if cidrs is not None:
                target["ip_allowlist"] = cidrs

    return edit


async def check_from(rt: Any, cred: str, ip: str | None, **headers: str) -> Allow | Deny:
    return await rt.gatekeeper.check(replace(chat_request(cred, **headers), client_ip=ip))


async def test_key_allowlist(gateway: Any) -> None:
    async with gateway(allowlists(key=["127.0.0.1/32", "2001:db8::/32"])) as (rt, cred):
        assert isinstance(await check_from(rt, cred, "127.0.0.1"), Allow)
        assert isinstance(await check_from(rt, cred, "2001:db8::42"), Allow)
        for ip in ("127.0.0.2", "2001:db9::1", None):
            out = await check_from(rt, cred, ip)
            assert isinstance(out, Deny) and (out.status, out.reason) == (403, "ip_not_allowed"), ip
        denied = [r for r in usage_rows(rt) if r.decision == "denied"]
        assert [(r.deny_reason, r.key_id, r.tags.get("client_ip")) for r in denied] == [
            ("ip_not_allowed", "demo-key", "127.0.0.2"),
            ("ip_not_allowed", "demo-key", "2001:db9::1"),
            ("ip_not_allowed", "demo-key", "unknown"),
        ]


async def test_every_level_that_has_a_list_must_allow(gateway: Any) -> None:
    edit = allowlists(project=["10.0.0.0/8"], client=["10.1.0.0/16"], key=["10.1.2.0/24", "10.9.0.0/16"])
    async with gateway(edit) as (rt, cred):
        assert isinstance(await check_from(rt, cred, "10.1.2.3"), Allow)
        assert isinstance(await check_from(rt, cred, "10.9.0.1"), Deny)  # the key allows it, the client does not
        assert isinstance(await check_from(rt, cred, "10.1.3.1"), Deny)  # the client allows it, the key does not


async def test_no_allowlist_admits_any_address(gateway: Any) -> None:
    async with gateway(lambda doc: None) as (rt, cred):
        assert isinstance(await check_from(rt, cred, None), Allow)
        assert isinstance(await check_from(rt, cred, "203.0.113.9"), Allow)


@pytest.mark.parametrize(
    ("peer", "xff", "allowed"),
    [
        ("10.0.0.5", "198.51.100.7", True),  # a trusted proxy forwards an allowed client
        ("10.0.0.5", "203.0.113.1, 198.51.100.7, 10.0.0.5", True),
        ("10.0.0.5", "198.51.100.7, 203.0.113.1", False),  # the real client is the rightmost untrusted hop
        ("203.0.113.1", "198.51.100.7", False),  # an untrusted peer cannot claim an address
        ("10.0.0.5", None, False),  # the proxy itself is not in the allowlist
    ],
)
async def test_trusted_proxies(gateway: Any, peer: str, xff: str | None, allowed: bool) -> None:
    async with gateway(allowlists(project=["198.51.100.0/24"]), trusted_proxies="10.0.0.0/8") as (rt, cred):
        headers = {"x-forwarded-for": xff} if xff else {}
        out = await check_from(rt, cred, peer, **headers)
        assert isinstance(out, Allow) is allowed


async def test_cidrs_are_parsed_once_into_the_snapshot(gateway: Any) -> None:
    async with gateway(allowlists(client=["192.0.2.0/24"])) as (rt, _):
        with rt.app.db.read() as session:
            gov = load_snapshot(session).governance
        assert gov.allowlists[("client", "client-demo")].source == ("192.0.2.0/24",)
        assert ("key", "demo-key") not in gov.allowlists
