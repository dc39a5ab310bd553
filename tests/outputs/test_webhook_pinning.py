"""Webhook delivery connects to the address it checked (no DNS-rebinding window), keeps the host name for
the Host header and TLS, and never follows redirects. Nothing here leaves loopback: the network backend is
a recording fake (no sockets), except the TLS test, whose server and name both resolve to 127.0.0.1."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest

from outputs.alerts import Subscription, WebhookDispatcher
from outputs.security import BlockedAddress, PinnedTransport, _PinnedBackend
from schemas.events import AlertRaised, DeadLettered, utcnow

PUBLIC = "8.8.8.8"  # a global address for the fake resolver: the fake backend never opens a socket to it
OK = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"


class _Stream(httpcore.AsyncMockStream):
    def __init__(self, buffer: list[bytes], log: list[tuple[Any, ...]]) -> None:
        super().__init__(buffer)
        self.log = log

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.log.append(("write", buffer))

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        self.log.append(("tls", server_hostname))
        return self


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Answers every connection with canned bytes and records where it was asked to connect."""

    def __init__(self, response: bytes = OK) -> None:
        self.response = response
        self.log: list[tuple[Any, ...]] = []

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        self.log.append(("connect", host, port))
        return _Stream([self.response], self.log)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def connects(self) -> list[tuple[Any, ...]]:
        return [e for e in self.log if e[0] == "connect"]


class RebindingResolver:
    """Answers a public address the first time and 127.0.0.1 afterwards (the DNS-rebinding attack)."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return [PUBLIC] if self.calls == 1 else ["127.0.0.1"]


def _post(transport: httpx.AsyncBaseTransport, url: str, n: int = 1) -> list[httpx.Response | Exception]:
    async def go() -> list[httpx.Response | Exception]:
        out: list[httpx.Response | Exception] = []
        async with httpx.AsyncClient(transport=transport, trust_env=False, follow_redirects=False) as c:
            for _ in range(n):
                try:
                    out.append(await c.post(url, content=b"{}"))
                except Exception as exc:
                    out.append(exc)
        return out

    return asyncio.run(go())


def test_request_goes_to_the_checked_address_not_a_second_answer() -> None:
    backend, resolver = RecordingBackend(), RebindingResolver()
    [resp] = _post(PinnedTransport(resolver=resolver, network_backend=backend), "https://hooks.example.com/x")
    assert isinstance(resp, httpx.Response) and resp.status_code == 204
    assert resolver.calls == 1  # resolved once: nothing downstream resolves the name again
    assert backend.connects() == [("connect", PUBLIC, 443)]
    assert ("tls", "hooks.example.com") in backend.log  # SNI and certificate check for the name, not the IP
    head = next(e[1] for e in backend.log if e[0] == "write")
    assert b"\r\nHost: hooks.example.com\r\n" in head and PUBLIC.encode() not in head


def test_rebound_answer_on_a_later_request_is_refused_before_connecting() -> None:
    backend, resolver = RecordingBackend(), RebindingResolver()
    first, second = _post(PinnedTransport(resolver=resolver, network_backend=backend),
                          "http://hooks.example.com:8080/x", n=2)
    assert isinstance(first, httpx.Response)
    assert isinstance(second, BlockedAddress)
    assert backend.connects() == [("connect", PUBLIC, 8080)]  # never 127.0.0.1


def test_backend_refuses_a_host_that_was_not_pinned() -> None:
    async def go() -> None:
        await _PinnedBackend(RecordingBackend()).connect_tcp("hooks.example.com", 443)

    with pytest.raises(httpcore.ConnectError, match="not resolved and checked"):
        asyncio.run(go())


def _wait_dead(dlq: list[DeadLettered], d: WebhookDispatcher) -> None:
    deadline = time.monotonic() + 10
    while (not dlq or d.pending()) and time.monotonic() < deadline:
        time.sleep(0.02)


def test_dispatcher_delivers_through_the_pin_and_dead_letters_the_rebound_host() -> None:
    backend, resolver = RecordingBackend(), RebindingResolver()
    dlq: list[DeadLettered] = []
    d = WebhookDispatcher([Subscription("s", "https://hooks.example.com/x", "k")], dead_letter=dlq.append,
                          base_backoff_s=0.01, max_attempts=3, resolver=resolver, network_backend=backend).start()
    try:
        assert d.submit(AlertRaised(event_id="a1", rule="r", message="m", raised_at=utcnow())) == 1
        deadline = time.monotonic() + 10
        while not d.stats.delivered and time.monotonic() < deadline:
            time.sleep(0.02)
        assert d.submit(AlertRaised(event_id="a2", rule="r", message="m", raised_at=utcnow())) == 1
        _wait_dead(dlq, d)
    finally:
        d.stop()
    assert d.stats.delivered == 1 and backend.connects() == [("connect", PUBLIC, 443)]
    assert len(dlq) == 1 and "non-public" in dlq[0].reason and "after 1 attempts" in dlq[0].reason


def test_redirects_are_not_followed() -> None:
    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(str(req.url))
        return httpx.Response(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})

    dlq: list[DeadLettered] = []
    d = WebhookDispatcher([Subscription("s", "https://hooks.example.com/x", "k")], dead_letter=dlq.append,
                          base_backoff_s=0.01, max_attempts=3, transport=httpx.MockTransport(handler)).start()
    try:
        d.submit(AlertRaised(event_id="a", rule="r", message="m", raised_at=utcnow()))
        _wait_dead(dlq, d)
    finally:
        d.stop()
    assert seen == ["https://hooks.example.com/x"]  # one request, the Location never fetched, no retry
    assert "HTTP 302 (redirects are not followed)" in dlq[0].reason


# --- real TLS on loopback: the certificate is checked against the host name while connecting to the pinned IP

def _self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path, list[str]]]:
    cert, key = _self_signed(tmp_path, "hooks.test")
    hosts: list[str] = []

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hosts.append(self.headers["Host"])
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1], cert, hosts
    srv.shutdown()
    srv.server_close()


def test_tls_is_verified_for_the_host_name_on_the_pinned_address(tls_server: tuple[int, Path, list[str]]) -> None:
    port, cert, hosts = tls_server

    async def loopback(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    trust = ssl.create_default_context(cafile=str(cert))
    ok, wrong = _post(PinnedTransport(allow_private=True, resolver=loopback, verify=trust),
                      f"https://hooks.test:{port}/x")[0], \
        _post(PinnedTransport(allow_private=True, resolver=loopback, verify=trust), f"https://other.test:{port}/x")[0]
    assert isinstance(ok, httpx.Response) and ok.status_code == 204
    assert hosts == [f"hooks.test:{port}"]
    assert isinstance(wrong, httpx.ConnectError) and "certificate" in str(wrong).lower()  # name mismatch refused
