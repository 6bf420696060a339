"""Clusters: Quotagate's gRPC workers (HTTP/2), its HTTP side, and one per manifest upstream."""

from __future__ import annotations

import ipaddress
from datetime import timedelta

from envoy_data_plane.envoy.config.cluster.v3 import (
    CircuitBreakers,
    CircuitBreakersThresholds,
    Cluster,
    ClusterDiscoveryType,
    ClusterDnsLookupFamily,
)
from envoy_data_plane.envoy.config.core.v3 import (
    Address,
    DataSource,
    HealthCheck,
    HealthCheckGrpcHealthCheck,
    HealthCheckHttpHealthCheck,
    Http1ProtocolOptions,
    Http2ProtocolOptions,
    Pipe,
    SocketAddress,
    TransportSocket,
)
from envoy_data_plane.envoy.config.endpoint.v3 import ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints
from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import (
    CertificateValidationContext,
    CommonTlsContext,
    SubjectAltNameMatcher,
    SubjectAltNameMatcherSanType,
    UpstreamTlsContext,
)
from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
    HttpProtocolOptions,
    HttpProtocolOptionsAutoHttpConfig,
    HttpProtocolOptionsExplicitHttpConfig,
)
from envoy_data_plane.envoy.type.matcher.v3 import StringMatcher
from envoy_data_plane.google.protobuf import Any

from ext_authz.envoy_config.filters import CHECK_CLUSTER, GRPC_CLUSTER, METERING_CLUSTER
from ext_authz.envoy_config.options import RenderOptions
from ext_authz.envoy_config.routes import HTTP_SIDE_CLUSTER, upstream_cluster
from ext_authz.http_contract import HEALTH_PATH
from quotagate.snapshot import Snapshot, UpstreamView

_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_CONNECT_TIMEOUT = timedelta(seconds=5)
# Every in-flight response holds one metering stream on the gRPC cluster, next to the Check calls.
# Envoy's default of 1,024 concurrent requests would start failing metering (open) past that many
# concurrent LLM streams, so the gRPC cluster's limits are raised well past any realistic load.
_GRPC_CONCURRENCY = 1_000_000


def clusters(snapshot: Snapshot, options: RenderOptions) -> list[Cluster]:
    found = [
        _grpc_cluster(GRPC_CLUSTER, options.grpc_endpoints),
        _grpc_cluster(METERING_CLUSTER, options.grpc_endpoints),
    ]
    if options.check_endpoints:
        found.append(_check_cluster(options.check_endpoints))
    if options.http_side is not None:
        found.append(_plain_cluster(HTTP_SIDE_CLUSTER, [_socket(*options.http_side)], http2=False))
    found += [_upstream(u, options.ca_file) for u in sorted(snapshot.upstreams.values(), key=lambda u: u.name)]
    return found


def endpoint_address(text: str) -> Address:
    """'host:port', or 'unix:/path' for a Unix socket (also written unix:///path, as gRPC accepts)."""
    if text.startswith("unix:"):
        return Address(pipe=Pipe(path="/" + text.removeprefix("unix:").lstrip("/")))
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"invalid gRPC endpoint {text!r}: use host:port or unix:/path")
    return _socket(host.strip("[]"), int(port))


def _socket(host: str, port: int) -> Address:
    return Address(socket_address=SocketAddress(address=host, port_value=port))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _discovery(addresses: list[Address]) -> ClusterDiscoveryType:
    """STATIC for IP addresses and Unix sockets, STRICT_DNS when a host name must be resolved."""
    names = [a for a in addresses if a.socket_address is not None and not _is_ip(a.socket_address.address)]
    if names and len(names) != len(addresses):
        raise ValueError("gRPC endpoints must be all host names or all IP addresses / Unix sockets")
    return ClusterDiscoveryType.STRICT_DNS if names else ClusterDiscoveryType.STATIC


def _load_assignment(name: str, addresses: list[Address]) -> ClusterLoadAssignment:
    return ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[LocalityLbEndpoints(lb_endpoints=[LbEndpoint(endpoint=Endpoint(address=a)) for a in addresses])],
    )


def _plain_cluster(name: str, addresses: list[Address], *, http2: bool) -> Cluster:
    config = (
        HttpProtocolOptionsExplicitHttpConfig(http2_protocol_options=Http2ProtocolOptions())
        if http2
        else HttpProtocolOptionsExplicitHttpConfig(http_protocol_options=Http1ProtocolOptions())
    )
    return Cluster(
        name=name,
        type=_discovery(addresses),
        connect_timeout=_CONNECT_TIMEOUT,
        load_assignment=_load_assignment(name, addresses),
        typed_extension_protocol_options={
            _PROTOCOL_OPTIONS: Any.pack(HttpProtocolOptions(explicit_http_config=config))
        },
    )


def _health_check(*, grpc: bool) -> HealthCheck:
    check = HealthCheck(
        timeout=timedelta(seconds=1),
        interval=timedelta(seconds=2),
        # Envoy's default (60 s) applies until a cluster first routes traffic, and it schedules the check after
        # that: a worker dying in a fresh Envoy's first minute would keep getting requests for up to a minute.
        no_traffic_interval=timedelta(seconds=2),
        unhealthy_threshold=2,
        healthy_threshold=1,
    )
    if grpc:
        check.grpc_health_check = HealthCheckGrpcHealthCheck()
    else:
        check.http_health_check = HealthCheckHttpHealthCheck(path=HEALTH_PATH)
    return check


def _unlimited(cluster: Cluster) -> Cluster:
    limit = _GRPC_CONCURRENCY
    cluster.circuit_breakers = CircuitBreakers(
        thresholds=[CircuitBreakersThresholds(max_connections=limit, max_pending_requests=limit, max_requests=limit)]
    )
    return cluster


def _grpc_cluster(name: str, endpoints: tuple[str, ...]) -> Cluster:
    if not endpoints:
        raise ValueError("at least one gRPC endpoint is needed")
    cluster = _plain_cluster(name, [endpoint_address(e) for e in endpoints], http2=True)
    # A worker that is shutting down reports NOT_SERVING and stops getting new Checks and streams.
    cluster.health_checks = [_health_check(grpc=True)]
    return _unlimited(cluster)


def _check_cluster(endpoints: tuple[str, ...]) -> Cluster:
    """Check over HTTP/1.1 keep-alive (one connection per concurrent Check), health-checked like the gRPC one."""
    cluster = _plain_cluster(CHECK_CLUSTER, [endpoint_address(e) for e in endpoints], http2=False)
    cluster.health_checks = [_health_check(grpc=False)]
    return _unlimited(cluster)


def _upstream(upstream: UpstreamView, ca_file: str) -> Cluster:
    name = upstream_cluster(upstream.name)
    address = _socket(upstream.host, upstream.port)
    cluster = Cluster(
        name=name,
        # One logical host behind DNS (the providers are anycast/CDN fronted): LOGICAL_DNS, as Envoy
        # recommends for large web services; IPv4 first, since many hosts have no IPv6 route.
        type=ClusterDiscoveryType.STATIC if _is_ip(upstream.host) else ClusterDiscoveryType.LOGICAL_DNS,
        dns_lookup_family=ClusterDnsLookupFamily.V4_PREFERRED,
        connect_timeout=_CONNECT_TIMEOUT,
        load_assignment=_load_assignment(name, [address]),
    )
    if upstream.tls:
        server_name = upstream.ssl_name or upstream.host
        tls = UpstreamTlsContext(
            sni=server_name,
            common_tls_context=CommonTlsContext(
                validation_context=CertificateValidationContext(
                    trusted_ca=DataSource(filename=ca_file),
                    match_typed_subject_alt_names=[
                        SubjectAltNameMatcher(
                            san_type=SubjectAltNameMatcherSanType.DNS, matcher=StringMatcher(exact=server_name)
                        )
                    ],
                )
            ),
        )
        cluster.transport_socket = TransportSocket(name="envoy.transport_sockets.tls", typed_config=Any.pack(tls))
        # HTTP/2 when the provider offers it (ALPN), so concurrent streams share a few connections.
        protocol = HttpProtocolOptions(
            auto_config=HttpProtocolOptionsAutoHttpConfig(
                http_protocol_options=Http1ProtocolOptions(), http2_protocol_options=Http2ProtocolOptions()
            )
        )
    else:
        protocol = HttpProtocolOptions(
            explicit_http_config=HttpProtocolOptionsExplicitHttpConfig(http_protocol_options=Http1ProtocolOptions())
        )
    cluster.typed_extension_protocol_options = {_PROTOCOL_OPTIONS: Any.pack(protocol)}
    if upstream.keepalive:
        # The manifest's keepalive bounds the connections held to the provider. Over HTTP/2 (real
        # providers) streams multiplex on them; over plain HTTP/1.1 it also bounds concurrent requests.
        cluster.circuit_breakers = CircuitBreakers(
            thresholds=[CircuitBreakersThresholds(max_connections=upstream.keepalive)]
        )
    return cluster
