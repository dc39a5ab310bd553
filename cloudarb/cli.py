"""`cloudarb` command line: one subcommand per part of the pipeline (`cloudarb <command> --help` for each).

Set-up problems (no Java, port in use, broker down) print one line saying what to do and exit 2.
SIGTERM stops any command the way Ctrl-C does (cloudarb.signals): what it started is stopped too.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cloudarb import signals
from cloudarb.settings import Settings
from embedded.kafka import KafkaSetupError


def _bootstrap_or_die(s: Settings) -> str:
    if not s.kafka_bootstrap_servers:
        raise KafkaSetupError("KAFKA_BOOTSTRAP_SERVERS is not set: start a broker with `cloudarb kafka start` "
                              "or run `cloudarb demo`, which starts one")
    return s.kafka_bootstrap_servers


def cmd_worker(args: argparse.Namespace, s: Settings) -> int:
    import faulthandler
    import signal

    import faust

    from cloudarb.app import create_streams_app

    bootstrap = _bootstrap_or_die(s)
    # `kill -USR1 <pid>` writes every thread's Python stack to stderr, for diagnosing a stuck worker
    # (not possible where stderr is not a real file, e.g. captured in tests)
    with contextlib.suppress(ValueError, OSError):
        faulthandler.register(signal.SIGUSR1, all_threads=True)

    streams_worker = create_streams_app(bootstrap, app_id=s.cloudarb_app_id, engine=args.engine or s.cloudarb_engine,
                                        cg_budget_s=s.cloudarb_cg_budget_s, transactions=s.cloudarb_kafka_transactions,
                                        extra={"broker_commit_interval": s.cloudarb_commit_interval_s})
    # CLOUDARB_METRICS_PORT set: the worker's counters at /metrics (cloudarb.metrics, streams.runtime.metrics)
    from cloudarb.metrics import serving_metrics
    from streams.runtime.metrics import WorkerCollector

    worker_metrics = WorkerCollector(streams_worker.counters, streams_worker.market_stage, streams_worker.forecaster)
    with serving_metrics({"worker": worker_metrics}):
        worker = faust.Worker(streams_worker.app, loglevel=args.loglevel, quiet=True)
        worker.execute_from_commandline()
    return 0


def cmd_replay(args: argparse.Namespace, s: Settings) -> int:
    from cloudarb.pipeline import replay_to_kafka
    from connectors.publish import KafkaPublisher

    bootstrap = _bootstrap_or_die(s)
    data = Path(args.data or s.cloudarb_data_dir)
    pub = KafkaPublisher(bootstrap)
    print(f"replaying {data} {'as fast as possible' if args.speed <= 0 else f'at ×{args.speed:g}'}; Ctrl-C stops",
          file=sys.stderr, flush=True)
    try:
        n = replay_to_kafka(bootstrap, data, speed=args.speed, datasets=args.dataset or None, publisher=pub)
    except KeyboardInterrupt:  # deliver what was published so far, then stop
        left = pub.flush(10)
        print(f"replay interrupted ({left} events undelivered)", file=sys.stderr)
        return signals.interrupted_exit_code()
    print(f"published {n} events")
    return 0


def cmd_sink(args: argparse.Namespace, s: Settings) -> int:
    import threading

    from outputs.clickhouse import apply_ddl, get_client
    from outputs.sink import ClickHouseWriter, run_sink

    client = get_client(s.clickhouse_url, s.chdb_path)
    apply_ddl(client, s.clickhouse_db)
    bootstrap = _bootstrap_or_die(s)
    stop = threading.Event()
    writer = ClickHouseWriter(client, s.clickhouse_db)
    print("sink running; Ctrl-C stops it", flush=True)
    # SIGTERM: finish (or drop, mid-outage) the batch in hand, then stop
    with signals.sigterm_sets(stop), _sink_metrics(bootstrap, writer):
        stats = run_sink(bootstrap, writer, stop, idle_exit_s=args.idle_exit_s)
    print(f"sink: consumed {stats.consumed}, written {stats.written}, duplicates {stats.duplicates}, "
          f"undecodable {stats.undecodable}")
    return 0


@contextlib.contextmanager
def _sink_metrics(bootstrap: str, writer: Any) -> Iterator[None]:
    """CLOUDARB_METRICS_PORT set: the sink's counters and its group's lag at /metrics (cloudarb.metrics)."""
    from cloudarb.metrics import metrics_address, serving_metrics
    from outputs.metrics import GroupLag, OutputsCollector
    from outputs.server import ServiceHandle, pipeline_stats
    from outputs.sink import SINK_TOPICS

    if metrics_address() is None:
        yield
        return
    lag = GroupLag(bootstrap, {"cloudarb-sink": SINK_TOPICS}).start()  # run_sink's group
    try:
        stats = pipeline_stats(ServiceHandle(objects={"sink_writer": writer}))
        with serving_metrics({"outputs": OutputsCollector(stats, lag)}):
            yield
    finally:
        lag.stop()


def cmd_kafka(args: argparse.Namespace, s: Settings) -> int:
    from embedded.kafka import LocalKafka, fetch_jars

    if args.action == "fetch":
        print(fetch_jars())
        return 0
    if args.action == "topics":
        from embedded.kafka import ensure_topics

        ensure_topics(_bootstrap_or_die(s))
        print("topics ready")
        return 0
    broker = LocalKafka(s.kafka_data_dir, port=args.port)
    if args.action == "wipe":
        broker.wipe()
        return 0
    try:  # Ctrl-C or SIGTERM, also while starting, stops the broker
        broker.start()
        broker.ensure_topics()
        print(f"Kafka ready at {broker.bootstrap} (data in {broker.data_dir}); Ctrl-C stops it", flush=True)
        assert broker.proc is not None
        code = broker.proc.wait()
        print(f"cloudarb: the Kafka broker exited with code {code}: see {broker.data_dir / 'server.log'}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a requested stop: success, as for `serve`
        return 0
    finally:
        broker.stop()


def cmd_demo(args: argparse.Namespace, s: Settings) -> int:
    from cloudarb.app import load_workloads, workload_events
    from cloudarb.quotas import load_quotas, quotas_event
    from cloudarb.settings import ROOT
    from embedded.demo import DemoSetup, run_demo

    try:  # the example workloads, and the GPU quotas the example team holds: no plan exceeds them
        first = [*workload_events(load_workloads(s.cloudarb_workloads_file)),
                 quotas_event(load_quotas(s.cloudarb_quotas_file or ROOT / "examples" / "quotas.yaml"))]
    except Exception as exc:
        print(f"cloudarb demo failed: {exc}", file=sys.stderr)
        return 1
    setup = DemoSetup(home=s.cloudarb_home / "demo", data_dir=Path(args.data) if args.data else s.cloudarb_data_dir,
                      engine=s.cloudarb_engine, first_events=first, kafka_bootstrap_servers=s.kafka_bootstrap_servers,
                      clickhouse_url=s.clickhouse_url, clickhouse_db=s.clickhouse_db)
    return run_demo(setup, speed=args.speed, keep=args.keep, kafka_port=args.kafka_port, timeout_s=args.timeout_s,
                    with_outputs=not args.no_outputs, api_port=args.api_port, linger_s=args.linger_s)


def cmd_quotas(args: argparse.Namespace, s: Settings) -> int:
    from cloudarb.quotas import QuotaFileError, load_quotas, publish_quotas, quotas_event, quotas_yaml, read_quotas

    bootstrap = _bootstrap_or_die(s)
    if args.action == "show":
        e = read_quotas(bootstrap)
        if args.json:
            print(e.model_dump_json(indent=2) if e is not None else "null")
        else:
            print(quotas_yaml(e), end="")
        return 0
    path = Path(args.file) if args.file else s.cloudarb_quotas_file
    if path is None:
        print("cloudarb: give the quota file: --file F (or CLOUDARB_QUOTAS_FILE)", file=sys.stderr)
        return 2
    try:
        e = quotas_event(load_quotas(path))
    except QuotaFileError as exc:
        print(f"cloudarb: {exc}", file=sys.stderr)
        return 2
    publish_quotas(bootstrap, e)
    print(f"published {len(e.quotas)} quotas from {path} (event {e.event_id}); they replace the previous set")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cloudarb", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the whole pipeline locally on recorded data, print a summary")
    d.add_argument("--data", help="data folder (default: data/sample; try ../shared/data)")
    d.add_argument("--speed", type=float, default=0.0, help="×N real time; 0 = as fast as possible")
    d.add_argument("--keep", action="store_true", help="keep state from the previous run (default: wipe)")
    d.add_argument("--kafka-port", type=int, default=None)
    d.add_argument("--timeout-s", type=float, default=600.0)
    d.add_argument("--no-outputs", action="store_true", help="skip the API/dashboard, alerts and executors")
    d.add_argument("--api-port", type=int, default=0, help="API/dashboard port (0 = any free port)")
    d.add_argument("--linger-s", type=float, default=0.0, help="keep everything up this long after catching up")
    d.set_defaults(func=cmd_demo)

    w = sub.add_parser("worker", help="the streaming worker: market stage (confluent-kafka) + decision stage (Faust)")
    w.add_argument("--engine", default=None, help="greedy | portfolio | package.module:factory (your own engine)")
    w.add_argument("--loglevel", default="warning")
    w.set_defaults(func=cmd_worker)

    r = sub.add_parser("replay", help="publish recorded market data to Kafka")
    r.add_argument("--data")
    r.add_argument("--dataset", action="append")
    r.add_argument("--speed", type=float, default=0.0)
    r.set_defaults(func=cmd_replay)

    k = sub.add_parser("sink", help="write topics to ClickHouse")
    k.add_argument("--idle-exit-s", type=float, default=None)
    k.set_defaults(func=cmd_sink)

    kf = sub.add_parser("kafka", help="the local Kafka broker")
    kf.add_argument("action", choices=["start", "fetch", "wipe", "topics"],
                    help="start a local broker; fetch its jars; wipe its data; create the topics")
    kf.add_argument("--port", type=int, default=9092)
    kf.set_defaults(func=cmd_kafka)

    q = sub.add_parser(
        "quotas", help="the GPU quotas you hold: hard limits on placements",
        description="GPU quotas per (provider, region or '*', GPU model or family): no plan places more GPUs "
        "than a quota allows. `set` publishes a file's quotas as one set on cloudarb.quotas.v1, replacing the "
        "previous set (the worker re-decides every workload); `show` prints the set in force, as a file `set` "
        "reads back. The API does the same: POST/GET /v1/quotas. The worker does not read a file itself: "
        "CLOUDARB_QUOTAS_FILE is only `set`'s default file. Example: examples/quotas.yaml.")
    q_sub = q.add_subparsers(dest="action", required=True)
    qs = q_sub.add_parser("set", help="publish the quotas of a YAML or JSON file (replacing the previous set)")
    qs.add_argument("--file", default=None, help="quota file (default: CLOUDARB_QUOTAS_FILE), e.g. "
                                                  "examples/quotas.yaml")
    qs.set_defaults(func=cmd_quotas)
    qw = q_sub.add_parser("show", help="print the quota set in force (read from Kafka)")
    qw.add_argument("--json", action="store_true", help="the QuotasSet event as JSON")
    qw.set_defaults(func=cmd_quotas)

    # further commands live in their own modules (cloudarb/cmd_*.py), each with `register(subparsers)`;
    # their functions are called as func(args, settings) -> exit code
    import importlib
    import pkgutil

    import cloudarb

    for m in sorted(pkgutil.iter_modules(cloudarb.__path__), key=lambda m: m.name):
        if m.name.startswith("cmd_"):
            importlib.import_module(f"cloudarb.{m.name}").register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # SIGTERM (systemd, Kubernetes, `docker stop`) stops every command the way Ctrl-C does
    signals.install()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from connectors.base import install_log_redaction

    install_log_redaction()  # API keys, tokens, signatures (?key=, Authorization: ...) never reach a log line
    try:
        return int(args.func(args, Settings()))
    except KafkaSetupError as exc:
        print(f"cloudarb: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return signals.interrupted_exit_code()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
