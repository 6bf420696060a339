"""IP allowlists: CIDRs parsed once per snapshot, checked with integer masks per request.

The client address is the peer the front door reports (Envoy's ext_authz source address, the
mitmproxy client connection). Only when that peer is a trusted proxy is `X-Forwarded-For` read: right
to left, skipping trusted proxies, the first other address is the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str) -> IPNetwork:
    """A CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a single address; host bits must be zero."""
    return ipaddress.ip_network(text.strip(), strict=True)


def parse_address(text: str | None) -> IPAddress | None:
    """An address, or None if it is not one. IPv4-mapped IPv6 (`::ffff:10.0.0.1`) becomes IPv4."""
    if not text:
        return None
    try:
        addr = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@dataclass(frozen=True, slots=True)
class IpAllowlist:
    """Networks as (version, network int, mask int): a membership test is a few integer operations."""

    networks: tuple[tuple[int, int, int], ...]
    source: tuple[str, ...]  # as written, for messages and the snapshot's readers

    @classmethod
    def parse(cls, cidrs: Iterable[str]) -> IpAllowlist:
        nets = [parse_network(c) for c in cidrs]
        return cls(
            tuple((n.version, int(n.network_address), int(n.netmask)) for n in nets),
            tuple(str(n) for n in nets),
        )

    def allows(self, addr: IPAddress | None) -> bool:
        if addr is None:
            return False  # unknown or unparsable address: fail closed
        version, value = addr.version, int(addr)
        return any(v == version and value & mask == net for v, net, mask in self.networks)


def client_address(peer: str | None, forwarded_for: str | None, trusted: tuple[IPNetwork, ...]) -> IPAddress | None:
    """The request's client: the peer, unless the peer is a trusted proxy (then X-Forwarded-For decides).

    Envoy with `use_remote_address` appends the peer to X-Forwarded-For, so a trusted peer may appear
    twice; trusted hops are skipped either way. An unparsable hop ends the walk with None (deny)."""
    addr = parse_address(peer)
    if addr is None or not trusted or not _trusted(addr, trusted):
        return addr
    hops = [h for h in (forwarded_for or "").split(",") if h.strip()]
    for hop in reversed(hops):
        hop_addr = parse_address(hop)
        if hop_addr is None:
            return None
        if not _trusted(hop_addr, trusted):
            return hop_addr
        addr = hop_addr
    return addr  # every hop is a trusted proxy: the leftmost one is the client


def _trusted(addr: IPAddress, trusted: tuple[IPNetwork, ...]) -> bool:
    return any(addr.version == n.version and addr in n for n in trusted)
