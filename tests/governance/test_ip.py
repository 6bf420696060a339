"""IP allowlists and the client address behind trusted proxies."""

from __future__ import annotations

import ipaddress

import pytest

from quotagate.governance.ip import IpAllowlist, client_address, parse_address

ALLOW = IpAllowlist.parse(["10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32"])


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.1.2.3", True),
        ("11.0.0.1", False),
        ("192.168.1.7", True),
        ("192.168.1.8", False),
        ("2001:db8::1", True),
        ("2001:db9::1", False),
        ("::ffff:10.9.9.9", True),  # IPv4-mapped IPv6 is the IPv4 address
        ("::ffff:11.9.9.9", False),
        ("::a00:1", False),  # same low bits as 10.0.0.1, other family
        ("not-an-ip", False),
        (None, False),
    ],
)
def test_membership(address: str | None, allowed: bool) -> None:
    assert ALLOW.allows(parse_address(address)) is allowed


def test_host_bits_must_be_zero() -> None:
    with pytest.raises(ValueError, match="host bits"):
        IpAllowlist.parse(["10.0.0.1/8"])


TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("peer", "xff", "client"),
    [
        ("203.0.113.5", None, "203.0.113.5"),
        ("203.0.113.5", "1.2.3.4", "203.0.113.5"),  # an untrusted peer's X-Forwarded-For is ignored
        ("10.0.0.2", "1.2.3.4", "1.2.3.4"),
        ("10.0.0.2", "1.2.3.4, 10.0.0.2", "1.2.3.4"),  # Envoy appended its peer
        ("10.0.0.2", "6.6.6.6, 1.2.3.4, 10.0.0.9", "1.2.3.4"),  # spoofed left part never wins
        ("10.0.0.2", "10.0.0.3, 10.0.0.4", "10.0.0.3"),  # all trusted: the leftmost
        ("10.0.0.2", "", "10.0.0.2"),
        ("fd00::1", "2001:db8::7", "2001:db8::7"),
        ("10.0.0.2", "garbage, 10.0.0.4", None),  # unparsable hop: no client (denied)
    ],
)
def test_client_address(peer: str, xff: str | None, client: str | None) -> None:
    got = client_address(peer, xff, TRUSTED)
    assert (str(got) if got else None) == client


def test_no_trusted_proxies_means_the_peer() -> None:
    assert str(client_address("10.0.0.2", "1.2.3.4", ())) == "10.0.0.2"
