"""Hostile-input limits of the API: a request body cap enforced before the body is read (and before auth),
security headers on every response, 422 errors that never echo unbounded input, and the strict
(no coercion) workload model the API validates submissions with.

Both middlewares are pure ASGI: they see the request before FastAPI reads its body, and add no task or
buffer per request.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from pydantic import ConfigDict, Field

from schemas import events as _events
from schemas.placement import Interconnect, Topology

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 256 * 1024
MAX_ECHO_CHARS = 100        # one echoed value (a key, a location part) at most this long
MAX_ECHO_ITEMS = 5          # at most this many echoed values in one message
MAX_ERRORS = 10             # at most this many entries in a 422's detail
MAX_MSG_CHARS = 400         # one error message at most this long

# The dashboard, the Swagger UI page and the API: everything from this origin, no inline script or style (the
# vendored Swagger UI 5 and Chart.js 4 need neither: checked in headless Chromium with no CSP violation), no
# plugins, no framing.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"))


def env_flag(name: str, default: bool = False) -> bool:
    v = os.environ.get(name)
    if v is None or not v.strip():
        return default
    return v.strip().lower() in ("1", "true", "yes", "on")


def env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    if v is None or not v.strip():
        return default
    n = int(v)
    if n <= 0:
        raise ValueError(f"{name} must be a positive integer, got {n}")
    return n


def clip(v: object, n: int = MAX_ECHO_CHARS) -> str:
    """`v` as text of at most `n` characters (an ellipsis marks a cut)."""
    s = v if isinstance(v, str) else str(v)
    return s if len(s) <= n else s[: n - 1] + "…"


def clipped_list(values: Sequence[object], n: int = MAX_ECHO_ITEMS) -> str:
    """At most `n` values, each clipped, and how many more there were: `['a', 'b'] (+9998 more)`."""
    shown = [clip(v) for v in values[:n]]
    more = f" (+{len(values) - n} more)" if len(values) > n else ""
    return f"{shown}{more}"


def security_headers_dict() -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in SECURITY_HEADERS}


class SecurityHeadersMiddleware:
    """Adds CSP, nosniff, no-referrer and DENY framing to every HTTP response (a header the app set wins)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        async def _send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                headers = list(msg.get("headers", []))
                have = {k.lower() for k, _ in headers}
                headers.extend((k, v) for k, v in SECURITY_HEADERS if k not in have)
                msg["headers"] = headers
            await send(msg)

        await self.app(scope, receive, _send)


def too_large_body(limit: int) -> bytes:
    return json.dumps({"detail": f"request body exceeds the limit of {limit} bytes", "limit_bytes": limit},
                      separators=(",", ":")).encode()


async def _send_json(send: Send, status: int, body: bytes, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class BodyLimitMiddleware:
    """Caps a request body at `max_bytes` before any of it is read (so before auth and before parsing).

    A declared Content-Length over the cap is answered 413 at once, without reading a byte of the body, and
    the connection is closed (`Connection: close`), so the server never drains the rest. A body without a
    Content-Length (chunked) is counted as it streams in: once over the cap the request is answered 413, the
    app sees a disconnect (so it stops reading) and whatever it tries to send afterwards is dropped.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        close = [(b"connection", b"close")]
        declared: int | None = None
        for name, value in scope.get("headers", ()):
            if name.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0:
                    await _send_json(send, 400, b'{"detail":"invalid Content-Length"}', close)
                    return
        if declared is not None and declared > limit:
            await _send_json(send, 413, too_large_body(limit), close)
            return

        seen = 0
        started = False
        rejected = False

        async def _receive() -> Message:
            nonlocal seen, rejected
            if rejected:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    rejected = True
                    if not started:
                        await _send_json(send, 413, too_large_body(limit), close)
                    return {"type": "http.disconnect"}
            return msg

        async def _send(msg: Message) -> None:
            nonlocal started
            if rejected:
                return  # the 413 went out already; the app's answer to the disconnect goes nowhere
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        await self.app(scope, _receive, _send)


def duplicate_key(body: bytes) -> str | None:
    """The first key an object of this JSON body names twice (clipped), or None: none does, or the body is not
    JSON (FastAPI answers that itself).

    >>> duplicate_key(b'{"a": 1, "b": {"c": 2, "c": 3}}'), duplicate_key(b'{"a": 1}'), duplicate_key(b"{")
    ('c', None, None)
    """
    found: list[str] = []

    def pairs(kv: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(kv)
        if len(obj) < len(kv) and not found:
            seen: set[str] = set()
            for k, _ in kv:
                if k in seen:
                    found.append(k)
                    break
                seen.add(k)
        return obj

    try:
        json.loads(body, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return None
    return clip(found[0]) if found else None


class DuplicateKeysMiddleware:
    """Refuses (422) a JSON request body in which an object names a key twice. Python's parser, and so
    FastAPI, silently keeps the last value: a workload sent with two `budget_usd_per_hour` got the second.
    The body is read whole (BodyLimitMiddleware, outside this one, caps it), checked, then handed on as it
    came. Requests without a body and non-JSON bodies pass untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE") or not _json_body(scope):
            await self.app(scope, receive, send)
            return
        received: list[Message] = []
        while True:
            msg = await receive()
            received.append(msg)
            if msg["type"] != "http.request" or not msg.get("more_body", False):
                break
        key = duplicate_key(b"".join(m.get("body", b"") for m in received if m["type"] == "http.request"))
        if key is not None:
            detail = [{"loc": ["body"], "msg": f"duplicate key {key!r} in a JSON object", "type": "json_invalid"}]
            await _send_json(send, 422, json.dumps({"detail": detail}).encode())
            return
        replay = iter(received)

        async def _receive() -> Message:
            return next(replay, None) or await receive()

        await self.app(scope, _receive, send)


def _json_body(scope: Scope) -> bool:
    """Whether FastAPI would read the request's body as JSON (a JSON content type, or none)."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-type":
            return b"json" in value.lower()
    return True


def bounded_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """A 422's detail: location, message and type of at most MAX_ERRORS errors, never the input itself, each
    location part and message clipped; a last entry counts the errors left out."""
    out: list[dict[str, Any]] = []
    for e in errors[:MAX_ERRORS]:
        loc = [p if isinstance(p, int) else clip(p) for p in e.get("loc", ())]
        out.append({"loc": loc, "msg": clip(e.get("msg", ""), MAX_MSG_CHARS), "type": clip(e.get("type", ""))})
    if len(errors) > MAX_ERRORS:
        out.append({"loc": [], "msg": f"{len(errors) - MAX_ERRORS} more errors not shown", "type": "too_many_errors"})
    return out


class WorkloadSpec(_events.WorkloadSpec):
    """The API's view of `schemas.events.WorkloadSpec`: the same fields, bounds and validators, validated
    strictly (no "2" or true for an integer, no "true" for a boolean; an integer is still a valid number).
    Named like the schema's model so the OpenAPI document keeps its component name; `to_spec()` gives the
    schema's model for the event."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    # enums as their JSON strings: FastAPI validates the parsed body in Python mode, where a strict enum field
    # accepts only the Enum object itself ("gang" would be refused)
    topology: Topology = Field(default=Topology.GANG, strict=False,
                               description=_events.WorkloadSpec.model_fields["topology"].description)
    interconnect: Interconnect = Field(default=Interconnect.ANY, strict=False,
                                       description=_events.WorkloadSpec.model_fields["interconnect"].description)

    def to_spec(self) -> _events.WorkloadSpec:
        return _events.WorkloadSpec.model_validate(self.model_dump())
