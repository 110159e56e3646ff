"""The HTTP front of the server, as one ASGI middleware around LitServe's app: what every request gets
whatever its route.

In order: a request id (the client's X-Request-Id if it sent a sane one), the API key (401), the size limit
(413), JSON that parses (400), then the route; on the way out X-Model-Digest and X-Request-Id, the metrics,
and one request-log record. /health and /metrics need no key: probes and scrapers carry none.
"""

from __future__ import annotations

import hmac
import json
import re
import time
import uuid

from . import requestlog

OPEN_ROUTES = ("/health", "/metrics")
LOGGED_ROUTES = ("/predict", "/v1/chat/completions", "/v1/completions")
SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MAX_LOGGED = 64 << 10  # bytes of a response body kept in the request log


class Front:
    def __init__(self, app, *, digest: str, api_key: str | None, max_body: int, metrics, log):
        self.app, self.digest, self.api_key, self.max_body = app, digest, api_key, max_body
        self.metrics, self.log = metrics, log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route, started = scope["path"], time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        rid = given if SANE_ID.fullmatch(given) else uuid.uuid4().hex
        state = {"status": 500, "body": bytearray()}
        label = route if route in (*LOGGED_ROUTES, *OPEN_ROUTES, "/feedback", "/info") else "other"
        scope.setdefault("state", {})["request_id"] = rid

        async def reply(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-model-digest", self.digest.encode()),
                                      (b"x-request-id", rid.encode())]
            elif message["type"] == "http.response.body" and len(state["body"]) < MAX_LOGGED:
                state["body"] += message.get("body", b"")[:MAX_LOGGED]
            await send(message)

        counted = route not in OPEN_ROUTES  # a probe or a scrape is not load
        if counted:
            self.metrics.in_flight.inc()
        body = b""
        try:
            refusal = self._refuse(route, headers)
            if refusal is None and scope["method"] == "POST":
                body, refusal = await self._read_body(receive, headers)
            if refusal:
                await _json(reply, *refusal)
                return
            if scope["method"] == "POST":  # JSON whatever the client called it (curl -d says a form)
                scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"] + [
                    (b"content-type", b"application/json")]
            await self.app(scope, _replay(body, receive) if scope["method"] == "POST" else receive, reply)
        finally:
            seconds = time.perf_counter() - started
            if counted:
                self.metrics.in_flight.dec()
            self.metrics.requests.labels(label, str(state["status"])).inc()
            self.metrics.latency.labels(label).observe(seconds)
            if route in LOGGED_ROUTES:
                self.log.write({"id": rid, "time": requestlog.now(), "digest": self.digest, "route": route,
                                "status": state["status"], "latency_ms": round(seconds * 1000, 3),
                                "inputs": _parsed(body), "outputs": _parsed(bytes(state["body"]))})

    def _refuse(self, route: str, headers: dict) -> tuple[int, str] | None:
        if self.api_key is None or route in OPEN_ROUTES:
            return None
        given = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), self.api_key.encode()):
            return 401, "missing or wrong API key: send it as `Authorization: Bearer KEY` or `X-API-Key: KEY`"
        return None

    async def _read_body(self, receive, headers: dict) -> tuple[bytes, tuple[int, str] | None]:
        too_big = (413, f"the request body is larger than the limit of {self.max_body} bytes "
                        "(`modelbuild serve --max-body-bytes`)")
        try:
            if int(headers.get("content-length") or 0) > self.max_body:
                return b"", too_big
        except ValueError:
            return b"", (400, "the Content-Length header is not a number")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                return b"", too_big
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            json.loads(body)
        except ValueError as e:
            return body, (400, f"the request body is not valid JSON: {e}. Send a JSON object")
        return body, None


def _replay(body: bytes, receive_more):
    """The body already read, then the client's own messages (a stream watches them for a disconnect)."""
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return await receive_more()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}
    return receive


async def _json(send, status: int, message: str) -> None:
    body = json.dumps({"detail": {"error": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _parsed(body: bytes):
    """A body as JSON where it is, else as text (a stream of server-sent events)."""
    try:
        return json.loads(body) if body else None
    except ValueError:
        return body.decode("utf-8", "replace")
