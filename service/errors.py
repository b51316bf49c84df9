"""JSON errors: every failure is ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    """An error with an HTTP status a client can act on."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} {ident!r} not found")


def conflict(message: str, details: Any = None) -> ApiError:
    return ApiError(409, "conflict", message, details)


def unavailable(message: str, details: Any = None) -> ApiError:
    return ApiError(503, "unavailable", message, details)


def invalid_field(field: str, message: str) -> ApiError:
    """A 422 in the shape of the app's request-validation errors, naming ``field``."""
    return ApiError(422, "invalid_request", f"invalid request: {field}: {message}",
                    [{"field": field, "message": message, "type": "value_error"}])


def body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "path", "query", "header")]
    return ".".join(parts) or "body"


#: pydantic's errors for a number outside a bound: NaN fails every comparison, so a NaN (or an
#: infinity, which JSON as Python parses it also lets through) gets one of these, which misleads
_BOUNDS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal", "multiple_of"})


def _non_finite(value: Any) -> str | None:
    """The JSON token of a non-finite number (``NaN``, ``Infinity``, ``-Infinity``), else None."""
    if not isinstance(value, float) or math.isfinite(value):
        return None
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(body(exc.code, exc.message, exc.details), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            loc, kind, msg = tuple(e.get("loc", ())), e.get("type", ""), e.get("msg", "")
            if kind == "json_invalid":  # loc is ("body", character offset)
                at = loc[-1] if len(loc) > 1 else "?"
                errors.append({"field": "body", "message": f"{msg} at character {at}", "type": kind})
            elif kind in _BOUNDS and (token := _non_finite(e.get("input"))) is not None:
                errors.append({"field": _field(loc), "message": f"Input should be a finite number, not {token}",
                               "type": "finite_number"})
            else:
                errors.append({"field": _field(loc), "message": msg, "type": kind})
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return JSONResponse(body("invalid_request", f"invalid request: {summary}{more}", errors), status_code=422)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _store_down(_: Request, exc: DBAPIError) -> JSONResponse:
        # the job store refused or dropped the connection (PostgreSQL restarting, a network cut, a
        # locked SQLite file): nothing was written, the client may retry; the pool reconnects by itself
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        return JSONResponse(body("store_unavailable", "the job store is unreachable; retry shortly",
                                 {"reason": reason}), status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 413: "too_large"}
        code = codes.get(exc.status_code, "http_error")
        return JSONResponse(body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))
