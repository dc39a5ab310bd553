"""`cloudarb demo`: the whole pipeline on one machine, on recorded real data, then a summary.

Starts (or uses, with KAFKA_BOOTSTRAP_SERVERS) a broker, the Faust worker (a subprocess), the ClickHouse
sink (a thread in this process, which owns the chdb directory), publishes the example workloads and
replays the market data. It shows a live progress line, waits until every consumer has caught up
(measured from Kafka offsets, not guessed), prints a summary, and stops everything it started,
also on Ctrl-C or SIGTERM (which the CLI turns into `KeyboardInterrupt`).

What it runs on comes from the CLI (`cloudarb.cli.cmd_demo`: the settings, the example workloads and
quotas) as a `DemoSetup`; the worker is `cloudarb worker`, started as a process.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from connectors.publish import KafkaPublisher, topic_for
from connectors.replay import paced, replay_events
from embedded.children import die_with_parent
from embedded.kafka import LocalKafka, ensure_topics
from outputs.clickhouse import apply_ddl, get_client, table_counts
from outputs.sink import SINK_TOPICS, ClickHouseWriter, run_sink
from schemas.events import Event
from schemas.kafka import client_config
from schemas.topics import CAPACITY, INTERRUPTIONS, PRICES
from streams.runtime.market import market_group

MARKET_TOPICS = (PRICES.name, CAPACITY.name, INTERRUPTIONS.name)


@dataclass(frozen=True)
class DemoSetup:
    """What the demo runs on (the CLI fills it from the settings)."""

    home: Path                   # its state: broker data, chdb, worker.log (wiped unless `keep`)
    data_dir: Path               # the recorded market data it replays
    engine: str                  # the worker's engine (`cloudarb worker --engine`)
    first_events: Sequence[Event] = ()  # published before the replay: the example workloads and quotas
    kafka_bootstrap_servers: str | None = None  # set: use that cluster, start no broker
    clickhouse_url: str | None = None  # unset: embedded chdb in `home`
    clickhouse_db: str = "cloudarb"


def group_position(bootstrap: str, group: str, topics: Sequence[str]) -> tuple[int, int]:
    """(sum of committed offsets, sum of end offsets) of a consumer group over `topics`."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({**client_config(bootstrap), "group.id": group, "enable.auto.commit": False})
    try:
        md = c.list_topics(timeout=10)
        tps = [TopicPartition(t, p) for t in topics if t in md.topics for p in md.topics[t].partitions]
        committed = sum(max(tp.offset, 0) for tp in c.committed(tps, timeout=10))
        end = sum(c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps)
        return committed, end
    finally:
        c.close()


def _start_group_at_end(bootstrap: str, group: str, topics: Sequence[str]) -> None:
    """Commit the current end offsets for a new consumer group, so it reads only what comes next."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({**client_config(bootstrap), "group.id": group, "enable.auto.commit": False})
    try:
        md = c.list_topics(timeout=10)
        tps = [TopicPartition(t, p, c.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1])
               for t in topics if t in md.topics for p in md.topics[t].partitions]
        c.commit(offsets=tps, asynchronous=False)
    finally:
        c.close()


def _stop_process(p: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    if p.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(5)


def _publish(bootstrap: str, events: Sequence[Event]) -> Counter[str]:
    """Publish `events` and wait for the broker's acks; the count per event type."""
    pub = KafkaPublisher(bootstrap)
    try:
        pub.publish_all(events)
        if pub.flush(30) or pub.failed:
            raise RuntimeError(f"publishing the workloads and quotas failed ({pub.failed} failed)")
    finally:
        pub.close()
    return Counter(type(e).__name__ for e in events)


def run_demo(setup: DemoSetup, speed: float = 0.0, keep: bool = False, kafka_port: int | None = None,
             timeout_s: float = 600.0, with_outputs: bool = True, api_port: int = 0, linger_s: float = 0.0) -> int:
    """The exit code: 0 when every published price reached ClickHouse and a decision was made, 1 if not or on
    a failure; on Ctrl-C or SIGTERM it stops everything it started and re-raises `KeyboardInterrupt`."""
    console = Console()
    t0 = time.monotonic()
    home = setup.home
    data = setup.data_dir
    if not keep:
        shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)
    published: Counter[str] = Counter()
    with contextlib.ExitStack() as stack:
        try:
            # 1. broker
            if setup.kafka_bootstrap_servers:
                bootstrap = setup.kafka_bootstrap_servers
                app_id = f"cloudarb-demo-{int(time.time())}"
                console.print(f"using Kafka at {bootstrap}")
            else:
                console.print("starting the local Kafka broker ...")
                broker = LocalKafka(home / "kafka", port=kafka_port)
                stack.callback(broker.stop)
                broker.start()
                bootstrap = broker.bootstrap
                app_id = "cloudarb-demo"
                console.print(f"Kafka ready at {bootstrap}")
            ensure_topics(bootstrap)

            # 2. worker
            env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "CLOUDARB_APP_ID": app_id,
                   "PYTHONUNBUFFERED": "1"}
            worker_log = open(home / "worker.log", "ab")  # noqa: SIM115 - closed by the stack
            stack.callback(worker_log.close)
            # its own session (we stop it before the broker); it gets SIGTERM should this process die
            worker = subprocess.Popen(
                die_with_parent([sys.executable, "-m", "cloudarb", "worker", "--engine", setup.engine]),
                env=env, stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True)
            stack.callback(_stop_process, worker)

            # 3. sink (this process owns chdb)
            client = get_client(setup.clickhouse_url, home / "chdb")
            apply_ddl(client, setup.clickhouse_db)
            writer = ClickHouseWriter(client, setup.clickhouse_db)
            stop_sink = threading.Event()
            sink_group = f"{app_id}-sink"
            if setup.kafka_bootstrap_servers:
                # an existing cluster may already hold events: this run's sink starts at today's end offsets
                _start_group_at_end(bootstrap, sink_group, SINK_TOPICS)
            sink = threading.Thread(target=run_sink, args=(bootstrap, writer, stop_sink),
                                    kwargs={"group_id": sink_group}, daemon=True, name="sink")
            sink.start()

            def _stop_sink() -> None:
                stop_sink.set()
                sink.join(30)

            stack.callback(_stop_sink)

            # 3b. what users touch, in this process (it owns chdb): API + dashboard, alerts, dry-run executors
            if with_outputs:
                from outputs.server import start_outputs

                opub = KafkaPublisher(bootstrap)
                stack.callback(opub.close)  # after outs.stop (callbacks run last-in first-out)
                admin = os.environ.get("CLOUDARB_ADMIN_KEY") or secrets.token_urlsafe(24)
                outs = start_outputs(bootstrap, client, setup.clickhouse_db, opub.publish, flush=lambda: opub.flush(10),
                                     port=api_port, admin_key=admin, group_prefix=app_id, allow_private_webhooks=True)
                stack.callback(outs.stop)
                console.print(f"dashboard: {outs.api_url}/dashboard#key={admin}")  # console only, never logged
                console.print("[dim]the link holds this demo's admin API key (a local demo on 127.0.0.1 only; never "
                              "logged): don't share it[/dim]")

            # 4. workloads and replay (end offsets first: an existing cluster may already hold data)
            base_end = group_position(bootstrap, app_id, MARKET_TOPICS)[1]
            published.update(_publish(bootstrap, setup.first_events))  # the workloads and the quotas they obey
            replay_done = threading.Event()
            replay_error: list[BaseException] = []

            def replay() -> None:
                pub = KafkaPublisher(bootstrap)
                try:
                    # ×speed real time; a gap between datasets (years apart) is cut to 5 s of waiting
                    for e in paced(replay_events(data), speed, max_gap_s=5.0):
                        pub.publish(e)
                        published[type(e).__name__] += 1
                    if pub.flush(60) or pub.failed:
                        raise RuntimeError(f"replay: {pub.failed} events failed to publish")
                except BaseException as exc:  # reported below
                    replay_error.append(exc)
                finally:
                    replay_done.set()

            threading.Thread(target=replay, daemon=True, name="replay").start()
            console.print(f"replaying {data} {'as fast as possible' if speed <= 0 else f'at ×{speed:g}'} ...")

            # 5. progress until caught up
            processed = 0
            deadline = t0 + timeout_s
            with Live(console=console, refresh_per_second=4, transient=False) as live:
                while True:
                    if worker.poll() is not None:
                        raise RuntimeError(f"the worker exited with code {worker.returncode}: see {home/'worker.log'}")
                    if replay_error:
                        raise RuntimeError(str(replay_error[0]))
                    processed, market_end = group_position(bootstrap, market_group(app_id), MARKET_TOPICS)
                    ch_done, ch_end = group_position(bootstrap, app_id, [f"{app_id}-market-changes"])
                    sink_done, sink_end = group_position(bootstrap, sink_group, SINK_TOPICS)
                    n_pub = sum(v for k, v in published.items() if k not in ("WorkloadRequested", "QuotasSet"))
                    done, total = processed - base_end, market_end - base_end
                    live.update(
                        f"[bold]published[/] {n_pub}  [bold]processed[/] {done}/{total}  "
                        f"[bold]decisions[/] {writer.stats.rows.get('decisions', 0)}  "
                        f"[bold]sink rows[/] {sum(writer.stats.rows.values())}  "
                        f"[dim]{time.monotonic() - t0:.0f}s[/]")
                    caught_up = (replay_done.is_set() and market_end >= base_end + n_pub and processed >= market_end
                                 and ch_done >= ch_end
                                 and sink_done >= sink_end and writer.stats.rows.get("decisions", 0) > 0)
                    if caught_up:
                        # one more look after a pause: a debounced re-solve may still be in flight
                        time.sleep(1.0)
                        if group_position(bootstrap, app_id, [f"{app_id}-market-changes"])[1] == ch_end and \
                                group_position(bootstrap, sink_group, SINK_TOPICS)[1] == sink_end:
                            break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"not caught up after {timeout_s:.0f}s: see {home / 'worker.log'}")
                    time.sleep(0.5)
            if linger_s > 0:
                console.print(f"pipeline caught up; the dashboard stays up for {linger_s:.0f} s (Ctrl-C stops)")
                time.sleep(linger_s)
            _stop_sink()
            processed -= base_end
            counts = table_counts(client, setup.clickhouse_db)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: stopping everything ...[/]")
            raise
        except Exception as exc:
            console.print(f"[red]cloudarb demo failed:[/] {exc}")
            return 1
    elapsed = time.monotonic() - t0
    return _summary(console, published, processed, counts, elapsed)


def _summary(console: Console, published: Counter[str], processed: int, counts: dict[str, int],
             elapsed: float) -> int:
    t = Table(title="cloudarb demo summary")
    t.add_column("what")
    t.add_column("count", justify="right")
    for k in sorted(published):
        t.add_row(f"published {k} ({topic_for_name(k)})", str(published[k]))
    t.add_row("events processed by the worker", str(processed))
    t.add_row("decisions", str(counts.get("decisions", 0)))
    for k, v in sorted(counts.items()):
        t.add_row(f"ClickHouse rows: {k}", str(v))
    t.add_row("elapsed seconds", f"{elapsed:.1f}")
    console.print(t)
    ok = counts.get("prices", -1) == published.get("PriceObserved", 0) and counts.get("decisions", 0) >= 1
    line = (f"SUMMARY published={sum(published.values())} processed={processed} decisions={counts.get('decisions', 0)} "
            f"prices_rows={counts.get('prices', 0)} prices_published={published.get('PriceObserved', 0)} "
            f"elapsed_s={elapsed:.1f} {'OK' if ok else 'MISMATCH'}")
    print(line)
    return 0 if ok else 1


def topic_for_name(event_type: str) -> str:
    from schemas.events import EVENT_TYPES

    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        return "?"
    from schemas.topics import TOPICS

    for spec in TOPICS.values():
        if cls in spec.events:
            return spec.name
    return "?"


__all__ = ["DemoSetup", "group_position", "run_demo", "topic_for"]
