"""API keys (stored as SHA-256 hashes, roles), a token-bucket rate limiter, webhook signing, webhook URL
validation, and the webhook transport that connects only to the address it checked (`PinnedTransport`).
No other I/O here except the optional key refresh from ClickHouse.

Keys are 32 random bytes (urlsafe base64), so a fast hash is enough: there is nothing to brute-force.

>>> k = new_api_key()
>>> len(hash_key(k)) == 64 and hash_key(k) != k
True
>>> sig = sign_payload("s3cret", 1700000000, b'{"a":1}')
>>> verify_signature("s3cret", "1700000000", b'{"a":1}', sig, now=1700000010)
True
>>> verify_signature("other", "1700000000", b'{"a":1}', sig, now=1700000010)
False
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import ipaddress
import re
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

ROLES = ("viewer", "operator", "admin")
ROLE_RANK = {r: i for i, r in enumerate(ROLES)}
KEY_PREFIX = "ca_"


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


MIN_ADMIN_KEY_CHARS = 32
WEAK_ADMIN_KEYS = frozenset({"change-me", "changeme", "admin", "password", "secret", "cloudarb", "test"})


def admin_key_problem(key: str | None) -> str | None:
    """Why a bootstrap admin key (CLOUDARB_ADMIN_KEY) must be refused, or None when it is acceptable (unset is
    acceptable: there is then no bootstrap admin).

    >>> admin_key_problem("change-me") is not None, admin_key_problem(new_api_key())
    (True, None)
    """
    if key is None:
        return None
    hint = "set a random secret, e.g. `openssl rand -hex 32`"
    if key.strip().lower() in WEAK_ADMIN_KEYS or len(set(key)) < 8:
        return f"CLOUDARB_ADMIN_KEY is a known default or trivial value: {hint}"
    if len(key) < MIN_ADMIN_KEY_CHARS:
        return f"CLOUDARB_ADMIN_KEY is shorter than {MIN_ADMIN_KEY_CHARS} characters: {hint}"
    return None


def role_allows(have: str, need: str) -> bool:
    return ROLE_RANK.get(have, -1) >= ROLE_RANK[need]


@dataclass(frozen=True)
class Principal:
    key_id: str
    role: str
    name: str = ""


class KeyStore:
    """sha256(key) -> Principal. Holds hashes only; the bootstrap admin key is hashed on arrival."""

    def __init__(self, client: Any = None, db: str = "cloudarb", bootstrap_admin_key: str | None = None,
                 refresh_s: float = 5.0) -> None:
        self.client, self.db, self.refresh_s = client, db, refresh_s
        self._static: dict[str, Principal] = {}
        self._loaded: dict[str, Principal] = {}
        self._loaded_at = 0.0
        self._lock = threading.Lock()
        self.inline_refresh = True  # False when a background thread calls refresh() (the API's read model does)
        if bootstrap_admin_key:
            self._static[hash_key(bootstrap_admin_key)] = Principal("bootstrap-admin", "admin", "bootstrap")

    def add_static(self, key: str, role: str, key_id: str | None = None) -> None:
        if role not in ROLE_RANK:
            raise ValueError(f"unknown role {role!r}")
        self._static[hash_key(key)] = Principal(key_id or hash_key(key)[:12], role)

    def refresh(self) -> None:
        if self.client is None:
            return
        rows = self.client.query(
            f"SELECT key_sha256, key_id, role, name FROM {self.db}.api_keys FINAL WHERE active").result_rows
        with self._lock:
            self._loaded = {r[0]: Principal(r[1], r[2], r[3]) for r in rows}
            self._loaded_at = time.monotonic()

    def lookup(self, key: str | None) -> Principal | None:
        if not key:
            return None
        h = hash_key(key)
        p = self._static.get(h)
        if p is not None:
            return p
        if self.inline_refresh and self.client is not None and time.monotonic() - self._loaded_at > self.refresh_s:
            try:
                self.refresh()
            except Exception:
                self._loaded_at = time.monotonic()
        return self._loaded.get(h)

    def create(self, role: str, name: str = "") -> tuple[str, str]:
        """A new key (returned once, never stored in clear) -> (key_id, key)."""
        if role not in ROLE_RANK:
            raise ValueError(f"unknown role {role!r}")
        key = new_api_key()
        key_id = secrets.token_hex(6)
        now = time.time()
        self.client.insert(f"{self.db}.api_keys", [[key_id, hash_key(key), role, name, True,
                                                    _dt(now), time.time_ns()]],
                           column_names=["key_id", "key_sha256", "role", "name", "active", "created_at", "version"])
        self.refresh()
        return key_id, key

    def revoke(self, key_id: str) -> bool:
        rows = self.client.query(
            f"SELECT key_sha256, role, name, created_at FROM {self.db}.api_keys FINAL "
            "WHERE key_id = {k:String} AND active", parameters={"k": key_id}).result_rows
        if not rows:
            return False
        h, role, name, created = rows[0]
        self.client.insert(f"{self.db}.api_keys", [[key_id, h, role, name, False, created, time.time_ns()]],
                           column_names=["key_id", "key_sha256", "role", "name", "active", "created_at", "version"])
        self.refresh()
        return True


def _dt(ts: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC)


class RateLimiter:
    """Token bucket per caller: `rate` requests/s sustained, `burst` at once."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, who: str, now: float | None = None) -> tuple[bool, float]:
        """(allowed, seconds until the next token)."""
        t = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(who, (self.burst, t))
            tokens = min(self.burst, tokens + (t - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[who] = (tokens - 1.0, t)
                return True, 0.0
            self._buckets[who] = (tokens, t)
            if len(self._buckets) > 100_000:  # bounded: drop the idle ones
                self._buckets = {k: v for k, v in self._buckets.items() if t - v[1] < 60}
            return False, (1.0 - tokens) / self.rate


# --- webhooks -----------------------------------------------------------------------------------

SIGNATURE_HEADER = "X-CloudArb-Signature"
TIMESTAMP_HEADER = "X-CloudArb-Timestamp"


def sign_payload(secret: str, timestamp: int, body: bytes) -> str:
    """HMAC-SHA256 over f"{timestamp}." + body, as 'sha256=<hex>'."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: str, timestamp: str, body: bytes, signature: str, now: float | None = None,
                     tolerance_s: float = 300.0) -> bool:
    """What a receiver does: recompute, compare in constant time, reject stale timestamps (replays)."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign_payload(secret, ts, body), signature)


class InvalidWebhookURL(ValueError):
    pass


def validate_webhook_url(url: str, allow_private: bool = False) -> str:
    """An absolute http(s) URL without credentials or fragment; private/loopback hosts only when allowed."""
    if not isinstance(url, str) or len(url) > 2000:
        raise InvalidWebhookURL("url must be a string of at most 2000 characters")
    if any(c <= " " or c == "\x7f" for c in url):
        raise InvalidWebhookURL("url must not contain whitespace or control characters")
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError:   # (its message quotes the input: never echoed)
        raise InvalidWebhookURL("not a valid URL (host or port)") from None
    if u.scheme not in ("http", "https"):
        raise InvalidWebhookURL("url scheme must be http or https")
    if not u.hostname:
        raise InvalidWebhookURL("url must have a host")
    if u.username or u.password:
        raise InvalidWebhookURL("url must not contain credentials")
    if u.fragment:
        raise InvalidWebhookURL("url must not contain a fragment")
    if port == 0:
        raise InvalidWebhookURL("url port must be 1..65535")
    if not allow_private:
        host = u.hostname.rstrip(".")   # ("localhost." and "10.0.0.1." name the same hosts)
        if re.fullmatch(r"(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+))*", host) and _ip(host) is None:
            raise InvalidWebhookURL("url host must not be a numeric shorthand for an address")
        if host == "localhost" or host.endswith(".localhost") or host.endswith(".local"):
            raise InvalidWebhookURL("url host must be public (set allow_private for local receivers)")
        ip = _ip(host)
        if ip is not None and not is_public_ip(ip):
            raise InvalidWebhookURL("url host must be a public address (set allow_private for local receivers)")
    return url


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


#: never a webhook target, whatever `is_global` says in this Python version: carrier-grade NAT (some clouds
#: serve metadata there), and IPv6 forms that carry an IPv4 address which the guard cannot vouch for
#: (6to4, NAT64 well-known and local-use prefixes, Teredo)
BLOCKED_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.ip_network("100.64.0.0/10"), ipaddress.ip_network("2002::/16"), ipaddress.ip_network("64:ff9b::/96"),
    ipaddress.ip_network("64:ff9b:1::/48"), ipaddress.ip_network("2001::/32"))


def is_public_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Globally routable unicast only (`is_global`, not multicast, none of BLOCKED_NETWORKS). An IPv4-mapped
    address (::ffff:a.b.c.d) is judged by its IPv4 address; IPv4-compatible ones (::a.b.c.d, deprecated) never pass.

    >>> [is_public_ip(ipaddress.ip_address(a)) for a in ("8.8.8.8", "100.64.1.1", "::ffff:10.0.0.1", "2002::1")]
    [True, False, False, False]
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public_ip(ip.ipv4_mapped)
        if int(ip) >> 32 == 0:  # ::/96: unspecified, loopback and the IPv4-compatible form
            return False
        ip = ipaddress.IPv6Address(int(ip))  # without a %scope
    if not ip.is_global or ip.is_multicast or ip.is_private or ip.is_reserved or ip.is_link_local \
            or ip.is_loopback or ip.is_unspecified:
        return False
    return not any(ip.version == net.version and ip in net for net in BLOCKED_NETWORKS)


# --- webhook delivery: resolve once, check, connect to the checked address ------------------------

#: an async resolver: (host, port) -> IP address strings (the default asks the system via getaddrinfo)
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


class BlockedAddress(httpx.ConnectError):
    """The webhook host is, or resolves to, an address that is not globally routable: never retried."""


class UnresolvableHost(httpx.ConnectError):
    """DNS gave no usable answer (retried like any network error)."""


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


_PINNED: contextvars.ContextVar[dict[tuple[str, int], str]] = contextvars.ContextVar("cloudarb_pinned_address")


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to the address the transport pinned for this (host, port) in the current task: httpcore's
    own name resolution never runs, so a second DNS answer (rebinding) cannot change where we connect. TLS
    (SNI and certificate verification) still uses the host name, as does the Host header."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        ip = _PINNED.get({}).get((host, port))
        if ip is None:
            raise httpcore.ConnectError(f"{host}:{port} was not resolved and checked before connecting")
        return await self.inner.connect_tcp(ip, port, timeout=timeout, local_address=local_address,
                                            socket_options=socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks do not use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx transport for webhooks: each request's host is resolved once (`resolver`), every answer must be a
    public address (unless `allow_private`), and the connection goes to the first answer, the one checked.
    Connections are pooled per host name, each made to a checked address. No proxies (trust_env off)."""

    def __init__(self, *, allow_private: bool = False, resolver: Resolver | None = None,
                 network_backend: httpcore.AsyncNetworkBackend | None = None, verify: ssl.SSLContext | bool = True,
                 limits: httpx.Limits | None = None, resolve_timeout_s: float = 10.0) -> None:
        limits = limits or httpx.Limits(max_connections=200)
        super().__init__(verify=verify, limits=limits, trust_env=False)
        self.allow_private, self.resolver = allow_private, resolver or system_resolver
        self.resolve_timeout_s = resolve_timeout_s
        # httpx has no public knob for the network backend: the pool is rebuilt as httpx builds it, with ours
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections, max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry, network_backend=_PinnedBackend(network_backend))

    async def resolve(self, host: str, port: int) -> str:
        """The address to connect to: `host` itself if it is an IP, else the first DNS answer, after checking
        every answer."""
        literal = _ip(host)
        if literal is not None:
            addrs = [literal]
        else:
            if not self.allow_private and (host == "localhost" or host.endswith((".localhost", ".local"))):
                raise BlockedAddress(f"{host} is a local name")
            try:
                answers = await asyncio.wait_for(self.resolver(host, port), self.resolve_timeout_s)
                addrs = [ipaddress.ip_address(a) for a in answers]
            except (OSError, TimeoutError, ValueError) as exc:
                raise UnresolvableHost(f"cannot resolve host: {type(exc).__name__}") from None
            if not addrs:
                raise UnresolvableHost("cannot resolve host: no address")
        if not self.allow_private and not all(is_public_ip(a) for a in addrs):
            raise BlockedAddress("host resolves to a non-public address")
        if literal is not None:
            return host
        first = addrs[0]
        mapped = first.ipv4_mapped if isinstance(first, ipaddress.IPv6Address) else None
        return str(mapped or first)  # ::ffff:a.b.c.d -> a.b.c.d: the IPv4 address that was checked

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.raw_host.decode("ascii")
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        ip = await self.resolve(host, port)
        token = _PINNED.set({(host, port): ip})
        try:
            return await super().handle_async_request(request)
        finally:
            _PINNED.reset(token)


def redact_url(url: str) -> str:
    """scheme://host[:port]/*** : webhook URLs often carry a token in the path or query (Slack, Teams)."""
    try:
        u = urlsplit(url)
        netloc = u.hostname or ""
        if u.port:
            netloc += f":{u.port}"
    except ValueError:
        return "***"
    return f"{u.scheme}://{netloc}" + ("/***" if (u.path not in ("", "/") or u.query) else "/")
