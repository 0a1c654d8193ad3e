"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

A mistake a client can make is an :class:`ApiError` with one sentence and a 4xx status (the
runtime's :class:`~gpt2_edge.runtime.EdgeError` becomes a 400); anything else is a bug,
logged with its traceback and answered with a 500.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

# OpenAI's error types by status; its client raises a matching exception class for each status.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    500: "server_error",
    503: "server_error",
}


class ApiError(Exception):
    """A request the server refuses: a status, one sentence, and what it concerns.

    Args:
        status: the HTTP status.
        message: one sentence for the client.
        param: the body field at fault, if one is.
        code: a short machine-readable reason (e.g. ``model_not_found``).
        headers: extra response headers (``Retry-After`` on a 503).
    """

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The JSON object of an error response."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
