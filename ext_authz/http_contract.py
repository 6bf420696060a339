"""What Envoy's ext_authz `http_service` and Quotagate's Check over HTTP (`check_http.py`) agree on.

Check over HTTP makes the same decision as the gRPC Check and has Envoy do the same things with it;
Envoy's HTTP authorization client differs from its gRPC one in four ways, and this contract bridges each
(the Envoy side is rendered in envoy_config/, the Quotagate side answers in check_http.py):

* It forwards only the request headers it is told to (ExtAuthz.allowed_headers: all of them), and not the
  client's address: Envoy adds that as CLIENT_IP_HEADER, overwriting any such header a client sent.
* A 5xx answer is an *error* to Envoy (status_on_error with Envoy's own body), not a refusal. A 5xx
  refusal (e.g. 503 limits_unavailable) is therefore answered with DENIAL_WIRE_STATUS and its real
  status in the HTTP_STATUS metadata header; a local reply mapper restores the status, leaving the
  provider-shaped body and headers as they are.
* Headers reach the upstream request only when listed (UPSTREAM_HEADERS, each overwriting the client's),
  the client's refusal only when matched (CLIENT_DENIAL_*), and dynamic metadata are strings named after
  the answer's headers: METADATA_HEADERS carry the access log's fields, the ticket (as JSON, for the
  metering filter) and HTTP_STATUS. Their names have underscores, so no client or provider header
  collides with them, and none of them leaves Envoy.
* Headers for the client of an admitted request would be *appended* to the provider's response headers;
  the gRPC Check overwrites them. So they travel as metadata too (SUCCESS_RESPONSE_HEADERS) and every
  upstream route sets them from it, overwriting, and only when present.
"""

from __future__ import annotations

from ext_authz.names import REQUEST_ID_HEADER, REWRITE_HEADER, UPSTREAM_HEADER

# Envoy's http_service.path_prefix: every Check request's path starts with it, so no client request can
# reach HEALTH_PATH (or anything else) on the Check port.
PATH_PREFIX = "/check"
HEALTH_PATH = "/health"
CLIENT_IP_HEADER = "x-quotagate-client-ip"
# Added to the authorization request by Envoy's HTTP client, not sent by the client.
ENVOY_ADDED_HEADERS = ("x-envoy-internal", "x-envoy-expected-rq-timeout-ms", CLIENT_IP_HEADER)
HEADERS_TO_REMOVE = "x-envoy-auth-headers-to-remove"

# Every header an Allow may set on the upstream request (provider credentials, request id, routing marks).
UPSTREAM_HEADERS = ("authorization", "x-api-key", "anthropic-version", "x-request-id", UPSTREAM_HEADER, REWRITE_HEADER)
# Every header a refusal may carry to the client.
CLIENT_DENIAL_EXACT = ("content-type", "x-request-id", "retry-after")
CLIENT_DENIAL_PREFIXES = ("x-ratelimit-", "x-quotagate-", "x-should-retry")
# Every header an Allow adds to the client's response (x-ratelimit-* of the tightest scope, the request id).
SUCCESS_RESPONSE_HEADERS = (
    *(f"x-ratelimit-{what}-{unit}" for unit in ("requests", "tokens") for what in ("limit", "remaining", "reset")),
    REQUEST_ID_HEADER,
)

TICKET = "ticket"
HTTP_STATUS = "http_status"
# The gRPC Check's metadata keys the access log and the local replies read, plus the ticket and the status.
METADATA_HEADERS = ("request_id", "org_id", "key_id", "model", "deny_reason", TICKET, HTTP_STATUS)

DENIAL_WIRE_STATUS = 403
OVERRIDDEN_STATUSES = (500, 502, 503, 504)


def upstream_header_allowed(name: str) -> bool:
    return name in UPSTREAM_HEADERS


def client_denial_header_allowed(name: str) -> bool:
    return name in CLIENT_DENIAL_EXACT or name.startswith(CLIENT_DENIAL_PREFIXES)
