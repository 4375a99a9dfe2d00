"""API errors: JSON ``{"error": {"code", "message"}, "request_id"}`` with the right status.

Every user mistake maps to a 4xx with a code a program can switch on and a message a person can act
on; a 5xx means a bug or an outage (the audit database), never bad input.
"""

from __future__ import annotations

from pneumocxr.errors import OutOfScopeError, PneumoCXRError, UnsupportedImageError


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def from_library(exc: PneumoCXRError) -> ApiError:
    """The API error for a library exception about the input (names no file: uploads have none)."""
    if isinstance(exc, OutOfScopeError):
        return ApiError(422, exc.code, exc.reason)
    if isinstance(exc, UnsupportedImageError):
        return ApiError(422, "unsupported_image", exc.reason)
    return ApiError(422, "invalid_input", str(exc))


def body(code: str, message: str, request_id: str | None) -> dict:
    return {"error": {"code": code, "message": message}, "request_id": request_id}
