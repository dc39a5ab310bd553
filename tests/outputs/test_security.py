"""Property tests: key hashing, the rate limiter, webhook signatures and URL validation on arbitrary input."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outputs.alerts import Subscription, WebhookDispatcher
from outputs.security import (
    BlockedAddress,
    InvalidWebhookURL,
    KeyStore,
    PinnedTransport,
    RateLimiter,
    Resolver,
    UnresolvableHost,
    admin_key_problem,
    hash_key,
    is_public_ip,
    new_api_key,
    sign_payload,
    validate_webhook_url,
    verify_signature,
)
from schemas.events import AlertRaised, DeadLettered, utcnow


def test_keys_are_random_and_hashed() -> None:
    keys = {new_api_key() for _ in range(100)}
    assert len(keys) == 100
    secret = "s3cr3t-admin-key"
    ks = KeyStore(bootstrap_admin_key=secret)
    assert ks.lookup(secret) is not None and ks.lookup(secret).role == "admin"  # type: ignore[union-attr]
    assert secret not in repr(ks.__dict__) and hash_key(secret) in repr(ks.__dict__)
    assert ks.lookup("") is None and ks.lookup(None) is None and ks.lookup(secret + " ") is None


@given(secret=st.text(min_size=1, max_size=50), body=st.binary(max_size=500), ts=st.integers(0, 2**40),
       flip=st.integers(0, 10_000))
@settings(max_examples=200)
def test_signature_roundtrip_and_tamper(secret: str, body: bytes, ts: int, flip: int) -> None:
    sig = sign_payload(secret, ts, body)
    assert verify_signature(secret, str(ts), body, sig, now=ts)
    assert not verify_signature(secret, str(ts), body, sig, now=ts + 301)  # replayed later
    if body:
        i = flip % len(body)
        tampered = body[:i] + bytes([body[i] ^ 1]) + body[i + 1:]
        assert not verify_signature(secret, str(ts), tampered, sig, now=ts)
    assert not verify_signature(secret, "not-a-number", body, sig, now=ts)


@given(st.text(max_size=300))
@settings(max_examples=300)
def test_url_validation_never_crashes(url: str) -> None:
    try:
        out = validate_webhook_url(url)
    except InvalidWebhookURL:
        return
    assert out.startswith(("http://", "https://"))


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x", "http://localhost:8080/", "http://10.1.2.3/", "http://192.168.0.1/",
    "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://169.254.169.254/latest/meta-data",
    "http://2130706433/", "http://0x7f000001/", "http://0/", "ftp://example.com/", "https://user:pw@example.com/",
    "https://example.com/#frag", "//example.com", "https://", "javascript:alert(1)"])
def test_bad_webhook_urls(url: str) -> None:
    with pytest.raises(InvalidWebhookURL):
        validate_webhook_url(url)


def test_good_webhook_urls() -> None:
    assert validate_webhook_url("https://hooks.example.com/cloudarb?x=1")
    assert validate_webhook_url("http://127.0.0.1:9000/x", allow_private=True)


def test_dns_guard_dead_letters_names_resolving_to_private_addresses() -> None:
    dlq: list[DeadLettered] = []
    calls: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["93.184.215.14", "10.0.0.5"]  # one private answer is enough to refuse

    d = WebhookDispatcher([Subscription("s", "http://localtest.example/x", "k")], dead_letter=dlq.append,
                          base_backoff_s=0.01, max_attempts=2, resolver=resolver)
    d.start()
    try:
        assert d.submit(AlertRaised(event_id="a", rule="r", message="m", raised_at=utcnow())) == 1
        for _ in range(100):
            if dlq:
                break
            asyncio.run(asyncio.sleep(0.02))
    finally:
        d.stop()
    assert dlq and "non-public" in dlq[0].reason
    assert calls == ["localtest.example"]  # refused at once, not retried


REJECTED = {
    "carrier-grade NAT": "100.64.1.1", "6to4 of 169.254.169.254": "2002:a9fe:a9fe::1",
    "NAT64 of 169.254.169.254": "64:ff9b::a9fe:a9fe", "NAT64 local-use": "64:ff9b:1::a9fe:a9fe",
    "IPv4-mapped private": "::ffff:10.0.0.1", "IPv4-compatible": "::a9fe:a9fe", "IPv4-compatible public": "::808:808",
    "metadata": "169.254.169.254", "loopback": "127.0.0.1", "IPv6 loopback": "::1", "ULA": "fc00::1",
    "IPv6 link-local": "fe80::1", "Teredo": "2001:0:4136:e378:8000:63bf:3fff:fdd2", "private": "192.168.1.1",
    "unspecified": "0.0.0.0", "multicast": "224.0.0.1", "IPv6 multicast": "ff02::1", "reserved": "240.0.0.1",
    "documentation": "203.0.113.7", "benchmarking": "198.18.0.1", "broadcast": "255.255.255.255",
}


@pytest.mark.parametrize("addr", REJECTED.values(), ids=REJECTED.keys())
def test_non_global_addresses_are_rejected(addr: str) -> None:
    assert not is_public_ip(ipaddress.ip_address(addr))
    host = f"[{addr}]" if ":" in addr else addr
    with pytest.raises(InvalidWebhookURL):
        validate_webhook_url(f"https://{host}/hook")
    assert validate_webhook_url(f"https://{host}/hook", allow_private=True)  # the opt-in for local receivers
    with pytest.raises(BlockedAddress):  # the same check at delivery time, on what DNS answers
        asyncio.run(PinnedTransport(resolver=_answers(addr)).resolve("hooks.example.com", 443))


@pytest.mark.parametrize("addr", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_global_addresses_are_accepted(addr: str) -> None:
    assert is_public_ip(ipaddress.ip_address(addr))
    host = f"[{addr}]" if ":" in addr else addr
    assert validate_webhook_url(f"https://{host}/hook")
    pinned = asyncio.run(PinnedTransport(resolver=_answers(addr)).resolve("hooks.example.com", 443))
    assert pinned == addr.removeprefix("::ffff:")


def _answers(*addrs: str) -> Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        return list(addrs)

    return resolve


def test_unresolvable_and_local_names() -> None:
    async def fail(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    with pytest.raises(UnresolvableHost):
        asyncio.run(PinnedTransport(resolver=fail).resolve("nx.example.com", 443))
    with pytest.raises(UnresolvableHost):
        asyncio.run(PinnedTransport(resolver=_answers()).resolve("empty.example.com", 443))
    with pytest.raises(BlockedAddress):
        asyncio.run(PinnedTransport(resolver=_answers("8.8.8.8")).resolve("printer.local", 443))
    assert asyncio.run(PinnedTransport(allow_private=True, resolver=_answers("127.0.0.1")).resolve("x.local", 80)) \
        == "127.0.0.1"


@pytest.mark.parametrize("key", [None, new_api_key(), "x" * 7 + "abcdefgh" + "0123456789abcdefghij"])
def test_admin_key_accepted(key: str | None) -> None:
    assert admin_key_problem(key) is None


@pytest.mark.parametrize("key", ["change-me", "CHANGE-ME", "admin", "short-but-random-Xy7", "a" * 40,
                                 "admin-cli-key-0123456789abcdef"])
def test_weak_admin_key_refused(key: str) -> None:
    problem = admin_key_problem(key)
    assert problem and "CLOUDARB_ADMIN_KEY" in problem and key not in problem  # the key itself is never echoed


@given(st.lists(st.floats(0, 10, allow_nan=False), max_size=200))
@settings(max_examples=100)
def test_rate_limiter_never_exceeds_burst_plus_rate(gaps: list[float]) -> None:
    rl = RateLimiter(rate=5.0, burst=10.0)
    t = 0.0
    allowed = []
    for g in gaps:
        t += g
        if rl.allow("k", now=t)[0]:
            allowed.append(t)
    for i, start in enumerate(allowed):  # within any window of length w: at most burst + rate * w
        for end in allowed[i:]:
            n = sum(1 for x in allowed if start <= x <= end)
            assert n <= 10 + 5.0 * (end - start) + 1e-6
