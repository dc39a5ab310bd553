"""API keys (stored as SHA-256 hashes, roles), a token-bucket rate limiter, webhook signing and
webhook URL validation. No I/O here except the optional key refresh from ClickHouse.

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

import hashlib
import hmac
import ipaddress
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

ROLES = ("viewer", "operator", "admin")
ROLE_RANK = {r: i for i, r in enumerate(ROLES)}
KEY_PREFIX = "ca_"


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


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
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as exc:
        raise InvalidWebhookURL(f"not a valid URL: {exc}") from None
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
    if any(c in url for c in " \r\n\t"):
        raise InvalidWebhookURL("url must not contain whitespace")
    if not allow_private:
        host = u.hostname
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


def is_public_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast
                or ip.is_unspecified)


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
