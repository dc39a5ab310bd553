"""Exec probes for the CloudArb processes that serve no HTTP (the worker, connectors, sink, alerts, executors).

    python /etc/cloudarb-probe/probe.py alive [kafka] [clickhouse]

alive       PID 1 (the container's command, `cloudarb ...`; PROBE_PID overrides) exists, runs `cloudarb`, and is
            neither a zombie nor stopped (/proc/<pid>/stat state Z, X, T or t)
kafka       a TCP connection to at least one of KAFKA_BOOTSTRAP_SERVERS opens within PROBE_TIMEOUT_S (default 3)
clickhouse  ClickHouse's /ping at CLICKHOUSE_URL's host answers 200 "Ok." (no credentials sent, none printed)

Standard library only (it runs in the application image). Exit 0 when every check passes, else 1 with one line
per failed check on stderr.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT_S = float(os.environ.get("PROBE_TIMEOUT_S", "3"))


def check_alive() -> str | None:
    pid = os.environ.get("PROBE_PID", "1")
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError as exc:
        return f"alive: no process {pid} ({type(exc).__name__})"
    state = stat[stat.rindex(")") + 2:].split()[0]  # after "(comm)", which may itself contain spaces
    if state in ("Z", "X", "T", "t"):
        return f"alive: process {pid} is in state {state}"
    if "cloudarb" not in cmdline:
        return f"alive: process {pid} is not cloudarb"
    return None


def _host_port(entry: str, default_port: int) -> tuple[str, int]:
    entry = entry.strip().split("://", 1)[-1]
    if entry.startswith("["):  # [ipv6]:port
        host, _, rest = entry[1:].partition("]")
        return host, int(rest.lstrip(":") or default_port)
    host, sep, port = entry.rpartition(":")
    return (host, int(port)) if sep else (entry, default_port)


def check_kafka() -> str | None:
    servers = [s for s in os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").split(",") if s.strip()]
    if not servers:
        return "kafka: KAFKA_BOOTSTRAP_SERVERS is not set"
    errors = []
    for s in servers:
        host, port = _host_port(s, 9092)
        try:
            socket.create_connection((host, port), timeout=TIMEOUT_S).close()
            return None
        except OSError as exc:
            errors.append(f"{host}:{port} {type(exc).__name__}")
    return "kafka: no bootstrap server reachable: " + ", ".join(errors)


def check_clickhouse() -> str | None:
    url = os.environ.get("CLICKHOUSE_URL", "")
    if not url:
        return "clickhouse: CLICKHOUSE_URL is not set"
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        return "clickhouse: CLICKHOUSE_URL is not an http(s) URL"
    port = u.port or (8443 if u.scheme == "https" else 8123)
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
    ping = f"{u.scheme}://{host}:{port}/ping"  # credentials left out on purpose
    try:
        with urllib.request.urlopen(ping, timeout=TIMEOUT_S) as r:
            body = r.read(64)
            if r.status == 200 and body.strip() == b"Ok.":
                return None
            return f"clickhouse: {host}:{port}/ping answered {r.status}"
    except (OSError, urllib.error.URLError) as exc:
        return f"clickhouse: {host}:{port}/ping failed ({type(exc).__name__})"


CHECKS = {"alive": check_alive, "kafka": check_kafka, "clickhouse": check_clickhouse}


def main(argv: list[str]) -> int:
    unknown = [a for a in argv if a not in CHECKS]
    if not argv or unknown:
        print(f"usage: probe.py {{{'|'.join(CHECKS)}}}...; unknown: {unknown}", file=sys.stderr)
        return 2
    failed = [msg for name in argv if (msg := CHECKS[name]()) is not None]
    for msg in failed:
        print(msg, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
