"""Names shared by the gRPC services and the Envoy configuration they are deployed with."""

from __future__ import annotations

from quotagate.gateway.check import UPSTREAM_HEADER

# ext_authz's dynamic metadata namespace; ext_proc filters forward it (metadata_options.forwarding_namespaces).
AUTHZ_NAMESPACE = "envoy.filters.http.ext_authz"
# Set by Check on requests whose body must be rewritten; the rewrite ext_proc filter runs only for them.
REWRITE_HEADER = "x-quotagate-rewrite"
# The gateway's own request id (the usage event's key), answered to the client on every response.
REQUEST_ID_HEADER = "x-quotagate-request-id"
# Envoy adds this to the Check request when it sent only the first max_request_bytes of the body.
PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"
# gRPC metadata of Quotagate's own metering probe stream (metering_probe.py); Envoy never sends it.
PROBE_HEADER = "x-quotagate-metering-probe"

__all__ = [
    "AUTHZ_NAMESPACE",
    "PARTIAL_BODY_HEADER",
    "PROBE_HEADER",
    "REQUEST_ID_HEADER",
    "REWRITE_HEADER",
    "UPSTREAM_HEADER",
]
