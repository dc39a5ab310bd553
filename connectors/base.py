"""The shared source base: rate limit, retries with backoff, circuit breaker, edge validation, change filter.

A `Source` turns one provider's API into normalised market events. Its `fetch()` yields events (or
`Reject`s with a reason); `poll()` runs one fetch through the guards below and returns only changes:

- rate limit: at most `rate_per_s` requests a second per source (`RateLimiter`, token bucket);
- retries: 429, 5xx and transport errors are retried with exponential backoff and jitter (tenacity),
  honouring `Retry-After`, and counted (`cloudarb_connector_retries_total`);
- bad input (malformed JSON, missing fields, non-positive / NaN / absurd prices, a price 100x or 1/100 of
  the last one unless confirmed on 3 consecutive polls, unknown regions or GPU names) is rejected with a
  logged, counted reason (`cloudarb_connector_rejections_total`), never raised and never emitted;
- change filter: a quote equal to the last one emitted for the same offer is dropped;
- every event carries the quote's own time (`quoted_at` / `occurred_at`) and `observed_at` (when we saw it).

The circuit breaker lives in the runner (connectors/runner.py): one dead provider never stalls the others.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import re
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
from prometheus_client import Counter as PromCounter
from pydantic import ValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from schemas.events import CapacityObserved, InterruptionKind, InterruptionObserved, PriceObserved, deterministic_id
from schemas.offers import Market, OfferKey

log = logging.getLogger(__name__)

MarketEvent = PriceObserved | CapacityObserved | InterruptionObserved

EVENTS = PromCounter("cloudarb_connector_events", "events emitted by connectors", ["provider", "event_type"])
REJECTIONS = PromCounter("cloudarb_connector_rejections", "vendor records rejected at the edge",
                         ["provider", "reason"])
RETRIES = PromCounter("cloudarb_connector_retries", "retried requests (429, 5xx, transport)", ["provider"])
POLL_FAILURES = PromCounter("cloudarb_connector_poll_failures", "polls that failed after retries", ["provider"])

MAX_JUMP = 100.0  # a price 100x (or 1/100) of the last accepted one for the same offer is rejected ...
JUMP_CONFIRM = 3  # ... unless the same new price comes back on this many consecutive polls


@dataclass(frozen=True, slots=True)
class Reject:
    """A vendor record we will not emit. `reason` is a short, stable category; `detail` is free text."""

    reason: str
    detail: str = ""


class TransientError(Exception):
    """Worth retrying: 429, 5xx, a transport error."""

    def __init__(self, msg: str, retry_after_s: float | None = None) -> None:
        super().__init__(msg)
        self.retry_after_s = retry_after_s


class SourceError(Exception):
    """The poll failed (after retries, or for a non-retryable reason such as 401 or a non-JSON page)."""


@dataclass
class SourceStats:
    polls: int = 0
    emitted: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    unchanged: int = 0
    retries: int = 0
    failures: int = 0

    @property
    def events(self) -> int:
        return sum(self.emitted.values())


class RateLimiter:
    """Token bucket: `rate_per_s` sustained, `burst` at once. `acquire()` blocks until a token is free."""

    def __init__(self, rate_per_s: float, burst: int = 1, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be > 0")
        self.rate, self.burst = rate_per_s, max(1, burst)
        self._tokens = float(self.burst)
        self._clock, self._sleep = clock, sleep
        self._t = clock()
        self._lock = threading.Lock()
        self.waited_s = 0.0

    def acquire(self) -> None:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._t) * self.rate)
            self._t = now
            if self._tokens < 1:
                wait = (1 - self._tokens) / self.rate
                self.waited_s += wait
                self._sleep(wait)
                self._t = self._clock()
                self._tokens = 0.0
            else:
                self._tokens -= 1


def _retry_after(resp: httpx.Response) -> float | None:
    v = resp.headers.get("retry-after")
    if not v:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        try:
            dt = email.utils.parsedate_to_datetime(v)
            return max(0.0, (dt - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


class Source(ABC):
    """One provider (or one API of a provider). Subclasses implement `fetch()`.

    `poll_interval_s` is the live cadence (chosen within the provider's documented rate limit so a price
    change reaches the topic within 60 s where the API allows it); `rate_per_s` bounds requests.
    """

    name: ClassVar[str] = "base"
    provider: ClassVar[str] = "base"
    poll_interval_s: ClassVar[float] = 60.0
    rate_per_s: ClassVar[float] = 1.0
    max_attempts: ClassVar[int] = 5
    #: region names this source may emit; None = any name that passes the OfferKey pattern
    known_regions: Collection[str] | None = None

    def __init__(self, *, env: Mapping[str, str] | None = None, clock: Callable[[], datetime] | None = None,
                 retry_wait_max_s: float = 30.0, retry_wait_min_s: float = 0.5, rate_per_s: float | None = None
                 ) -> None:
        import os

        self.env: Mapping[str, str] = dict(os.environ) if env is None else env
        self.stats = SourceStats()
        self._now = clock or (lambda: datetime.now(UTC))
        rate = rate_per_s or self.rate_per_s
        self._limiter = RateLimiter(rate, burst=max(1, int(rate)))
        self._last: dict[str, Any] = {}
        self._last_price: dict[str, float] = {}
        self._jumps: dict[str, tuple[float, int]] = {}
        self._warned: set[str] = set()
        self._retry_wait = (retry_wait_min_s, retry_wait_max_s)

    # --- to implement -------------------------------------------------------------------------------

    @classmethod
    def missing_credentials(cls, env: Mapping[str, str]) -> str | None:
        """None when the source can run with this environment, else one line saying what is missing."""
        return None

    @abstractmethod
    def fetch(self) -> Iterable[MarketEvent | Reject]:
        """One poll of the provider, normalised. May raise TransientError / SourceError."""

    def close(self) -> None:
        """Release clients: every httpx.Client this source holds (subclasses add their own)."""
        for v in list(vars(self).values()):
            if isinstance(v, httpx.Client):
                v.close()

    # --- the guarded poll ---------------------------------------------------------------------------

    def poll(self) -> list[MarketEvent]:
        """One fetch through the guards: only new, valid, changed events come out."""
        self.stats.polls += 1
        out: list[MarketEvent] = []
        for item in self.fetch():
            if isinstance(item, Reject):
                self.reject(item.reason, item.detail)
                continue
            if isinstance(item, PriceObserved):
                bad = self._price_guard(item)
                if bad is not None:
                    self.reject(bad.reason, bad.detail)
                    continue
            if not self._changed(item):
                self.stats.unchanged += 1
                continue
            self.stats.emitted[item.event_type] += 1
            EVENTS.labels(self.provider, item.event_type).inc()
            out.append(item)
        return out

    def reject(self, reason: str, detail: str = "") -> None:
        self.stats.rejected[reason] += 1
        REJECTIONS.labels(self.provider, reason).inc()
        key = f"{reason}|{detail}"
        if key not in self._warned and len(self._warned) < 10_000:
            self._warned.add(key)
            log.warning("%s: rejected (%s) %s", self.name, reason, detail)
        else:
            log.debug("%s: rejected (%s) %s", self.name, reason, detail)

    def _price_guard(self, e: PriceObserved) -> Reject | None:
        k = e.offer.key
        last = self._last_price.get(k)
        p = e.usd_per_hour
        if last is not None and (p > last * MAX_JUMP or p < last / MAX_JUMP):
            # a one-off outlier is rejected; the same new level on JUMP_CONFIRM consecutive polls is a real shift
            seen, n = self._jumps.get(k, (p, 0))
            n = n + 1 if seen == p else 1
            self._jumps[k] = (p, n)
            if n < JUMP_CONFIRM:
                return Reject("price_jump", f"{k}: {p} vs last {last}")
            log.warning("%s: %s: price level %s vs %s confirmed on %d polls; accepted", self.name, k, p, last, n)
        self._jumps.pop(k, None)
        self._last_price[k] = p
        return None

    def _changed(self, e: MarketEvent) -> bool:
        v: object
        if isinstance(e, PriceObserved):
            k, v = f"p|{e.offer.key}", e.usd_per_hour
        elif isinstance(e, CapacityObserved):
            k, v = f"c|{e.offer.key}", (e.available, e.available_instances, e.capacity_score)
        else:
            if e.kind != InterruptionKind.FREQUENCY:
                k, v = f"i|{e.event_id}", True  # each warning/preemption once
            else:
                k, v = f"f|{e.offer.key}", (e.frequency_band, e.interruption_probability_per_hour)
        if self._last.get(k) == v:
            return False
        self._last[k] = v
        return True

    # --- helpers for subclasses ---------------------------------------------------------------------

    def now(self) -> datetime:
        return self._now()

    def offer(self, *, region: str, instance_type: str, gpu_model: str | None, gpus: int | None, market: Market,
              zone: str = "", raw_gpu: str = "") -> OfferKey | Reject:
        """A validated offer key, or a Reject saying why (unknown GPU or region, bad field)."""
        if gpu_model is None:
            return Reject("unknown_gpu", f"{raw_gpu or instance_type!r}")
        if self.known_regions is not None and region not in self.known_regions:
            return Reject("unknown_region", repr(region))
        if not isinstance(gpus, int) or gpus < 1:
            return Reject("bad_gpu_count", f"{instance_type}: {gpus!r}")
        try:
            return OfferKey(provider=self.provider, region=region, zone=zone, instance_type=instance_type,
                            gpu_model=gpu_model, gpus_per_instance=gpus, market=market)
        except ValidationError as exc:
            return Reject("bad_offer", str(exc.errors(include_url=False)[0].get("msg")))

    def price(self, offer: OfferKey | Reject, usd_per_hour: Any, quoted_at: datetime | None, source: str,
              *id_parts: object) -> PriceObserved | Reject:
        if isinstance(offer, Reject):
            return offer
        p = to_price(usd_per_hour)
        if isinstance(p, Reject):
            return Reject(p.reason, f"{offer.key}: {p.detail}")
        observed = self.now()
        quoted = quoted_at or observed
        try:
            return PriceObserved(event_id=deterministic_id(self.name, offer.key, quoted.isoformat(), p, *id_parts),
                                 offer=offer, usd_per_hour=p, quoted_at=quoted, observed_at=observed,
                                 source=source[:200])
        except ValidationError as exc:
            return Reject("bad_price", f"{offer.key}: {exc.errors(include_url=False)[0].get('msg')}")

    def capacity(self, offer: OfferKey | Reject, available: bool, quoted_at: datetime | None, source: str,
                 available_instances: int | None = None, capacity_score: float | None = None
                 ) -> CapacityObserved | Reject:
        if isinstance(offer, Reject):
            return offer
        observed = self.now()
        quoted = quoted_at or observed
        try:
            return CapacityObserved(
                event_id=deterministic_id(self.name, "cap", offer.key, quoted.isoformat(), available,
                                          available_instances, capacity_score),
                offer=offer, available=available, available_instances=available_instances,
                capacity_score=capacity_score, quoted_at=quoted, observed_at=observed, source=source[:200])
        except ValidationError as exc:
            return Reject("bad_capacity", f"{offer.key}: {exc.errors(include_url=False)[0].get('msg')}")

    def interruption(self, offer: OfferKey | Reject, kind: InterruptionKind, occurred_at: datetime, source: str,
                     *, instance_id: str | None = None, band: int | None = None,
                     probability: float | None = None, id_parts: tuple[object, ...] = ()
                     ) -> InterruptionObserved | Reject:
        if isinstance(offer, Reject):
            return offer
        try:
            return InterruptionObserved(
                event_id=deterministic_id(self.name, "int", offer.key, kind.value, occurred_at.isoformat(),
                                          instance_id, band, *id_parts),
                offer=offer, kind=kind, occurred_at=occurred_at, observed_at=self.now(), source=source[:200],
                instance_id=instance_id, frequency_band=band, interruption_probability_per_hour=probability)
        except ValidationError as exc:
            return Reject("bad_interruption", f"{offer.key}: {exc.errors(include_url=False)[0].get('msg')}")

    # --- HTTP with rate limit and retries -----------------------------------------------------------

    def retrying(self) -> Retrying:
        def count(rs: RetryCallState) -> None:
            self.stats.retries += 1
            RETRIES.labels(self.provider).inc()
            exc = rs.outcome.exception() if rs.outcome else None
            log.info("%s: retry %d after %s", self.name, rs.attempt_number, exc)

        lo, hi = self._retry_wait
        backoff = wait_random_exponential(multiplier=lo, max=hi)

        def wait(rs: RetryCallState) -> float:
            exc = rs.outcome.exception() if rs.outcome else None
            ra = exc.retry_after_s if isinstance(exc, TransientError) else None
            return min(hi, ra) if ra is not None else float(backoff(rs))

        return Retrying(retry=retry_if_exception(lambda e: isinstance(e, TransientError)),
                        stop=stop_after_attempt(self.max_attempts), wait=wait, before_sleep=count, reraise=True)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Rate-limited, retried call of `fn` (which raises TransientError for retryable failures)."""
        def once() -> Any:
            self._limiter.acquire()
            return fn()

        return self.retrying()(once)

    def http_json(self, client: httpx.Client, method: str, url: str, **kw: Any) -> Any:
        """An HTTP request returning parsed JSON; 429/5xx/transport errors retried; others raise SourceError."""
        def once() -> Any:
            try:
                resp = client.request(method, url, **kw)
            except httpx.TransportError as exc:
                raise TransientError(redact_secrets(f"{type(exc).__name__}: {exc}")) from exc
            if resp.status_code == 429 or resp.status_code >= 500:
                raise TransientError(redact_secrets(f"HTTP {resp.status_code} from {url}"), _retry_after(resp))
            if resp.status_code >= 400:
                raise SourceError(redact_secrets(f"HTTP {resp.status_code} from {url}: {resp.text[:200]}"))
            try:
                return json.loads(resp.content)
            except ValueError as exc:
                self.reject("malformed_json", redact_secrets(f"{url}: {exc}"))
                raise SourceError(redact_secrets(f"malformed JSON from {url}")) from exc

        return self.call(once)


# --- secrets never reach a log line --------------------------------------------------------------------

#: query parameters whose values are secrets (matched case-insensitively, also with a prefix such as
#: access_token, client_secret, X-Amz-Signature, X-Amz-Security-Token)
SECRET_PARAMS = ("key", "api_key", "apikey", "api-key", "token", "secret", "password", "passwd", "pwd", "signature",
                 "sig", "credential", "auth", "session")
#: headers whose values are secrets
SECRET_HEADERS = ("authorization", "proxy-authorization", "x-goog-api-key", "x-api-key", "api-key",
                  "x-amz-security-token", "x-vast-api-key", "cookie", "set-cookie")
_NAMES = "|".join(re.escape(n) for n in sorted(SECRET_PARAMS, key=len, reverse=True))
_QUERY = re.compile(rf"(?i)([?&;](?:[a-z0-9]+[_.-])*(?:{_NAMES})=)[^&#\s'\"<>]*")
_HEADERS = "|".join(re.escape(h) for h in SECRET_HEADERS)
# "Authorization: Bearer x", "'x-goog-api-key': 'x'", (b'authorization', b'Bearer x'), authorization=x
_HEADER = re.compile(rf"(?i)((?<![\w-])['\"]?(?:{_HEADERS})['\"]?\s*[:=,]\s*(?:b(?=['\"]))?['\"]?)"
                     r"((?:bearer|basic|token|digest)\s+)?[^\s'\",;)}\]]+")
_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@")


def redact_secrets(text: str) -> str:
    """`text` with the values of secret query parameters, secret headers and URL passwords replaced by ***.

    >>> redact_secrets("GET https://x.test/skus?key=AIza123&pageSize=5000 Authorization: Bearer abc.def")
    'GET https://x.test/skus?key=***&pageSize=5000 Authorization: Bearer ***'
    >>> redact_secrets("https://u:pw@h.test/?X-Amz-Signature=ab12&x=1 {'x-goog-api-key': 'k1'}")
    "https://u:***@h.test/?X-Amz-Signature=***&x=1 {'x-goog-api-key': '***'}"
    """
    if not text:
        return text
    text = _QUERY.sub(r"\1***", text)
    text = _HEADER.sub(r"\1\2***", text)
    return _USERINFO.sub(r"\1***@", text)


class RedactSecrets(logging.Filter):
    """Rewrites each record's message (and traceback text) through `redact_secrets`. On a handler it covers
    every record the handler emits; on a logger, the records logged there (before any handler sees them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a broken format string: leave it to logging's own error report
            return True
        clean = redact_secrets(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_secrets(record.exc_text)
        return True


#: HTTP client loggers (httpx logs each request URL at INFO, httpcore the exchange at DEBUG)
HTTP_LOGGERS = ("httpx", "httpcore", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy",
                "httpcore.socks", "urllib3", "urllib3.connectionpool", "botocore", "google.auth")


def install_log_redaction(extra_loggers: Iterable[str] = ()) -> RedactSecrets:
    """Install one `RedactSecrets` on every root handler and on the HTTP client loggers (idempotent)."""
    f = next((x for h in logging.getLogger().handlers for x in h.filters if isinstance(x, RedactSecrets)),
             None) or RedactSecrets()
    targets: list[logging.Handler | logging.Logger] = [*logging.getLogger().handlers]
    targets += [logging.getLogger(n) for n in (*HTTP_LOGGERS, *extra_loggers)]
    for t in targets:
        if not any(isinstance(x, RedactSecrets) for x in t.filters):
            t.addFilter(f)
    return f


def to_price(v: Any) -> float | Reject:
    """A positive finite USD price from a vendor value (number or numeric string), or a Reject."""
    if isinstance(v, bool) or v is None:
        return Reject("missing_price", repr(v))
    try:
        p = float(v)
    except (TypeError, ValueError):
        return Reject("bad_price", repr(v)[:50])
    if math.isnan(p) or math.isinf(p):
        return Reject("nan_price", repr(v))
    if p <= 0:
        return Reject("non_positive_price", repr(v))
    if p >= 10_000:
        return Reject("absurd_price", repr(v))
    return p


def parse_time(v: Any) -> datetime | None:
    """ISO-8601 (with Z) or epoch seconds -> aware UTC datetime; None when unusable."""
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=UTC)
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        try:
            return datetime.fromtimestamp(v, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(v, str) and v:
        try:
            t = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            return None
        return t if t.tzinfo else t.replace(tzinfo=UTC)
    return None
