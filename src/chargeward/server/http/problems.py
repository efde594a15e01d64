"""Every API error has one JSON shape, with a stable snake_case code clients can branch on:

    {"error": {"code": "not_found", "message": "no release 'abc'", "field": null}}

A validation error (422) names the first bad field in dotted form (``body.scopes.0`` becomes
``scopes.0``) and lists every problem in ``fields``.  Codes in use:

    bad_request 400, unauthenticated 401, forbidden 403, totp_enrolment_required 403 (a
    privileged account without TOTP: enrol first), not_found 404,
    method_not_allowed 405, conflict 409, gone 410, too_large 413, invalid_bundle 422,
    untrusted 422, validation_error 422, rate_limited 429 (with Retry-After),
    internal_error 500, transport_error 502, unavailable 503 (with Retry-After when the
    database is busy: a write that kept losing to concurrent ones or waiting for a lock past
    ``lock_timeout``, a statement past ``statement_timeout``, or no free connection)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from chargeward.errors import (
    BundleError,
    ChargewardError,
    ConfigError,
    Conflict,
    InvalidValue,
    KeyAccessError,
    MisuseError,
    NotFound,
    SupplyChainError,
    TransportError,
    TrustError,
)
from chargeward.server.auth.accounts import Refusal
from chargeward.server.store.db import RETRY_AFTER, DatabaseBusy, unavailable

ERRORS: list[tuple[type[ChargewardError], int, str]] = [
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (BundleError, 422, "invalid_bundle"),
    (SupplyChainError, 422, "invalid_supply_chain"),
    (TrustError, 422, "untrusted"),
    (ConfigError, 503, "unavailable"),
    (KeyAccessError, 503, "unavailable"),
    (TransportError, 502, "transport_error"),
    (InvalidValue, 400, "bad_request"),
]
CODE_BY_STATUS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    413: "too_large",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    502: "transport_error",
    503: "unavailable",
}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "field": field, **extra}}
    return JSONResponse(body, status_code=status, headers=dict(headers) if headers else None)


def refusal_response(e: Refusal) -> JSONResponse:
    headers = {"Retry-After": str(e.retry_after)} if e.retry_after is not None else None
    if e.status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return error_response(e.status, e.code, str(e), field=e.field, headers=headers)


def busy_response(reason: str, retry_after: int = RETRY_AFTER) -> JSONResponse:
    """503 with Retry-After: the database could not take the request now (ADR 0031)."""
    return error_response(
        503, "unavailable", f"{reason}; try again", headers={"Retry-After": str(retry_after)}
    )


def field_name(loc: Sequence[int | str]) -> str | None:
    """``("body", "scopes", 0)`` -> ``"scopes.0"``; the request part itself is left out."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or None


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "fields": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "field": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                            "message": {"type": "string"},
                        },
                    },
                },
            },
        }
    },
}


def document(app: FastAPI) -> None:
    """The OpenAPI document tells the truth about errors: every operation may answer 4XX/5XX
    with the shape above (FastAPI's default lists a 422 body the handlers never send), and
    every operation but the public ones takes a bearer token."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = doc.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas["Problem"] = PROBLEM_SCHEMA
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        problem = {"$ref": "#/components/schemas/Problem"}
        for item in doc.get("paths", {}).values():
            for operation in item.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                for status, what in (("4XX", "Refused"), ("5XX", "Server error")):
                    responses[status] = {
                        "description": f"{what}: the error's code and message",
                        "content": {"application/json": {"schema": problem}},
                    }
        doc["security"] = [{"bearer": []}]
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    """Register the exception handlers that give every error the shape above."""

    @app.exception_handler(ChargewardError)
    async def _domain(_: Request, exc: ChargewardError) -> JSONResponse:
        if isinstance(exc, Refusal):
            return refusal_response(exc)
        if isinstance(exc, MisuseError):  # a bug: the 500 handler below answers and logs it
            raise exc
        status, code = next(
            ((s, c) for kind, s, c in ERRORS if isinstance(exc, kind)), (400, "bad_request")
        )
        return error_response(status, code, str(exc))

    @app.exception_handler(DatabaseBusy)
    @app.exception_handler(PoolTimeout)
    @app.exception_handler(DBAPIError)
    async def _database(_: Request, exc: Exception) -> JSONResponse:
        reason = unavailable(exc)
        if reason is None:  # any other database error is a fault: the 500 handler answers it
            raise exc
        return busy_response(reason, getattr(exc, "retry_after", RETRY_AFTER))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        code = CODE_BY_STATUS.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(exc.status_code, code, message, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            (field_name(e.get("loc", ())), str(e.get("msg", "invalid"))) for e in exc.errors()
        ]
        field, message = problems[0] if problems else (None, "invalid request")
        return error_response(
            422,
            "validation_error",
            f"{field}: {message}" if field else message,
            field=field,
            fields=[{"field": f, "message": m} for f, m in problems],
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises the exception after this response, so the server logs it.
        reason = unavailable(exc)  # raised in a middleware, outside the handlers above
        if reason is not None:
            return busy_response(reason)
        return error_response(500, "internal_error", "internal server error")
