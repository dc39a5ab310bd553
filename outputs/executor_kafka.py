"""The executors' Kafka consumer: decisions in, with the cluster's security settings passed through.

Broker ACLs. The decisions topic is an instruction to spend money, so on a shared cluster only the
decision worker may write it and the executors may only read it, e.g. (principals are examples; the
group is `<CLOUDARB_APP_ID>-executors`):

    kafka-acls --bootstrap-server $B --add --allow-principal User:cloudarb-worker \\
        --operation Write --operation Describe --topic cloudarb.decisions.v1
    kafka-acls --bootstrap-server $B --add --allow-principal User:cloudarb-executors \\
        --operation Read --operation Describe --topic cloudarb.decisions.v1
    kafka-acls --bootstrap-server $B --add --allow-principal User:cloudarb-executors \\
        --operation Read --group cloudarb-executors

(no other principal gets Write on the topic). The executors still trust nothing in a decision
(`outputs/executor_guard.py`): ACLs keep strangers out, the guard bounds what a bad decision can do.

Security settings (librdkafka reads no environment itself, so they are passed through explicitly):

    KAFKA_SECURITY_PROTOCOL   PLAINTEXT (default) | SSL | SASL_PLAINTEXT | SASL_SSL  -> security.protocol
    KAFKA_SASL_MECHANISM      PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 | ...           -> sasl.mechanism
    KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD                                       -> sasl.username / .password
    KAFKA_SSL_CA_LOCATION, KAFKA_SSL_CERTIFICATE_LOCATION, KAFKA_SSL_KEY_LOCATION, KAFKA_SSL_KEY_PASSWORD

The password is never logged and never part of an error message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from schemas.events import Event, decode_event
from schemas.topics import DECISIONS

log = logging.getLogger(__name__)

SECURITY_ENV = {
    "KAFKA_SECURITY_PROTOCOL": "security.protocol",
    "KAFKA_SASL_MECHANISM": "sasl.mechanism",
    "KAFKA_SASL_USERNAME": "sasl.username",
    "KAFKA_SASL_PASSWORD": "sasl.password",
    "KAFKA_SSL_CA_LOCATION": "ssl.ca.location",
    "KAFKA_SSL_CERTIFICATE_LOCATION": "ssl.certificate.location",
    "KAFKA_SSL_KEY_LOCATION": "ssl.key.location",
    "KAFKA_SSL_KEY_PASSWORD": "ssl.key.password",
}
PROTOCOLS = {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}


def kafka_security_config(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """librdkafka security settings from `KAFKA_*` variables (default: the process environment).

    Raises ValueError (naming the variable, never its value) on an unknown protocol or half a login."""
    env = os.environ if env is None else env
    conf = {key: env[var].strip() for var, key in SECURITY_ENV.items() if env.get(var, "").strip()}
    proto = conf.get("security.protocol", "PLAINTEXT").upper()
    if proto not in PROTOCOLS:
        raise ValueError(f"KAFKA_SECURITY_PROTOCOL must be one of {sorted(PROTOCOLS)}")
    if "security.protocol" in conf:
        conf["security.protocol"] = proto
    if ("sasl.username" in conf) != ("sasl.password" in conf):
        raise ValueError("KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD must be set together")
    if "sasl.username" in conf and not proto.startswith("SASL_"):
        raise ValueError("KAFKA_SASL_USERNAME is set but KAFKA_SECURITY_PROTOCOL is not SASL_SSL/SASL_PLAINTEXT")
    return conf


def decisions_consumer_config(bootstrap: str, group_id: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The executors' consumer settings: manual commits after handling (at-least-once), + security."""
    return {"bootstrap.servers": bootstrap, "group.id": group_id, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": 10000, "max.poll.interval.ms": 900_000,
            **kafka_security_config(env)}


def consume_decisions(bootstrap: str, handle: Callable[[list[Event]], None], stop: threading.Event,
                      group_id: str = "cloudarb-executors", topics: Sequence[str] = (DECISIONS.name,),
                      env: Mapping[str, str] | None = None, idle_exit_s: float | None = None,
                      batch_size: int = 100, poll_s: float = 0.5, consumer: Any = None) -> int:
    """Consume `topics` (the decisions; add the prices topic to feed a `MarketPrices` source) and hand each
    batch of events to `handle` (e.g. `ExecutorRunner.handle_events`), committing after it returned; a
    handler exception retries the batch after a pause (nothing lost, the runner is idempotent on decision
    id). Returns the number of events handled. `consumer`: for tests."""
    if consumer is None:
        from confluent_kafka import Consumer

        consumer = Consumer(decisions_consumer_config(bootstrap, group_id, env))
    consumer.subscribe(list(topics))
    n, last = 0, time.monotonic()
    try:
        while not stop.is_set():
            msgs = consumer.consume(num_messages=batch_size, timeout=poll_s)
            if not msgs:
                if idle_exit_s is not None and time.monotonic() - last > idle_exit_s:
                    break
                continue
            last = time.monotonic()
            events: list[Event] = []
            for m in msgs:
                if m.error():
                    log.debug("consume error: %s", m.error())
                    continue
                with contextlib.suppress(ValueError):  # undecodable: the streaming core dead-letters it
                    events.append(decode_event(m.value() or b""))
            while not stop.is_set():
                try:
                    handle(events)
                    break
                except Exception as exc:
                    log.warning("executors: handler failed (%s), retrying the batch", type(exc).__name__)
                    stop.wait(1.0)
            else:
                break  # stopped before the batch was handled: do not commit
            try:
                consumer.commit(asynchronous=False)
            except Exception as exc:  # e.g. a rebalance took the partitions: they are redelivered
                log.warning("executors: commit failed: %s", type(exc).__name__)
            n += len(events)
    finally:
        consumer.close()
    return n
