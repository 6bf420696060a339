"""One error shape for every endpoint, OpenAI-compatible so SDKs parse it:

``{"error": {"type", "code", "message", "param", "details"?}}``; ``details`` lists validation problems as
``{"path", "message"}``. Submitted values are never echoed (a body may carry a provider key).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from quotagate.errors import BackendUnavailable, ConfigError, ConflictError, NotFoundError
from quotagate.manifest.load import ManifestError, format_path

log = logging.getLogger(__name__)

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}
CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    415: "unsupported_media_type",
    422: "validation_failed",
}


class Problem(BaseModel):
    path: str
    message: str


class ErrorBody(BaseModel):
    type: str
    code: str
    message: str
    param: str | None = None
    details: list[Problem] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: list[Problem] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[Problem] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    param = details[0].path if details and len(details) == 1 else None
    body = ErrorBody(type=TYPES.get(status, "api_error"), code=code, message=message, param=param, details=details)
    return JSONResponse(
        ErrorResponse(error=body).model_dump(mode="json", exclude_none=True), status_code=status, headers=headers
    )


def _validation_problems(errors: Any) -> list[Problem]:
    problems = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            message = "unknown field"
        elif err.get("type") == "missing":
            message = "required field is missing"
        problems.append(Problem(path=format_path(loc), message=message))
    return problems


# Documented on every route: the shapes of the errors any endpoint may answer.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (401, "missing or invalid credential"),
        (404, "no such object (or not visible to this credential)"),
        (422, "invalid input; `details` lists every problem with its path"),
        (429, "too many failed authentication attempts from this address (see Retry-After)"),
        (503, "a backend is unavailable"),
    )
}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = _validation_problems(exc.errors())
        return error_response(422, "validation_failed", "The request is invalid.", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(ManifestError)
    async def _manifest(_request: Request, exc: ManifestError) -> JSONResponse:
        problems = [Problem(path=p.path, message=p.message) for p in exc.problems]
        return error_response(422, "invalid_manifest", f"The manifest has {len(problems)} error(s).", problems)

    @app.exception_handler(NotFoundError)
    async def _not_found(_request: Request, exc: NotFoundError) -> JSONResponse:
        return error_response(404, "not_found", str(exc))

    @app.exception_handler(ConflictError)
    async def _conflict(_request: Request, exc: ConflictError) -> JSONResponse:
        return error_response(409, "conflict", str(exc))

    @app.exception_handler(ConfigError)
    async def _config(_request: Request, exc: ConfigError) -> JSONResponse:
        return error_response(422, "validation_failed", str(exc))

    @app.exception_handler(BackendUnavailable)
    async def _unavailable(_request: Request, exc: BackendUnavailable) -> JSONResponse:
        log.warning("backend unavailable: %s", exc)
        return error_response(503, "backend_unavailable", "A storage backend is unavailable; try again shortly.")

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, _exc: Exception) -> JSONResponse:
        # Starlette re-raises after this response is sent, so the server logs the traceback once.
        return error_response(500, "internal_error", "Internal error.")
