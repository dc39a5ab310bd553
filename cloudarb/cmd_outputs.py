"""CLI commands for the outputs: `cloudarb api`, `cloudarb serve`, `cloudarb alerts run`,
`cloudarb executors run`, `cloudarb apikey create`.

On embedded chdb one process owns the database: use `cloudarb serve` (sink + API + alerts + executors
in one process). With CLICKHOUSE_URL each command can run in its own process.
Environment: CLOUDARB_ADMIN_KEY (bootstrap admin API key, hashed at start, never logged),
CLOUDARB_EXECUTE=aws,lambda,runpod (opt-in to real executors; default dry run),
CLOUDARB_WEBHOOK_ALLOW_PRIVATE=1 (allow loopback/private webhook targets, e.g. local receivers),
CLOUDARB_METRICS_PORT / CLOUDARB_METRICS_ADDR (serve this process's metrics there: cloudarb.metrics).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

from cloudarb.settings import Settings


def _client(s: Settings) -> Any:
    from embedded.kafka import KafkaSetupError
    from outputs.clickhouse import apply_ddl, get_client

    try:
        client = get_client(s.clickhouse_url, s.chdb_path)
        apply_ddl(client, s.clickhouse_db)
    except Exception as exc:
        if not s.clickhouse_url and "lock" in str(exc).lower():
            raise KafkaSetupError(
                f"the chdb directory {s.chdb_path} is in use by another process: on embedded chdb run the outputs "
                "in one process with `cloudarb serve`, or point every process at a server with CLICKHOUSE_URL"
            ) from None
        raise
    return client


def _publisher(s: Settings) -> Any:
    if not s.kafka_bootstrap_servers:
        return None
    from connectors.publish import KafkaPublisher

    return KafkaPublisher(s.kafka_bootstrap_servers)


def _keyed(pub: Any) -> Any:
    """`pub.publish`, except that a QuotasSet goes out under the quotas topic's one key (compaction keeps the
    latest set; `connectors.publish` keys it by event id)."""
    from cloudarb.quotas import QUOTAS_KEY
    from schemas.events import QuotasSet
    from schemas.topics import QUOTAS

    def publish(e: Any) -> None:
        if isinstance(e, QuotasSet):
            pub.publish_raw(QUOTAS.name, QUOTAS_KEY, e.model_dump_json().encode())
        else:
            pub.publish(e)

    return publish


def _publish_fn(pub: Any) -> Any:
    if pub is None:
        return None
    keyed = _keyed(pub)

    def publish(e: Any) -> None:
        keyed(e)
        if pub.flush(10):
            raise RuntimeError("Kafka did not acknowledge the event")

    return publish


def _bootstrap(s: Settings) -> str:
    from embedded.kafka import KafkaSetupError

    if not s.kafka_bootstrap_servers:
        raise KafkaSetupError("KAFKA_BOOTSTRAP_SERVERS is not set: start a broker with `cloudarb kafka start`")
    return s.kafka_bootstrap_servers


@contextlib.contextmanager
def _until_stopped() -> Iterator[None]:
    """Ctrl-C or SIGTERM (which `cloudarb.signals` turns into KeyboardInterrupt), also during start-up or
    while waiting, ends the block quietly; the caller stops what it started in a `finally`."""
    from cloudarb.signals import sigterm_as_interrupt

    with contextlib.suppress(KeyboardInterrupt), sigterm_as_interrupt():
        yield


@contextlib.contextmanager
def _metrics(bootstrap: str | None, handle: Any = None, groups: dict[str, list[str]] | None = None) -> Iterator[None]:
    """CLOUDARB_METRICS_PORT set: this process's metrics at /metrics on a port of their own (cloudarb.metrics):
    the services' counters (outputs.server.pipeline_stats, outputs.metrics) and their groups' consumer lag."""
    from cloudarb.metrics import metrics_address, serving_metrics
    from outputs.metrics import GroupLag, OutputsCollector

    if metrics_address() is None:
        yield
        return
    lag = GroupLag(bootstrap, groups).start() if bootstrap and groups else None
    collectors: dict[str, Any] = {}
    if handle is not None:
        from outputs.server import pipeline_stats

        collectors["outputs"] = OutputsCollector(pipeline_stats(handle), lag)
    try:
        with serving_metrics(collectors):
            yield
    finally:
        if lag is not None:
            lag.stop()


def _wait() -> None:
    """Block until Ctrl-C or SIGTERM (inside `_until_stopped`)."""
    import gc

    gc.collect()
    gc.freeze()  # start-up objects out of the collector's way: fewer long pauses in the API's tail latency
    while True:
        time.sleep(0.5)


def _api_config(args: argparse.Namespace, s: Settings) -> Any:
    from outputs.api import ApiConfig
    from outputs.security import admin_key_problem

    admin_key = os.environ.get("CLOUDARB_ADMIN_KEY") or None
    if (problem := admin_key_problem(admin_key)) is not None:  # too short, or a known default like change-me
        raise SystemExit(f"cloudarb: {problem}")
    return ApiConfig(db=s.clickhouse_db, admin_key=admin_key,
                     rate_per_s=args.rate_per_s, burst=args.rate_per_s * 2,
                     allow_private_webhooks=os.environ.get("CLOUDARB_WEBHOOK_ALLOW_PRIVATE") == "1")


def cmd_api(args: argparse.Namespace, s: Settings) -> int:
    from outputs.server import serve_in_thread

    pub = _publisher(s)
    client = _client(s)
    with _until_stopped():
        h = serve_in_thread(client, s.clickhouse_db, args.host, args.port, publish=_publish_fn(pub),
                            config=_api_config(args, s))
        try:
            print(f"CloudArb API at {h.url} (docs {h.url}/docs, dashboard {h.url}/dashboard); Ctrl-C stops it",
                  flush=True)
            with _metrics(None):   # process metrics; the API's own are at its /metrics
                _wait()
        finally:
            h.stop()
    return 0


def _executors(args: argparse.Namespace, client: Any = None, db: str = "cloudarb"
               ) -> tuple[dict[str, Any], set[str], Any]:
    from outputs.executor_k8s import WorkloadTopologies, k8s_executors_from_env
    from outputs.executors import Caps, executors_from_env

    env = dict(os.environ)
    if getattr(args, "execute", None):
        env["CLOUDARB_EXECUTE"] = args.execute
    ex, enabled = executors_from_env(env)
    # a provider with a Kubernetes cluster opted in (CLOUDARB_K8S_CONFIG) is driven through it
    ex.update(k8s_executors_from_env(env, WorkloadTopologies(client=client, db=db)))
    given = {k: v for k, v in (("max_instances", args.max_instances), ("max_usd_per_hour", args.max_usd_per_hour))
             if v is not None}   # a flag overrides its CLOUDARB_EXEC_* variable only when given
    return ex, enabled, Caps(**given)


def cmd_executors(args: argparse.Namespace, s: Settings) -> int:
    from outputs.metrics import service_groups
    from outputs.server import start_executors

    bootstrap, client = _bootstrap(s), _client(s)
    ex, enabled, caps = _executors(args, client, s.clickhouse_db)
    with _until_stopped():
        h = start_executors(bootstrap, client, s.clickhouse_db, ex, sorted(enabled), caps,
                            group_id=f"{s.cloudarb_app_id}-executors", idle_exit_s=args.idle_exit_s)
        try:
            print(f"executors running ({'real: ' + ', '.join(sorted(ex)) if ex else 'dry run only'}); "
                  "Ctrl-C stops them", flush=True)
            with _metrics(bootstrap, h, service_groups(s.cloudarb_app_id, executors=True)):
                _wait_threads(h)
        finally:
            h.stop()
    return 0


def _wait_threads(h: Any) -> None:
    while any(t.is_alive() for t in h.threads):
        for t in h.threads:
            t.join(0.5)


def cmd_alerts(args: argparse.Namespace, s: Settings) -> int:
    from outputs.alerts import AlertRules
    from outputs.metrics import service_groups
    from outputs.server import start_alerts

    pub = _publisher(s)
    assert pub is not None
    bootstrap, client = _bootstrap(s), _client(s)
    with _until_stopped():
        h = start_alerts(bootstrap, client, s.clickhouse_db, pub.publish, flush=pub.flush,
                         rules=AlertRules(price_change_pct=args.price_change_pct,
                                          savings_opportunity_usd_per_hour=args.savings_usd_per_hour),
                         allow_private_webhooks=os.environ.get("CLOUDARB_WEBHOOK_ALLOW_PRIVATE") == "1",
                         group_id=f"{s.cloudarb_app_id}-alerts", idle_exit_s=args.idle_exit_s)
        try:
            print("alerts running; Ctrl-C stops them", flush=True)
            with _metrics(bootstrap, h, service_groups(s.cloudarb_app_id, alerts=True)):
                _wait_threads(h)
        finally:
            h.stop()
    pub.flush(10)
    return 0


def cmd_serve(args: argparse.Namespace, s: Settings) -> int:
    """Sink + API + alerts + executors in one process (the chdb layout)."""
    from outputs.metrics import service_groups
    from outputs.server import start_outputs

    bootstrap = _bootstrap(s)
    pub = _publisher(s)
    client = _client(s)
    ex, enabled, caps = _executors(args, client, s.clickhouse_db)
    with _until_stopped():
        out = start_outputs(bootstrap, client, s.clickhouse_db, _keyed(pub), flush=lambda: pub.flush(10),
                            port=args.port, host=args.host, with_sink=not args.no_sink,
                            group_prefix=s.cloudarb_app_id, executors=ex, enabled=sorted(enabled), caps=caps,
                            api_config=_api_config(args, s))
        try:
            print(f"CloudArb outputs: API {out.api_url} (dashboard {out.api_url}/dashboard), sink, alerts, "
                  f"executors ({'real: ' + ', '.join(sorted(ex)) if ex else 'dry run'}); Ctrl-C stops them",
                  flush=True)
            with _metrics(bootstrap, out.services, service_groups(s.cloudarb_app_id, sink=not args.no_sink,
                                                                  alerts=True, executors=True)):
                _wait()
        finally:
            out.stop()
    pub.flush(10)
    return 0


def cmd_apikey(args: argparse.Namespace, s: Settings) -> int:
    from outputs.security import KeyStore

    key_id, key = KeyStore(_client(s), s.clickhouse_db).create(args.role, args.name)
    print(f"key_id={key_id} role={args.role}\n{key}\n(shown once; only its hash is stored)")
    return 0


def register(sub: Any) -> None:
    def api_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8000)
        p.add_argument("--rate-per-s", type=float, default=50.0, help="per API key")

    def exec_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--execute", default=None, help="providers to act on for real, e.g. aws,runpod "
                                                       "(default: CLOUDARB_EXECUTE, else dry run)")
        p.add_argument("--max-instances", type=int, default=None, help="default: CLOUDARB_EXEC_MAX_INSTANCES or 16")
        p.add_argument("--max-usd-per-hour", type=float, default=None,
                       help="default: CLOUDARB_EXEC_MAX_USD_PER_HOUR or 200")

    a = sub.add_parser("api", help="the query API and built-in dashboard")
    api_args(a)
    a.set_defaults(func=cmd_api)

    sv = sub.add_parser("serve", help="sink + API + alerts + executors in one process (needed on chdb)")
    api_args(sv)
    exec_args(sv)
    sv.add_argument("--no-sink", action="store_true")
    sv.set_defaults(func=cmd_serve)

    ex = sub.add_parser("executors", help="deployment executors")
    ex_sub = ex.add_subparsers(dest="action", required=True)
    er = ex_sub.add_parser("run", help="consume decisions and act (dry run by default)")
    exec_args(er)
    er.add_argument("--idle-exit-s", type=float, default=None)
    er.set_defaults(func=cmd_executors)

    al = sub.add_parser("alerts", help="alert rules and webhooks")
    al_sub = al.add_subparsers(dest="action", required=True)
    ar = al_sub.add_parser("run", help="evaluate alert rules and deliver webhooks")
    ar.add_argument("--price-change-pct", type=float, default=10.0)
    ar.add_argument("--savings-usd-per-hour", type=float, default=1.0)
    ar.add_argument("--idle-exit-s", type=float, default=None)
    ar.set_defaults(func=cmd_alerts)

    k = sub.add_parser("apikey", help="API keys")
    k_sub = k.add_subparsers(dest="action", required=True)
    kc = k_sub.add_parser("create", help="create a key (printed once)")
    kc.add_argument("--role", choices=["viewer", "operator", "admin"], required=True)
    kc.add_argument("--name", default="")
    kc.set_defaults(func=cmd_apikey)
