"""TLS to an upstream as Envoy does it: SNI and the certificate's name are the upstream's `ssl_name` (else its host).

mitmproxy names the server it dials in SNI and checks the certificate against that name. The addon's
`server_connect` hook puts the manifest's `ssl_name` there before the handshake (`upstream_server_name`), so
an upstream given as an IP address with `ssl_name: api.openai.com` works as it does behind Envoy
(ext_authz/envoy_config/clusters.py), and a certificate for another name fails the handshake.

mitmproxy answers a failed upstream connection with an HTML page of its own, which no SDK can read. So
before the first request goes to a TLS upstream, `CertificateCheck` makes one handshake of its own against
the same name with mitmproxy's trust settings; a certificate that does not verify is refused before anything
is sent, with Envoy's 503 in JSON. mitmproxy still verifies every real connection itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

import certifi

from quotagate.snapshot import Snapshot, UpstreamView

_HANDSHAKE_TIMEOUT_S = 10.0


class AmbiguousServerName(Exception):
    """Two TLS upstreams at one address want different names; mitmproxy shares one connection per address."""


def upstream_server_name(snapshot: Snapshot, address: tuple[str, int]) -> str | None:
    """The name to send in SNI and verify for a connection to `address`; None when no TLS upstream is there."""
    names = {u.ssl_name or u.host for u in snapshot.upstreams.values() if u.tls and (u.host, u.port) == address}
    if len(names) > 1:
        raise AmbiguousServerName(
            f"TLS upstreams at {address[0]}:{address[1]} name different servers ({', '.join(sorted(names))}); "
            "mitmproxy shares one connection per address, so give them one ssl_name"
        )
    return names.pop() if names else None


@dataclass(frozen=True)
class Trust:
    """mitmproxy's upstream verification options (ssl_insecure, ssl_verify_upstream_trusted_ca/_confdir)."""

    insecure: bool = False
    ca_file: str | None = None
    ca_dir: str | None = None

    def context(self) -> ssl.SSLContext:
        # mitmproxy's own default when neither is set: certifi's bundle (mitmproxy.net.tls).
        cafile = self.ca_file or (None if self.ca_dir else certifi.where())
        return ssl.create_default_context(cafile=cafile, capath=self.ca_dir)


class CertificateCheck:
    """Whether an upstream's certificate verifies for its name, asked once per upstream and name per process."""

    def __init__(self) -> None:
        self._verified: set[tuple[str, int, str]] = set()

    async def problem(self, upstream: UpstreamView, trust: Trust) -> str | None:
        """None when the request may go: plain HTTP, verification off, or a certificate valid for the name.

        A connection that cannot be made at all is left to mitmproxy (it reports that itself)."""
        if not upstream.tls or trust.insecure:
            return None
        name = upstream.ssl_name or upstream.host
        key = (upstream.host, upstream.port, name)
        if key in self._verified:
            return None
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(upstream.host, upstream.port, ssl=trust.context(), server_hostname=name),
                _HANDSHAKE_TIMEOUT_S,
            )
        except ssl.SSLCertVerificationError as exc:
            return (
                f"the certificate of {upstream.host}:{upstream.port} does not verify for {name}: {exc.verify_message}"
            )
        except ssl.SSLError as exc:
            return f"the TLS handshake with {upstream.host}:{upstream.port} as {name} failed: {exc.reason or exc}"
        except (OSError, TimeoutError):
            return None
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        self._verified.add(key)
        return None
