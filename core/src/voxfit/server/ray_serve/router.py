"""The cluster's HTTP ingress: every request relayed to a replica of a node class, through Ray's router.

Ray Serve does the routing and the back-pressure: each node class is a
deployment with ``max_ongoing_requests`` per replica and ``max_queued_requests``
for the requests waiting on a replica; a call beyond that raises Ray's
``BackPressureError``, which is answered here exactly as ``voxfit serve``
answers a full queue (503, ``Retry-After``, OpenAI's error shape). With
several node classes, a request goes to one picked in proportion to its
estimated capacity, and to the others in turn when that one pushes back.

The router answers four routes itself, because they are about the cluster,
not one replica: ``/health``, ``/ready`` (every node class has a ready
replica), ``/v1/plan`` (every replica's plan and node, from the directory) and
``/metrics`` (the router's own counters; Ray exports each replica's through
its metrics agent). Everything else, speech included, is relayed unchanged.
"""


import asyncio
import random
import time
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, RayServeException

from voxfit.errors import one_line
from voxfit.server.app import ROUTES, key_matches, needs_key, unauthorized
from voxfit.server.errors import error_body
from voxfit.server.ray_serve import directory
from voxfit.server.ray_serve.asgi_call import ForwardedRequest, ResponseStart

app = FastAPI(title="voxfit on Ray", docs_url=None, redoc_url=None, openapi_url=None)

#: Entries older than this many seconds belong to replicas that stopped reporting (health checks every 2 s).
STALE_AFTER = 8.0
#: How long a request Ray pushed back waits before it asks once more.
BACK_PRESSURE_RETRY_S = 0.05
#: Largest request body relayed: the biggest reference-audio upload plus room for the form around it.
_FORM_ROOM = 1 << 20


def _error(status: int, message: str, code: Optional[str] = None,
           headers: Optional[dict[str, str]] = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, code=code), status_code=status, headers=headers)


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("voxfit_ray_requests", "Requests by route and status", ["route", "status"],
                                registry=self.registry)
        self.rejected = Counter("voxfit_ray_rejected", "Requests turned away by Ray's back-pressure",
                                ["node_class"], registry=self.registry)
        self.replica_failures = Counter("voxfit_ray_replica_failures", "Requests whose replica died under them",
                                        registry=self.registry)
        self.in_flight = Gauge("voxfit_ray_in_flight", "Requests being relayed", registry=self.registry)
        self.first_byte = Histogram("voxfit_ray_response_start_seconds", "Arrival to the replica's response start",
                                    buckets=(0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 120), registry=self.registry)


class _Relayed(Response):
    """The replica's response as it comes: its status and headers, then its body chunks as they arrive."""

    def __init__(self, start: ResponseStart, stream: Any, on_cut: Any) -> None:
        super().__init__()
        self.start, self.stream, self.on_cut = start, stream, on_cut

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.start.status, "headers": list(self.start.headers)})
        try:
            async for piece in self.stream:
                if isinstance(piece, bytes):
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (RayActorError, RayTaskError, RayServeException):
            # The replica died mid-stream: the headers are sent, so the client sees a cut stream, not an end.
            self.on_cut()
            raise
        finally:
            self.stream.cancel()  # a client that left: Ray cancels the replica's call at its next await


@serve.deployment
@serve.ingress(app)
class Router:
    def __init__(self, settings: Any, classes: list[dict[str, Any]], **backends: Any) -> None:
        self.settings = settings
        self.classes = classes
        for handle in backends.values():
            try:
                handle._init()  # start learning the replicas now: a cold handle queues its first requests
            except RuntimeError:
                pass  # already initialized
        self.backends = {name: handle.options(stream=True) for name, handle in backends.items()}
        self.warm: set[str] = set()
        self.weights = [max(c.get("capacity") or 1.0, 0.01) * c["replicas"] for c in classes]
        self.key = settings.api_key.encode() if settings.api_key else None
        self.metrics = _Metrics()
        self.directory = directory.handle()
        self.body_cap = max(64 * 1024, settings.max_input_chars * 8, settings.max_upload_bytes + _FORM_ROOM)

    # -- the cluster's own routes --

    def _denied(self, request: Request) -> Optional[JSONResponse]:
        """401 as on one machine when a key is set and this request does not carry it; else None."""
        given = request.headers.get("authorization", "").encode("latin-1")
        return None if self.key is None or key_matches(given, self.key) else unauthorized()

    async def _replicas(self) -> list[dict[str, Any]]:
        return await self.directory.live.remote(STALE_AFTER)

    async def _own(self, route: str, request: Request, answer: Any) -> Response:
        """A route the router answers itself: the key checked, then ``answer()``, the status counted."""
        response = self._denied(request) or await answer()
        return self._counted(route, response)

    @app.get("/health")
    async def health(self) -> Response:
        return self._counted("/health", JSONResponse({"status": "ok"}))

    @app.get("/ready")
    async def ready(self, request: Request) -> Response:
        return await self._own("/ready", request, self._readiness)

    @app.get("/v1/plan")
    async def plan(self, request: Request) -> Response:
        return await self._own("/v1/plan", request, self._plans)

    @app.get("/metrics")
    async def metrics(self, request: Request) -> Response:
        return await self._own("/metrics", request, self._exposition)

    async def _readiness(self) -> Response:
        replicas = await self._replicas()
        reasons, classes = [], {}
        for c in self.classes:
            mine = [r for r in replicas if r["node_class"] == c["name"]]
            up = [r for r in mine if r.get("ready")]
            classes[c["name"]] = {"replicas_ready": len(up), "replicas_reporting": len(mine),
                                  "replicas_wanted": c["replicas"]}
            reasons += [f"{r['replica']}: {why}" for r in mine for why in r.get("reasons", [])]
            if not up:
                reasons.append(f"node class {c['name']} has no ready replica")
        ok = not any(not v["replicas_ready"] for v in classes.values())
        return JSONResponse({"ready": ok, "reasons": reasons, "node_classes": classes},
                            status_code=200 if ok else 503)

    async def _plans(self) -> Response:
        replicas = await self._replicas()
        shown = [{k: v for k, v in r.items() if k != "voices"} | {"voices": {
            n: {k: v for k, v in voice.items() if k != "plan"} for n, voice in r["voices"].items()}}
            for r in replicas]
        first = next((r for r in replicas if r.get("ready")), replicas[0] if replicas else None)
        return JSONResponse({
            # The shape `voxfit serve` gives (one replica's plan per voice), then every replica's.
            "voices": {n: v["plan"] for n, v in first["voices"].items()} if first else {},
            "replicas": shown,
            "node_classes": self.classes,
        })

    async def _exposition(self) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- everything else: relayed --

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
    async def relay(self, request: Request, path: str) -> Response:
        arrived = time.perf_counter()
        route = request.url.path
        denied = self._denied(request) if needs_key(route) else None
        if denied is not None:  # here, not in the replica: a request without the key holds no replica's slot
            return self._counted(route, denied)
        body = await self._body(request)
        if isinstance(body, Response):
            return self._counted(route, body)
        forwarded = ForwardedRequest(
            method=request.method, path=route, query_string=request.url.query.encode(),
            headers=tuple((k, v) for k, v in request.headers.raw), body=body,
            client=(request.client.host, request.client.port) if request.client else ("127.0.0.1", 0))
        self.metrics.in_flight.inc()
        try:
            response = await self._send(forwarded, arrived)
        finally:
            self.metrics.in_flight.dec()
        return self._counted(route, response)

    def _counted(self, route: str, response: Response) -> Response:
        known = route if route in ROUTES else "other"
        self.metrics.requests.labels(known, str(response.status_code)).inc()
        return response

    async def _body(self, request: Request) -> Any:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.body_cap:
                return _error(413, f"request body over {self.body_cap} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _order(self) -> list[str]:
        """Node classes to try: one drawn in proportion to capacity first, then the rest, largest first."""
        names = [c["name"] for c in self.classes]
        if len(names) < 2:
            return names
        first = random.choices(names, weights=self.weights)[0]
        rest = sorted((n for n in names if n != first), key=lambda n: -self.weights[names.index(n)])
        return [first, *rest]

    async def _until_replicas_known(self, name: str) -> None:
        """Until Ray told this router the class's replicas (bounded): before that, requests would count as queued."""
        if name in self.warm:
            return
        handle = self.backends[name]
        for _ in range(100):
            if handle.running_replicas_populated():
                self.warm.add(name)
                return
            await asyncio.sleep(0.05)

    async def _send(self, forwarded: ForwardedRequest, arrived: float) -> Response:
        timeout = self.settings.request_timeout
        retried, pushed_back = False, set()
        order = self._order()
        while order:
            name = order[0]
            await self._until_replicas_known(name)
            stream = self.backends[name].http.remote(forwarded)
            try:
                left = max(0.1, timeout - (time.perf_counter() - arrived))
                start = await asyncio.wait_for(stream.__anext__(), timeout=left)
            except BackPressureError:
                if name not in pushed_back:
                    # Ray counts a request as queued while it is being assigned, so a burst can be refused with
                    # replicas free: ask once more after a moment before turning the client away.
                    pushed_back.add(name)
                    await asyncio.sleep(BACK_PRESSURE_RETRY_S)
                    continue
                self.metrics.rejected.labels(name).inc()
                order.pop(0)
                continue
            except asyncio.TimeoutError:
                stream.cancel()
                return _error(504, f"request timed out after {timeout:g} s (VOXFIT_REQUEST_TIMEOUT), Ray's queue "
                                   "included", code="timeout")
            except StopAsyncIteration:
                return _error(502, "the replica ended the request without an answer")
            except (RayActorError, RayTaskError, RayServeException) as exc:
                self.metrics.replica_failures.inc()
                if not retried:
                    # Nothing was sent to the client yet: once, another replica (Ray has dropped the dead one).
                    retried = True
                    continue
                return _error(503, f"the replica serving this request failed ({one_line(exc)}); Ray replaces it: "
                                   "retry", code="replica_failed", headers={"Retry-After": "1"})
            self.metrics.first_byte.observe(time.perf_counter() - arrived)
            if not isinstance(start, ResponseStart):
                stream.cancel()
                return _error(502, "the replica answered out of order")
            return _Relayed(start, stream, self.metrics.replica_failures.inc)
        waiting = self.settings.max_queue
        return _error(503, f"every replica is busy and {waiting} request(s) already wait per router "
                           "(VOXFIT_MAX_QUEUE, Ray's max_queued_requests); retry later", code="queue_full",
                      headers={"Retry-After": "1"})
