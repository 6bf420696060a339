"""Routes: Quotagate's HTTP side (no Check), each upstream chosen by the header Check sets, a 404 for the rest.

Before Check, a gateway request has no x-quotagate-upstream header and matches the catch-all route,
where Check runs. Check sets the header and clears the route cache, so Envoy routes again and picks
the upstream the core chose. A request Check allowed but no upstream route takes (the manifest gained
an upstream this configuration does not know yet) gets the catch-all's 404.
"""

from __future__ import annotations

from envoy_data_plane.envoy.config.core.v3 import (
    DataSource,
    HeaderValue,
    HeaderValueOption,
    HeaderValueOptionHeaderAppendAction,
)
from envoy_data_plane.envoy.config.route.v3 import (
    DirectResponseAction,
    HeaderMatcher,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)
from envoy_data_plane.envoy.type.matcher.v3 import RegexMatcher, StringMatcher

from ext_authz.envoy_config.filters import disabled_per_route
from ext_authz.envoy_config.options import RenderOptions
from ext_authz.http_contract import SUCCESS_RESPONSE_HEADERS
from ext_authz.names import AUTHZ_NAMESPACE, REWRITE_HEADER, UPSTREAM_HEADER
from quotagate.snapshot import Snapshot, UpstreamView

HTTP_SIDE_CLUSTER = "quotagate_http"
# Quotagate's own HTTP endpoints: the models list, the admin API, the dashboard, the API description.
HTTP_SIDE_PATHS = r"^/(v1/models(/.*)?|v1/sub-accounts(/.*)?|api/.*|admin/.*|dashboard(/.*)?|openapi\.json)$"
# Never sent upstream: routing marks, and accept-encoding, because metering reads usage from the
# response body as it passes and cannot read a compressed one.
_STRIPPED_UPSTREAM = [UPSTREAM_HEADER, REWRITE_HEADER, "accept-encoding"]
# Wrapped into the JSON error shape by the local reply mapper (local_replies.py).
_UNROUTED = "The gateway has no route to this request's upstream: its Envoy configuration is out of date."


def upstream_cluster(name: str) -> str:
    return f"upstream_{name}"


def route_configuration(snapshot: Snapshot, options: RenderOptions) -> RouteConfiguration:
    routes: list[Route] = []
    if options.http_side is not None:
        routes.append(
            Route(
                name="http-side",
                match=RouteMatch(safe_regex=RegexMatcher(regex=HTTP_SIDE_PATHS)),
                route=RouteAction(cluster=HTTP_SIDE_CLUSTER),
                typed_per_filter_config=disabled_per_route(),
            )
        )
    locations = [route.location for route in snapshot.routes]  # longest first
    for upstream in sorted(snapshot.upstreams.values(), key=lambda u: u.name):
        routes += [_to_upstream(upstream, location, options) for location in locations]
    routes.append(
        Route(
            name="check-then-route",
            match=RouteMatch(prefix="/"),
            direct_response=DirectResponseAction(status=404, body=DataSource(inline_string=_UNROUTED)),
        )
    )
    return RouteConfiguration(
        name="quotagate",
        virtual_hosts=[
            VirtualHost(
                name="quotagate",
                domains=["*"],
                routes=routes,
            )
        ],
    )


def _match(location: str) -> RouteMatch:
    return RouteMatch(prefix=location) if location.endswith("/") else RouteMatch(path=location)


def _to_upstream(upstream: UpstreamView, location: str, options: RenderOptions) -> Route:
    match = _match(location)
    match.headers = [HeaderMatcher(name=UPSTREAM_HEADER, string_match=StringMatcher(exact=upstream.name))]
    route = Route(
        name=f"{upstream.name} {location}",
        match=match,
        route=RouteAction(
            cluster=upstream_cluster(upstream.name),
            host_rewrite_literal=upstream.ssl_name or upstream.host,
            timeout=options.upstream_timeout,
        ),
        request_headers_to_remove=_STRIPPED_UPSTREAM,
    )
    if options.check_endpoints:
        route.response_headers_to_add = _from_check_metadata()
    return route


def _from_check_metadata() -> list[HeaderValueOption]:
    """Check over HTTP: the client's x-ratelimit-* and request id, overwriting the provider's, only when Check set
    them (an empty value is not added). The gRPC Check has ext_authz overwrite them itself (http_contract.py)."""
    return [
        HeaderValueOption(
            header=HeaderValue(key=name, value=f"%DYNAMIC_METADATA({AUTHZ_NAMESPACE}:{name})%"),
            append_action=HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
        )
        for name in SUCCESS_RESPONSE_HEADERS
    ]
