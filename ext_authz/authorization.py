"""The Authorization gRPC service (ext_authz Check): translate, ask the core, translate back; fail closed."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from envoy.service.auth.v3 import external_auth_pb2 as pb
from envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc

from ext_authz.check_messages import check_input, check_response, failure_response
from quotagate.gateway.outcome import CheckInput, Outcome

log = logging.getLogger(__name__)

CheckFn = Callable[[CheckInput], Awaitable[Outcome]]


class AuthorizationService(pb_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, check: CheckFn) -> None:
        self._check = check

    async def Check(self, request: pb.CheckRequest, context: Any) -> pb.CheckResponse:
        try:
            return check_response(await self._check(check_input(request)))
        except Exception:
            log.exception("Check failed; denying the request (authorization fails closed)")
            return failure_response(request)
