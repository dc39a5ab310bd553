"""Running the outputs: the API server in a thread, the alert service, the executor service and the
sink, alone or together. On chdb one process owns the database, so `start_services` runs them all in
one process on one client; with CLICKHOUSE_URL each can run in its own process.

Kafka publishing is injected (`publish(event)`, `flush()`): outputs does not import connectors.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from outputs.alerts import AlertEngine, AlertRules, DeliveryLog, Subscription, WebhookDispatcher, load_subscriptions
from outputs.api import ApiConfig, create_app
from outputs.consume import consume_loop
from outputs.executors import Caps, Executor, ExecutorRunner
from outputs.sink import ClickHouseWriter, run_sink
from schemas.events import AlertRaised, Event
from schemas.topics import ALERTS, CAPACITY, DECISIONS, FORECASTS, INTERRUPTIONS, PRICES, WORKLOADS

log = logging.getLogger(__name__)

Publish = Callable[[Event], None]


@dataclass
class ServerHandle:
    url: str
    server: Any
    thread: threading.Thread

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)


def serve_in_thread(client: Any, db: str = "cloudarb", host: str = "127.0.0.1", port: int = 8000,
                    publish: Publish | None = None, admin_key: str | None = None, config: ApiConfig | None = None,
                    log_level: str = "warning", access_log: bool = False,
                    pipeline_stats: Callable[[], dict[str, float]] | None = None) -> ServerHandle:
    """Start the API (uvicorn) in a daemon thread; returns once it accepts connections. port=0 picks one."""
    import uvicorn

    cfg = config or ApiConfig(db=db, admin_key=admin_key)
    app = create_app(client, cfg, publish=publish, pipeline_stats=pipeline_stats)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    actual = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=access_log, lifespan="on",
                                           timeout_keep_alive=30, backlog=1024))
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="api", daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not server.started and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        raise RuntimeError("the API server did not start")
    return ServerHandle(f"http://{host}:{actual}", server, t)


@dataclass
class ServiceHandle:
    """Background consumers; `stop()` ends them (uncommitted work is redelivered on the next start)."""

    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    on_stop: list[Callable[[], Any]] = field(default_factory=list)
    objects: dict[str, Any] = field(default_factory=dict)

    def stop(self, timeout_s: float = 15.0) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout_s)
        for f in self.on_stop:
            try:
                f()
            except Exception as exc:
                log.warning("stopping: %s", type(exc).__name__)

    def _spawn(self, name: str, target: Callable[..., Any], *args: Any, **kw: Any) -> None:
        t = threading.Thread(target=target, args=args, kwargs=kw, name=name, daemon=True)
        t.start()
        self.threads.append(t)


class _SubscriptionCache:
    def __init__(self, client: Any, db: str, extra: Sequence[Subscription] = (), ttl_s: float = 10.0) -> None:
        self.client, self.db, self.extra, self.ttl_s = client, db, list(extra), ttl_s
        self._subs: list[Subscription] = []
        self._at = 0.0

    def __call__(self) -> list[Subscription]:
        if self.client is not None and time.monotonic() - self._at > self.ttl_s:
            try:
                self._subs = load_subscriptions(self.client, self.db)
            except Exception as exc:
                log.warning("loading webhook subscriptions failed: %s", type(exc).__name__)
            self._at = time.monotonic()
        return self._subs + self.extra


def start_alerts(bootstrap: str, client: Any, db: str, publish: Publish, flush: Callable[[], Any] | None = None,
                 rules: AlertRules | None = None, group_id: str = "cloudarb-alerts",
                 subscriptions: Sequence[Subscription] = (), allow_private_webhooks: bool = False,
                 max_attempts: int = 5, base_backoff_s: float = 0.5, handle: ServiceHandle | None = None,
                 idle_exit_s: float | None = None, input_topics: Sequence[str] | None = None,
                 alerts_topic: str = ALERTS.name) -> ServiceHandle:
    """Rules (market/forecast/workload/decision topics -> AlertRaised on the alerts topic) and the webhook
    dispatcher (alerts topic -> signed POSTs). Subscriptions: ClickHouse `webhook_subscriptions` + `subscriptions`."""
    h = handle or ServiceHandle()
    engine = AlertEngine(rules)
    if client is not None:
        try:
            engine.warm_start(client, db)
        except Exception as exc:
            log.warning("alert engine warm start failed (%s); starting cold", type(exc).__name__)
    deliveries = DeliveryLog(client, db) if client is not None else None
    dispatcher = WebhookDispatcher(_SubscriptionCache(client, db, subscriptions), max_attempts=max_attempts,
                                   base_backoff_s=base_backoff_s, allow_private=allow_private_webhooks,
                                   record=deliveries, dead_letter=publish).start()
    h.objects.update(alert_engine=engine, dispatcher=dispatcher)

    def on_market(events: list[Event]) -> None:
        n = 0
        for e in events:
            for a in engine.observe(e):
                publish(a)
                n += 1
        if n and flush is not None:
            flush()

    def on_alerts(events: list[Event]) -> None:
        for e in events:
            if isinstance(e, AlertRaised):
                dispatcher.submit(e)
        if deliveries is not None:
            deliveries.flush()

    topics = list(input_topics or [WORKLOADS.name, DECISIONS.name, PRICES.name, CAPACITY.name, INTERRUPTIONS.name,
                                   FORECASTS.name])
    h._spawn("alert-rules", consume_loop, bootstrap, topics, f"{group_id}-rules", on_market, h.stop_event,
             idle_exit_s=idle_exit_s, healthy=clickhouse_up(client))
    h._spawn("alert-webhooks", consume_loop, bootstrap, [alerts_topic], f"{group_id}-webhooks", on_alerts,
             h.stop_event, idle_exit_s=idle_exit_s, healthy=clickhouse_up(client))

    def _stop_dispatcher() -> None:
        dispatcher.stop(drain_s=5.0)
        if deliveries is not None:
            deliveries.flush()

    h.on_stop.append(_stop_dispatcher)
    return h


def clickhouse_up(client: Any) -> Callable[[], bool]:
    """For a consumer whose handler writes to ClickHouse: is a failure an outage (retry the batch) or the
    record's fault (isolate it, see outputs.consume)? Without a client, every failure is the record's."""

    def up() -> bool:
        if client is None:
            return True
        try:
            client.query("SELECT 1")
            return True
        except Exception:
            return False

    return up


def start_executors(bootstrap: str, client: Any, db: str, executors: dict[str, Executor] | None = None,
                    enabled: Sequence[str] = (), caps: Caps | None = None, group_id: str = "cloudarb-executors",
                    handle: ServiceHandle | None = None, idle_exit_s: float | None = None,
                    decisions_topic: str = DECISIONS.name) -> ServiceHandle:
    """Consume AllocationDecided and act (dry run unless a provider is enabled)."""
    h = handle or ServiceHandle()
    runner = ExecutorRunner(executors, enabled=enabled, caps=caps, client=client, db=db)
    h.objects["executor_runner"] = runner
    h._spawn("executors", consume_loop, bootstrap, [decisions_topic], group_id, runner.handle_events, h.stop_event,
             idle_exit_s=idle_exit_s, healthy=clickhouse_up(client))
    return h


SINK_STALL_S = 60.0  # a sink batch waiting this long without progress makes /readyz say not ready


def start_sink(bootstrap: str, client: Any, db: str, group_id: str = "cloudarb-sink",
               handle: ServiceHandle | None = None) -> ServiceHandle:
    h = handle or ServiceHandle()
    writer = ClickHouseWriter(client, db)
    h.objects["sink_writer"] = writer
    h._spawn("sink", run_sink, bootstrap, writer, h.stop_event, group_id=group_id)
    return h


def pipeline_stats(h: ServiceHandle) -> Callable[[], dict[str, float]]:
    """Counters of the services in `h`, for /metrics."""

    def stats() -> dict[str, float]:
        out: dict[str, float] = {}
        w = h.objects.get("sink_writer")
        if w is not None:
            out.update({"sink_consumed": w.stats.consumed, "sink_written": w.stats.written,
                        "sink_duplicates": w.stats.duplicates, "sink_write_failures": w.stats.write_failures,
                        "sink_dead_lettered": w.stats.dead_lettered,
                        "sink_stalled": float(w.stats.stalled(SINK_STALL_S))})
        d = h.objects.get("dispatcher")
        if d is not None:
            out.update({"webhooks_delivered": d.stats.delivered, "webhooks_retries": d.stats.retries,
                        "webhooks_dead": d.stats.dead, "webhooks_pending": d.pending()})
        r = h.objects.get("executor_runner")
        if r is not None:
            n, usd = r.running()
            out.update({"executor_decisions": len(r.handled), "executor_instances": n, "executor_usd_per_hour": usd})
        return out

    return stats


@dataclass
class OutputsHandle:
    api_url: str
    api: ServerHandle
    services: ServiceHandle

    def stop(self) -> None:
        self.api.stop()
        self.services.stop()


def start_outputs(bootstrap: str, client: Any, db: str, publish: Publish, flush: Callable[[], Any] | None = None,
                  port: int = 8000, host: str = "127.0.0.1", admin_key: str | None = None, with_sink: bool = False,
                  group_prefix: str = "cloudarb", executors: dict[str, Executor] | None = None,
                  enabled: Sequence[str] = (), caps: Caps | None = None, allow_private_webhooks: bool = False,
                  api_config: ApiConfig | None = None) -> OutputsHandle:
    """Everything user-facing in this process on one ClickHouse client (the chdb layout): optionally the
    sink, the alert rules + webhooks, the executors (dry run unless `enabled`), and the API. `stop()` ends all."""
    h = ServiceHandle()
    if with_sink:
        start_sink(bootstrap, client, db, group_id=f"{group_prefix}-sink", handle=h)
    start_alerts(bootstrap, client, db, publish, flush=flush, group_id=f"{group_prefix}-alerts",
                 allow_private_webhooks=allow_private_webhooks, handle=h)
    start_executors(bootstrap, client, db, executors, enabled, caps, group_id=f"{group_prefix}-executors", handle=h)
    cfg = api_config or ApiConfig(db=db, admin_key=admin_key, allow_private_webhooks=allow_private_webhooks)

    def api_publish(e: Event) -> None:  # a 202 means Kafka has the event
        publish(e)
        if flush is not None and flush():
            raise RuntimeError("Kafka did not acknowledge the event")

    api = serve_in_thread(client, db, host, port, publish=api_publish, config=cfg, pipeline_stats=pipeline_stats(h))
    return OutputsHandle(api.url, api, h)
