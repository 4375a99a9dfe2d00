"""Bounded resources: the upload size (an ASGI middleware) and model-slot admission.

``BodyLimit`` answers 413 from the Content-Length alone when it is too large, and stops reading a
chunked body once it passes the limit — an oversize upload never sits in memory.
``Admission`` lets ``workers`` model calls run and ``max_queue`` wait; one more gets 503 with
Retry-After at once, so a burst costs a bounded amount of memory and a client learns to back off.
A call whose request timed out (504) keeps its place until its thread really ends.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import anyio

from pneumocxr.serving.errors import ApiError


class BodyTooLarge(Exception):
    pass


def too_large(limit: int) -> ApiError:
    shown = f"{limit / (1 << 20):g} MB" if limit >= 1 << 20 else f"{limit / 1024:g} KB"
    return ApiError(
        413, "too_large", f"the upload is larger than this server's limit of {shown}; send a smaller file"
    )


class BodyLimit:
    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _too_large(scope, send, self.max_bytes)
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
        except BodyTooLarge:  # read outside the predict route (which answers 413 itself, audited)
            await _too_large(scope, send, self.max_bytes)


async def _too_large(scope, send, limit: int) -> None:
    error = too_large(limit)
    request_id = (scope.get("state") or {}).get("request_id")  # set by the app's outer middleware
    body = {"error": {"code": error.code, "message": error.message}, "request_id": request_id}
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class Admission:
    """At most ``workers`` calls run in threads at once, ``max_queue`` more wait; one more is refused.

    A call counts until its thread ends, not until its request gives up: a request that times out
    answers 504 at once, but the model call goes on in its thread, and handing its slot to the next
    request would let timed-out calls pile up threads and CPU without bound under overload — the
    very thing the queue exists to prevent.
    """

    def __init__(
        self,
        workers: int,
        max_queue: int,
        on_change: Callable[[int], None] | None = None,
        on_reject: Callable[[], None] | None = None,
    ):
        self.workers, self.capacity = workers, workers + max_queue
        self.admitted = 0  # calls admitted whose thread has not ended: waiting, running or abandoned
        self._slots = threading.Semaphore(workers)  # held by the thread itself, for as long as it runs
        self._threads = anyio.CapacityLimiter(self.capacity)  # never starves other to_thread work
        self._lock = threading.Lock()
        self.on_change = on_change or (lambda waiting: None)
        self.on_reject = on_reject or (lambda: None)

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            full = self.admitted >= self.capacity
            if not full:
                self.admitted += 1
        if full:
            self.on_reject()
            raise ApiError(503, "busy", "the server is busy; retry in a second", {"Retry-After": "1"})
        self._changed()
        state = {"started": False, "abandoned": False}

        def call() -> Any:
            with self._lock:
                if state["abandoned"]:  # the request gave up before this thread began: nothing to do
                    return None
                state["started"] = True
            try:
                with self._slots:
                    return function(*args)
            finally:
                self._leave()

        try:
            # abandon_on_cancel: a request that times out answers 504 at once (its thread finishes alone)
            return await anyio.to_thread.run_sync(call, limiter=self._threads, abandon_on_cancel=True)
        finally:
            with self._lock:
                never_began = not state["started"]
                state["abandoned"] = True
            if never_began:
                self._leave()

    def _leave(self) -> None:
        with self._lock:
            self.admitted -= 1
        self._changed()

    def _changed(self) -> None:
        self.on_change(max(0, self.admitted - self.workers))
