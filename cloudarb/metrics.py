"""Prometheus metrics of every long-running command, on a port of their own.

Each long-running command (`worker`, `sink`, `serve`, `api`, `alerts run`, `executors run`, `connectors run`)
calls `serving_metrics(...)` around its run: when CLOUDARB_METRICS_PORT is set, the process's default
prometheus_client registry (process, platform and GC metrics, the prometheus objects of imported modules
such as cloudarb_forecast_samples_skipped_total, and the command's collectors) is served at
`http://CLOUDARB_METRICS_ADDR:CLOUDARB_METRICS_PORT/metrics` (prometheus_client's own small WSGI server, in
a daemon thread). Unset (the default, e.g. on a laptop): nothing listens. The address defaults to
127.0.0.1; containers set CLOUDARB_METRICS_ADDR=0.0.0.0 (the Helm chart does, with port 9108). The server
stops when the block ends (the command's SIGTERM / Ctrl-C clean-up, cloudarb.signals) and with the process.

Collectors read the components' plain-int counters at scrape time (see streams.runtime.metrics, outputs.metrics,
connectors.runner.RunnerCollector): nothing is incremented per event on the hot path.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.registry import Collector, CollectorRegistry

log = logging.getLogger(__name__)

PORT_ENV = "CLOUDARB_METRICS_PORT"
ADDR_ENV = "CLOUDARB_METRICS_ADDR"
DEFAULT_ADDR = "127.0.0.1"
CONTAINER_PORT = 9108   # the port the Helm chart and the container images use

_registered: dict[tuple[int, str], Collector] = {}


def register(name: str, collector: Collector, registry: CollectorRegistry = REGISTRY) -> None:
    """Register `collector` once per process under `name`; registering the name again replaces it."""
    key = (id(registry), name)
    old = _registered.pop(key, None)
    if old is not None:
        with contextlib.suppress(KeyError):
            registry.unregister(old)
    registry.register(collector)
    _registered[key] = collector


def unregister(name: str, registry: CollectorRegistry = REGISTRY) -> None:
    old = _registered.pop((id(registry), name), None)
    if old is not None:
        with contextlib.suppress(KeyError):
            registry.unregister(old)


@dataclass
class MetricsServer:
    addr: str
    port: int
    server: Any
    thread: Any

    @property
    def url(self) -> str:
        return f"http://{self.addr}:{self.port}/metrics"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5.0)


def metrics_address(env: Mapping[str, str] | None = None) -> tuple[str, int] | None:
    """(addr, port) from CLOUDARB_METRICS_ADDR / CLOUDARB_METRICS_PORT; None when the port is unset or empty."""
    env = os.environ if env is None else env
    raw = env.get(PORT_ENV, "").strip()
    if not raw:
        return None
    try:
        port = int(raw)
    except ValueError:
        raise SystemExit(f"cloudarb: {PORT_ENV}={raw!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise SystemExit(f"cloudarb: {PORT_ENV}={port} is not a port number")
    return env.get(ADDR_ENV, "").strip() or DEFAULT_ADDR, port


def start_metrics_server(env: Mapping[str, str] | None = None,
                         registry: CollectorRegistry = REGISTRY) -> MetricsServer | None:
    """Serve `registry` on CLOUDARB_METRICS_ADDR:CLOUDARB_METRICS_PORT (port 0: any free one); None when unset."""
    where = metrics_address(env)
    if where is None:
        return None
    addr, port = where
    try:
        server, thread = start_http_server(port, addr, registry=registry)
    except OSError as exc:
        raise SystemExit(f"cloudarb: cannot serve metrics on {addr}:{port} ({exc.strerror or exc}); "
                         f"choose another {PORT_ENV}") from None
    ms = MetricsServer(addr, int(server.server_port), server, thread)
    log.info("metrics at %s", ms.url)
    return ms


@contextlib.contextmanager
def serving_metrics(collectors: Mapping[str, Collector] | None = None,
                    env: Mapping[str, str] | None = None) -> Iterator[MetricsServer | None]:
    """Register the command's collectors (once per process) and serve the metrics while the block runs."""
    for name, c in (collectors or {}).items():
        register(name, c)
    server = start_metrics_server(env)
    if server is not None:
        print(f"metrics at {server.url}", flush=True)
    try:
        yield server
    finally:
        if server is not None:
            server.stop()
