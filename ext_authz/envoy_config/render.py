"""The whole Envoy bootstrap for a snapshot, built from envoy-data-plane's typed classes, as a dict or YAML."""

from __future__ import annotations

from typing import Any as AnyValue

import betterproto2
import yaml
from envoy_data_plane.envoy.config.accesslog.v3 import AccessLog
from envoy_data_plane.envoy.config.bootstrap.v3 import Admin, Bootstrap, BootstrapStaticResources
from envoy_data_plane.envoy.config.core.v3 import Address, SocketAddress, SubstitutionFormatString
from envoy_data_plane.envoy.config.listener.v3 import Filter, FilterChain, Listener
from envoy_data_plane.envoy.extensions.access_loggers.stream.v3 import StdoutAccessLog
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
    HttpConnectionManagerCodecType,
)
from envoy_data_plane.google.protobuf import Any, Struct

from ext_authz.envoy_config.clusters import clusters
from ext_authz.envoy_config.filters import body_buffer_limit, http_filters
from ext_authz.envoy_config.local_replies import local_reply_config
from ext_authz.envoy_config.options import RenderOptions
from ext_authz.envoy_config.routes import route_configuration
from ext_authz.names import AUTHZ_NAMESPACE
from quotagate.snapshot import Snapshot

_ACCESS_LOG_FORMAT = {
    "time": "%START_TIME%",
    "request_id": f"%DYNAMIC_METADATA({AUTHZ_NAMESPACE}:request_id)%",  # the usage event's key
    "envoy_request_id": "%REQ(X-REQUEST-ID)%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(:PATH)%",
    "status": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "upstream": "%UPSTREAM_CLUSTER%",
    "duration_ms": "%DURATION%",
    "ttfb_ms": "%RESPONSE_DURATION%",
    "bytes_in": "%BYTES_RECEIVED%",
    "bytes_out": "%BYTES_SENT%",
    "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "org": f"%DYNAMIC_METADATA({AUTHZ_NAMESPACE}:org_id)%",
    "key": f"%DYNAMIC_METADATA({AUTHZ_NAMESPACE}:key_id)%",
    "model": f"%DYNAMIC_METADATA({AUTHZ_NAMESPACE}:model)%",
    "deny_reason": f"%DYNAMIC_METADATA({AUTHZ_NAMESPACE}:deny_reason)%",
}


def render_envoy_config(snapshot: Snapshot, options: RenderOptions) -> dict[str, AnyValue]:
    """The Envoy bootstrap (snake_case field names, as in Envoy's own documentation)."""
    bootstrap = Bootstrap(
        admin=Admin(address=_address("127.0.0.1", options.admin_port)),  # loopback only: admin can stop Envoy
        static_resources=BootstrapStaticResources(
            listeners=[_listener(snapshot, options)],
            clusters=clusters(snapshot, options),
        ),
    )
    rendered: dict[str, AnyValue] = bootstrap.to_dict(casing=betterproto2.Casing.SNAKE)
    return rendered


def to_yaml(config: dict[str, AnyValue]) -> str:
    header = "# Rendered by `quotagate envoy render`; edit the manifest or the render options, not this file.\n"
    return header + yaml.safe_dump(config, sort_keys=False, width=120)


def _address(host: str, port: int) -> Address:
    return Address(socket_address=SocketAddress(address=host, port_value=port))


def _listener(snapshot: Snapshot, options: RenderOptions) -> Listener:
    manager = HttpConnectionManager(
        stat_prefix="quotagate",
        codec_type=HttpConnectionManagerCodecType.AUTO,
        route_config=route_configuration(snapshot, options),
        http_filters=http_filters(options),
        # Envoy is the edge: the client address is the peer's, not a forgeable X-Forwarded-For.
        use_remote_address=True,
        # Keep a caller's x-request-id (the gateway tags its events with it and the provider sees it); Envoy
        # generates one only when absent. The gateway's own id keys usage events, so a reused one merges nothing.
        preserve_external_request_id=True,
        local_reply_config=local_reply_config(check_over_http=bool(options.check_endpoints)),
        access_log=_access_log() if options.access_log else [],
    )
    return Listener(
        name="quotagate",
        address=_address(*options.listen),
        # Check (with_request_body) and the rewrite filter hold the whole request body.
        per_connection_buffer_limit_bytes=body_buffer_limit(options),
        filter_chains=[
            FilterChain(
                filters=[Filter(name="envoy.filters.network.http_connection_manager", typed_config=Any.pack(manager))]
            )
        ],
    )


def _access_log() -> list[AccessLog]:
    stdout = StdoutAccessLog(log_format=SubstitutionFormatString(json_format=Struct.from_dict(_ACCESS_LOG_FORMAT)))
    return [AccessLog(name="envoy.access_loggers.stdout", typed_config=Any.pack(stdout))]
