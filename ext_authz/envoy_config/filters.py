"""The HTTP filter chain: ext_authz (Check), the body-rewrite ext_proc, the metering ext_proc, the router.

Processing modes were chosen by measurement (envoy/README.md): every ext_proc message Envoy waits for
costs about 0.75 ms of Python round trip, per chunk when it is the response body. So:

* metering runs in observability mode: Envoy sends response headers and body chunks and never waits;
  its failures never block traffic (failure_mode_allow);
* the body rewrite (stream_options.include_usage, model prefix) waits for one buffered request body,
  and only on requests Check marked with the rewrite header: an ExtensionWithMatcher skips the
  filter for every other request;
* authorization fails closed: an unreachable or failing Check is a 503, never a pass;
* with check endpoints, Check goes over plain HTTP (`http_service`, ext_authz/http_contract.py) instead of
  gRPC: the same decision at a fraction of the round trip.
"""

from __future__ import annotations

from datetime import timedelta

from envoy_data_plane.envoy.config.core.v3 import ApiVersion, GrpcService, GrpcServiceEnvoyGrpc, HeaderValue, HttpUri
from envoy_data_plane.envoy.config.core.v3 import TypedExtensionConfig as EnvoyTypedExtensionConfig
from envoy_data_plane.envoy.extensions.common.matching.v3 import ExtensionWithMatcher
from envoy_data_plane.envoy.extensions.filters.common.matcher.action.v3 import SkipFilter
from envoy_data_plane.envoy.extensions.filters.http.ext_authz.v3 import (
    AuthorizationRequest,
    AuthorizationResponse,
    BufferSettings,
    ExtAuthz,
    ExtAuthzPerRoute,
    HttpService,
)
from envoy_data_plane.envoy.extensions.filters.http.ext_proc.v3 import (
    ExternalProcessor,
    ExtProcPerRoute,
    MetadataOptions,
    MetadataOptionsMetadataNamespaces,
    ProcessingMode,
    ProcessingModeBodySendMode,
    ProcessingModeHeaderSendMode,
)
from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import HttpFilter
from envoy_data_plane.envoy.type.matcher.v3 import HttpRequestHeaderMatchInput, ListStringMatcher, RegexMatcher
from envoy_data_plane.envoy.type.matcher.v3 import StringMatcher as EnvoyStringMatcher
from envoy_data_plane.envoy.type.v3 import HttpStatus, StatusCode
from envoy_data_plane.google.protobuf import Any
from envoy_data_plane.xds.core.v3 import TypedExtensionConfig
from envoy_data_plane.xds.type.matcher.v3 import (
    Matcher,
    MatcherMatcherList,
    MatcherMatcherListFieldMatcher,
    MatcherMatcherListPredicate,
    MatcherMatcherListPredicateSinglePredicate,
    MatcherOnMatch,
    StringMatcher,
)

from ext_authz import http_contract as contract
from ext_authz.envoy_config.options import RenderOptions
from ext_authz.names import AUTHZ_NAMESPACE, REWRITE_HEADER

GRPC_CLUSTER = "quotagate_grpc"  # Check (unless it goes over HTTP) and the rewrite filter
CHECK_CLUSTER = "quotagate_check"  # Check over HTTP (RenderOptions.check_endpoints)
# Metering streams get their own cluster (same workers): with one round-robin cluster, Check and the
# metering stream of each request alternate, and every Check would land on the same worker.
METERING_CLUSTER = "quotagate_grpc_metering"
EXT_AUTHZ = "envoy.filters.http.ext_authz"
REWRITE = "quotagate.rewrite"
METERING = "quotagate.metering"

# Check buffers the body (with_request_body) and the rewrite filter buffers it again: both need the
# whole of the largest accepted body, plus room for the part past the limit that makes the 413.
_BODY_SLACK = 64 * 1024

_SEND = ProcessingModeHeaderSendMode.SEND
_SKIP = ProcessingModeHeaderSendMode.SKIP


def body_buffer_limit(options: RenderOptions) -> int:
    return options.max_request_bytes + _BODY_SLACK


def http_filters(options: RenderOptions) -> list[HttpFilter]:
    return [
        HttpFilter(name=EXT_AUTHZ, typed_config=Any.pack(_ext_authz(options))),
        HttpFilter(name=REWRITE, typed_config=Any.pack(_rewrite_only_when_marked(options))),
        HttpFilter(name=METERING, typed_config=Any.pack(_metering())),
        HttpFilter(name="envoy.filters.http.router", typed_config=Any.pack(Router())),
    ]


def disabled_per_route() -> dict[str, Any]:
    """typed_per_filter_config of routes Envoy serves without Check or metering (Quotagate's HTTP side)."""
    return {
        EXT_AUTHZ: Any.pack(ExtAuthzPerRoute(disabled=True)),
        METERING: Any.pack(ExtProcPerRoute(disabled=True)),
    }


def _grpc(timeout: timedelta | None = None, cluster: str = GRPC_CLUSTER) -> GrpcService:
    return GrpcService(envoy_grpc=GrpcServiceEnvoyGrpc(cluster_name=cluster), timeout=timeout)


def _ext_authz(options: RenderOptions) -> ExtAuthz:
    over_http = bool(options.check_endpoints)
    authz = ExtAuthz(
        transport_api_version=ApiVersion.V3,
        with_request_body=BufferSettings(
            # One byte past the limit tells Check the body was cut (x-envoy-auth-partial-body), so the
            # client gets the provider-shaped 413 from the core instead of Envoy's bare one.
            max_request_bytes=options.max_request_bytes + 1,
            allow_partial_message=True,
            pack_as_bytes=not over_http,  # the HTTP client sends the body as is
        ),
        failure_mode_allow=False,
        status_on_error=HttpStatus(code=StatusCode.ServiceUnavailable),
        clear_route_cache=True,  # the route follows the x-quotagate-upstream header Check sets
    )
    if over_http:
        authz.http_service = _check_over_http(options)
        # The HTTP client forwards only allowed headers; Check sees all of them, as over gRPC.
        authz.allowed_headers = ListStringMatcher(patterns=[EnvoyStringMatcher(safe_regex=RegexMatcher(regex=".*"))])
    else:
        authz.grpc_service = _grpc(options.check_timeout)
    return authz


def _exact(names: tuple[str, ...]) -> list[EnvoyStringMatcher]:
    return [EnvoyStringMatcher(exact=name) for name in names]


def _check_over_http(options: RenderOptions) -> HttpService:
    """ext_authz/http_contract.py: what goes to Check over HTTP and what Envoy takes from its answer."""
    return HttpService(
        server_uri=HttpUri(uri=f"http://{CHECK_CLUSTER}", cluster=CHECK_CLUSTER, timeout=options.check_timeout),
        path_prefix=contract.PATH_PREFIX,
        authorization_request=AuthorizationRequest(
            # overwrites any such header the client sent
            headers_to_add=[
                HeaderValue(key=contract.CLIENT_IP_HEADER, value="%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%")
            ]
        ),
        authorization_response=AuthorizationResponse(
            allowed_upstream_headers=ListStringMatcher(patterns=_exact(contract.UPSTREAM_HEADERS)),
            allowed_client_headers=ListStringMatcher(
                patterns=[
                    *_exact(contract.CLIENT_DENIAL_EXACT),
                    *(EnvoyStringMatcher(prefix=p) for p in contract.CLIENT_DENIAL_PREFIXES),
                ]
            ),
            dynamic_metadata_from_headers=ListStringMatcher(
                patterns=_exact((*contract.METADATA_HEADERS, *contract.SUCCESS_RESPONSE_HEADERS))
            ),
        ),
    )


def _processor(*, mode: ProcessingMode, timeout: timedelta | None, observe: bool, cluster: str) -> ExternalProcessor:
    return ExternalProcessor(
        grpc_service=_grpc(cluster=cluster),  # no call timeout: a metering stream lives as long as the response
        processing_mode=mode,
        observability_mode=observe,
        failure_mode_allow=True,  # metering and the usage rewrite never block an authorized request
        message_timeout=timeout,
        # The ticket Check left as dynamic metadata arrives with every message of the stream.
        metadata_options=MetadataOptions(
            forwarding_namespaces=MetadataOptionsMetadataNamespaces(untyped=[AUTHZ_NAMESPACE])
        ),
    )


def _metering() -> ExternalProcessor:
    mode = ProcessingMode(
        request_header_mode=_SKIP,
        response_header_mode=_SEND,
        response_body_mode=ProcessingModeBodySendMode.STREAMED,
        response_trailer_mode=_SEND,  # a response that ends with trailers ends there
    )
    # nothing waits, so no message timeout
    metering = _processor(mode=mode, timeout=None, observe=True, cluster=METERING_CLUSTER)
    # Quotagate closes a metering stream itself once the response has ended. Envoy half-closes the
    # others (client gone, upstream reset) this long after the request ends, which is when the meter
    # learns it must charge what passed; 1 s instead of the default 5 s frees their reservation sooner.
    metering.deferred_close_timeout = timedelta(seconds=1)
    return metering


def _rewrite_only_when_marked(options: RenderOptions) -> ExtensionWithMatcher:
    # Only the body goes to Quotagate (one round trip, not two). Envoy then drops the request's
    # content-length, since the body changed and headers were not processed, and frames the new
    # body itself (chunked over HTTP/1.1, DATA frames over HTTP/2).
    mode = ProcessingMode(
        request_header_mode=_SKIP,
        request_body_mode=ProcessingModeBodySendMode.BUFFERED,
        response_header_mode=_SKIP,
    )
    rewrite = _processor(mode=mode, timeout=options.rewrite_timeout, observe=False, cluster=GRPC_CLUSTER)
    marked = MatcherMatcherListPredicateSinglePredicate(
        input=TypedExtensionConfig(
            name="rewrite-header",
            typed_config=Any.pack(HttpRequestHeaderMatchInput(header_name=REWRITE_HEADER)),
        ),
        value_match=StringMatcher(exact="1"),
    )
    skip = MatcherOnMatch(action=TypedExtensionConfig(name="skip", typed_config=Any.pack(SkipFilter())))
    unmarked = MatcherMatcherListPredicate(not_matcher=MatcherMatcherListPredicate(single_predicate=marked))
    return ExtensionWithMatcher(
        xds_matcher=Matcher(
            matcher_list=MatcherMatcherList(
                matchers=[MatcherMatcherListFieldMatcher(predicate=unmarked, on_match=skip)]
            )
        ),
        extension_config=EnvoyTypedExtensionConfig(name=REWRITE, typed_config=Any.pack(rewrite)),
    )
