"""API-key check: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (keys: ``store.keys``)."""

from __future__ import annotations

import anyio
from fastapi import Request

from pneumocxr.serving.errors import ApiError
from pneumocxr.store.keys import verify_key


def key_checker(state):
    """A FastAPI dependency returning the caller's key id (None when auth is off)."""

    async def require_key(request: Request) -> str | None:
        if not state.settings.auth:
            return None
        token = request.headers.get("x-api-key")
        authorization = request.headers.get("authorization", "")
        if token is None and authorization.lower().startswith("bearer "):
            token = authorization[7:].strip()
        if not token:
            raise ApiError(
                401,
                "unauthorized",
                "an API key is required: send 'Authorization: Bearer <key>' (create one with "
                "`pneumocxr serve keys create NAME`)",
                {"WWW-Authenticate": "Bearer"},
            )
        if state.store is None:
            raise ApiError(503, "loading", "the service is starting; retry shortly", {"Retry-After": "2"})
        key_id = await anyio.to_thread.run_sync(verify_key, state.store, token)
        if key_id is None:
            raise ApiError(
                401,
                "unauthorized",
                "this API key is not valid or was revoked",
                {"WWW-Authenticate": "Bearer"},
            )
        return key_id

    return require_key
