"""Bounded resources: the upload size (an ASGI middleware) and model-slot admission.

``BodyLimit`` answers 413 from the Content-Length alone when it is too large, and stops reading a
chunked body once it passes the limit — an oversize upload never sits in memory.
``Admission`` lets ``workers`` model calls run and ``max_queue`` wait; one more gets 503 with
Retry-After at once, so a burst costs a bounded amount of memory and a client learns to back off.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio

from pneumocxr.serving.errors import ApiError


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _too_large(send, self.max_bytes)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except BodyTooLarge:
            await _too_large(send, self.max_bytes)


async def _too_large(send, limit: int) -> None:
    text = f"the upload is larger than this server's limit of {limit // (1 << 20)} MB; send a smaller file"
    payload = json.dumps({"error": {"code": "too_large", "message": text}, "request_id": None}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class Admission:
    """At most ``workers`` calls run in threads at once, ``max_queue`` more wait."""

    def __init__(self, workers: int, max_queue: int, on_change: Callable[[int], None] | None = None):
        self.limiter = anyio.CapacityLimiter(workers)
        self.capacity = workers + max_queue
        self.waiting_or_running = 0
        self.on_change = on_change or (lambda waiting: None)

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        if self.waiting_or_running >= self.capacity:
            raise ApiError(503, "busy", "the server is busy; retry in a second", {"Retry-After": "1"})
        self.waiting_or_running += 1
        self.on_change(max(0, self.waiting_or_running - self.limiter.total_tokens))
        try:
            # abandon_on_cancel: a request that times out answers 504 at once (its thread finishes alone)
            return await anyio.to_thread.run_sync(
                function, *args, limiter=self.limiter, abandon_on_cancel=True
            )
        finally:
            self.waiting_or_running -= 1
            self.on_change(max(0, self.waiting_or_running - self.limiter.total_tokens))
