"""The part of a manifest Envoy's configuration needs (routes, upstreams), as a Snapshot, without a database."""

from __future__ import annotations

from quotagate.apis import Provider
from quotagate.manifest.schema import Manifest
from quotagate.snapshot import RouteView, Snapshot, UpstreamView


def snapshot_from_manifest(manifest: Manifest) -> Snapshot:
    gateway = manifest.deployment.gateway
    routes = sorted(
        (RouteView(r.location, Provider(r.provider), r.upstream, r.auth_fail_closed) for r in gateway.routes),
        key=lambda r: len(r.location),
        reverse=True,
    )
    upstreams = {
        u.name: UpstreamView(u.name, u.host, u.port, u.tls, u.ssl_name, u.keepalive) for u in gateway.upstreams
    }
    return Snapshot(routes=tuple(routes), upstreams=upstreams)
