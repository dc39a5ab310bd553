"""What oversized request bodies cost a real API server: status, time, bytes the client got to send, and the
server's resident memory (RSS now and peak) before and after, for bodies of 256 KiB + 1, 10 MB and 50 MB,
with and without an API key, declared (Content-Length) and chunked.

Server: a subprocess serving `outputs.api.create_app` with uvicorn on 127.0.0.1 (loopback only), with no
ClickHouse behind it (the limit acts before any query). `--baseline` also runs a server whose body limit is
1 TiB, i.e. what the API did before the limit: the body is read in full before the 401/422.

Client: raw sockets; the body is sent in 64 KiB writes while watching for an early answer (as curl does), so
"sent" is how much of the body the server let in before it answered. A second client, httpx, shows what a
typical library sees (the status, or the error it raises). Prints a table; `--json PATH` writes the rows.

    .venv/bin/python tests/benchmarks/bench_api_limits.py [--baseline] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
KEY = "bench-limits-admin-key-0123456789"
LIMIT = 256 * 1024
SIZES = {"256KiB+1": LIMIT + 1, "10MB": 10 * 1000 * 1000, "50MB": 50 * 1000 * 1000}
CHUNK = 64 * 1024


class _NoStore:
    """No ClickHouse: queries return nothing (the key store's refresh), nothing else is called."""

    class _Result:
        result_rows: list[Any] = []
        column_names: list[str] = []

    def query(self, *a: Any, **kw: Any) -> Any:
        return self._Result()

    def insert(self, *a: Any, **kw: Any) -> None:
        return None


def serve(port_file: str, max_body: int) -> None:
    sys.path.insert(0, str(ROOT))
    from outputs.api import ApiConfig
    from outputs.server import serve_in_thread

    cfg = ApiConfig(db="bench", admin_key=KEY, rate_per_s=1e6, burst=1e6, start_read_model=False,
                    max_body_bytes=max_body)
    h = serve_in_thread(_NoStore(), "bench", host="127.0.0.1", port=0, publish=lambda e: None, config=cfg)
    Path(port_file).write_text(h.url.rsplit(":", 1)[1])
    h.thread.join()


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of `pid` in KiB."""
    vals: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            vals[k] = int(v.split()[0])
    return vals["VmRSS"], vals["VmHWM"]


def raw_post(port: int, size: int, key: bool, chunked: bool, timeout_s: float = 60.0) -> dict[str, Any]:
    """POST a `size`-byte body to /v1/workloads; stop sending once the server answers."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    head = ["POST /v1/workloads HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json"]
    if key:
        head.append(f"X-API-Key: {KEY}")
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}")
    t0 = time.perf_counter()
    s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    block = b"x" * CHUNK
    sent, answer, err = 0, b"", ""
    try:
        while sent < size:
            r, _, _ = select.select([s], [], [], 0)
            if r:
                break  # an early answer: stop sending
            n = min(CHUNK, size - sent)
            data = block[:n]
            s.sendall(b"%x\r\n" % n + data + b"\r\n" if chunked else data)
            sent += n
        if chunked and sent >= size:
            s.sendall(b"0\r\n\r\n")
    except OSError as exc:
        err = type(exc).__name__
    try:
        while b"\r\n\r\n" not in answer:
            got = s.recv(65536)
            if not got:
                break
            answer += got
    except OSError as exc:
        err = err or type(exc).__name__
    dt = time.perf_counter() - t0
    s.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
    return {"status": status, "seconds": round(dt, 3), "body_bytes_sent": sent, "client_error": err or None}


def httpx_post(port: int, size: int, key: bool) -> str:
    import httpx

    headers = {"Content-Type": "application/json", **({"X-API-Key": KEY} if key else {})}
    try:
        r = httpx.post(f"http://127.0.0.1:{port}/v1/workloads", content=b"x" * size, headers=headers, timeout=60)
        return str(r.status_code)
    except httpx.HTTPError as exc:
        return type(exc).__name__


def run_server(max_body: int, label: str, rows: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        port_file = os.path.join(tmp, "port")
        proc = subprocess.Popen([sys.executable, __file__, "--serve", port_file, str(max_body)], cwd=ROOT)
        try:
            deadline = time.monotonic() + 60
            while not (os.path.exists(port_file) and Path(port_file).read_text()) and time.monotonic() < deadline:
                time.sleep(0.05)
            port = int(Path(port_file).read_text())
            raw_post(port, 10, True, False)  # warm-up: first request's imports and allocations
            for name, size in SIZES.items():
                for key in (False, True):
                    for chunked in (False, True):
                        before = rss_kib(proc.pid)
                        res = raw_post(port, size, key, chunked)
                        time.sleep(0.2)
                        after = rss_kib(proc.pid)
                        row = {"server": label, "body": name, "key": key, "framing": "chunked" if chunked else
                               "content-length", **res, "rss_before_mib": round(before[0] / 1024, 1),
                               "rss_after_mib": round(after[0] / 1024, 1), "peak_rss_mib": round(after[1] / 1024, 1)}
                        if not chunked:
                            row["httpx"] = httpx_post(port, size, key)
                        rows.append(row)
                        print(_fmt(row), flush=True)
        finally:
            proc.terminate()
            proc.wait(10)


COLS = ("server", "body", "key", "framing", "status", "seconds", "body_bytes_sent", "client_error", "httpx",
        "rss_before_mib", "rss_after_mib", "peak_rss_mib")


def _fmt(row: dict[str, Any]) -> str:
    return " | ".join(str(row.get(c, "")) for c in COLS)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", nargs=2, metavar=("PORT_FILE", "MAX_BODY"), help=argparse.SUPPRESS)
    ap.add_argument("--baseline", action="store_true", help="also run a server without the limit (1 TiB)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    a = ap.parse_args()
    if a.serve:
        serve(a.serve[0], int(a.serve[1]))
        return 0
    rows: list[dict[str, Any]] = []
    print(" | ".join(COLS))
    run_server(LIMIT, "limit 256 KiB", rows)
    if a.baseline:
        run_server(2**40, "no limit (before)", rows)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
