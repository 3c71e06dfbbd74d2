"""One HTTP request run through an ASGI app in this process, its answer as a stream of pieces.

On Ray, the router (the cluster's HTTP ingress) hands each request to a
replica through a deployment handle; the replica runs it through the very app
``voxfit serve`` serves, so every route, limit and error reads the same. What
crosses the handle is plain data: a :class:`ForwardedRequest` in, then a
:class:`ResponseStart` and the body's byte chunks out, so streamed audio flows
back as the app produces it.

A caller that stops reading (its client left, and Ray cancels the handle call)
makes the app's ``receive`` answer ``http.disconnect``: the app's own
disconnect handling stops the synthesis at the next sentence, as it does when
a client of ``voxfit serve`` leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Union


@dataclass(frozen=True)
class ForwardedRequest:
    """What the app needs of an HTTP request; picklable."""

    method: str
    path: str
    query_string: bytes = b""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    client: tuple[str, int] = ("127.0.0.1", 0)
    scheme: str = "http"

    def scope(self) -> dict[str, Any]:
        return {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": self.method, "scheme": self.scheme, "path": self.path, "raw_path": self.path.encode(),
            "root_path": "", "query_string": self.query_string, "headers": list(self.headers),
            "client": self.client, "server": ("ray-replica", 0),
        }


@dataclass(frozen=True)
class ResponseStart:
    status: int
    headers: tuple[tuple[bytes, bytes], ...] = field(default=())


Piece = Union[ResponseStart, bytes]


async def call_app(app: Any, request: ForwardedRequest) -> AsyncIterator[Piece]:
    """Run ``request`` through ``app``: yield its ResponseStart, then each non-empty body chunk."""
    out: asyncio.Queue[Any] = asyncio.Queue()
    left = asyncio.Event()
    sent_body = False
    done = object()

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        await out.put(message)

    task = asyncio.ensure_future(app(request.scope(), receive, send))
    task.add_done_callback(lambda _: out.put_nowait(done))
    try:
        while True:
            message = await out.get()
            if message is done:
                task.result()  # the app's own exception, if it raised one
                return
            if message["type"] == "http.response.start":
                yield ResponseStart(message["status"], tuple((bytes(k), bytes(v)) for k, v in message.get("headers", [])))
            elif message["type"] == "http.response.body" and message.get("body"):
                yield bytes(message["body"])
    finally:
        left.set()  # the reader is gone (or done): the app sees its client leave
        if not task.done():
            # Let the app notice and stop at its next sentence; never wait unboundedly.
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(task), timeout=5.0)
