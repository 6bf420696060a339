"""Envoy's own error replies in OpenAI's error shape, so SDK clients parse them like any provider error.

Check's refusals are local replies too, already in the provider's shape; they carry `deny_reason` in
ext_authz's metadata and are left alone. Everything else Envoy answers itself (Check unreachable,
upstream connect failure or timeout, no route) gets a JSON body naming Envoy's reason.
"""

from __future__ import annotations

from envoy_data_plane.envoy.config.accesslog.v3 import (
    AccessLogFilter,
    AndFilter,
    MetadataFilter,
    ResponseFlagFilter,
)
from envoy_data_plane.envoy.config.core.v3 import SubstitutionFormatString
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    LocalReplyConfig,
    ResponseMapper,
)
from envoy_data_plane.envoy.type.matcher.v3 import (
    MetadataMatcher,
    MetadataMatcherPathSegment,
    StringMatcher,
    ValueMatcher,
    ValueMatcherNullMatch,
)
from envoy_data_plane.google.protobuf import Struct

from ext_authz.http_contract import HTTP_STATUS, OVERRIDDEN_STATUSES
from ext_authz.names import AUTHZ_NAMESPACE

_CHECK_UNAVAILABLE = "The gateway's authorization service is unavailable; try again shortly."


def local_reply_config(*, check_over_http: bool = False) -> LocalReplyConfig:
    not_a_denial = AccessLogFilter(
        # deny_reason is a string on every refusal; only an absent key matches "null" (match_if_key_not_found).
        metadata_filter=MetadataFilter(
            matcher=MetadataMatcher(
                filter=AUTHZ_NAMESPACE,
                path=[MetadataMatcherPathSegment(key="deny_reason")],
                value=ValueMatcher(null_match=ValueMatcherNullMatch()),
            ),
            match_if_key_not_found=True,
        )
    )
    check_failed = AccessLogFilter(response_flag_filter=ResponseFlagFilter(flags=["UAEX"]))
    return LocalReplyConfig(
        mappers=[
            *(_restored_statuses() if check_over_http else []),
            ResponseMapper(
                filter=AccessLogFilter(and_filter=AndFilter(filters=[not_a_denial, check_failed])),
                body_format_override=_error_format(_CHECK_UNAVAILABLE),
            ),
            ResponseMapper(filter=not_a_denial, body_format_override=_error_format("%LOCAL_REPLY_BODY%")),
        ]
    )


def _restored_statuses() -> list[ResponseMapper]:
    """Check over HTTP answers a 5xx refusal with another status and the real one in metadata
    (ext_authz/http_contract.py): put it back, leaving the provider-shaped body and headers alone."""
    return [
        ResponseMapper(
            filter=AccessLogFilter(
                metadata_filter=MetadataFilter(
                    matcher=MetadataMatcher(
                        filter=AUTHZ_NAMESPACE,
                        path=[MetadataMatcherPathSegment(key=HTTP_STATUS)],
                        value=ValueMatcher(string_match=StringMatcher(exact=str(status))),
                    ),
                    match_if_key_not_found=False,  # unset means True: every reply would match
                )
            ),
            status_code=status,
        )
        for status in OVERRIDDEN_STATUSES
    ]


def _error_format(message: str) -> SubstitutionFormatString:
    body = {"error": {"message": message, "type": "api_error", "param": None, "code": "%RESPONSE_CODE_DETAILS%"}}
    return SubstitutionFormatString(json_format=Struct.from_dict(body))
