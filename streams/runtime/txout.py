"""The decision stage's writes as one Kafka transaction per step, so that only one worker's steps land.

The decision stage has one writer: the worker that holds its one-partition inputs. A worker that loses them
without noticing at once (a long pause, a network partition: its session expires and another worker takes
over) can still finish the step it had in flight and write its decisions, plans and state: a *zombie*
writer, whose stale plan would overwrite the new owner's. `StepWriter` fences it:

- every worker writes the stage's outputs with the same `transactional.id` (`<app_id>-decide`);
- `open()` (called when a worker starts its decider, *before* it reads the stage's state back) registers
  that id with the broker. The broker then aborts the previous owner's open transaction and refuses every
  later write of the previous owner's producer: it is fenced;
- each step is one transaction: `begin()`, `produce()` its decisions, state records and plans, `commit()`.
  All of them become visible together or not at all: readers use `isolation.level=read_committed`
  (librdkafka's default; every consumer of these topics is confluent-kafka);
- a fenced writer's `commit()` raises `Fenced`: nothing of that step is visible, and the worker must not
  decide again until a rebalance gives it the inputs back (streams.runtime.app waits for one).

A transaction's commit costs one more round trip to the broker than a plain acknowledged write; the two
flushes it replaces (decisions, then state and plans) cost one each.

A Kafka-compatible service without transactions (CLOUDARB_KAFKA_TRANSACTIONS=false) gets `PlainStepWriter`:
the same calls, a step's records written with one acknowledged flush, and no fence (see its docstring).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from schemas.kafka import client_config
from streams.runtime.fastout import produce_waiting

log = logging.getLogger(__name__)

# the broker's "another producer with this transactional.id took over" errors
_FENCED_CODES = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})


class Fenced(RuntimeError):
    """Another worker registered the decision stage's transactional id after this one: this worker's step
    was not written (and must not be retried until a rebalance gives this worker the inputs again)."""


class StepWriter:
    """One transactional producer, used one step at a time: `open()` once per decider, then per step
    `begin()`, `produce()`..., `commit()` (or `abort()`). Blocking calls: run `open` and `commit` in a
    thread from the event loop."""

    def __init__(self, bootstrap: str, transactional_id: str, timeout_s: float = 30.0) -> None:
        self.bootstrap = bootstrap
        self.transactional_id = transactional_id
        self.timeout_s = timeout_s
        self._p: Any = None
        self._in_txn = False

    @property
    def is_open(self) -> bool:
        return self._p is not None

    def open(self) -> None:
        """A new producer for the id, registered with the broker: fences every earlier producer of the id
        (this worker's own included) and aborts its open transaction."""
        from confluent_kafka import Producer

        self.close()
        p = Producer({
            **client_config(self.bootstrap), "transactional.id": self.transactional_id, "linger.ms": 2,
            "compression.type": "lz4", "transaction.timeout.ms": 60_000, "log_level": 3,
        })
        try:
            p.init_transactions(self.timeout_s)
        except KafkaException as exc:
            raise self._error("registering the transactional id", exc) from exc
        self._p = p

    def begin(self) -> None:
        if self._p is None:
            raise RuntimeError("StepWriter.begin() before open()")
        try:
            self._p.begin_transaction()
        except KafkaException as exc:
            raise self._error("beginning a transaction", exc) from exc
        self._in_txn = True

    def produce(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None) -> None:
        """Queue a record of the step's transaction (a `streams.runtime.store.Produce`)."""
        try:
            produce_waiting(self._p, topic, key, value, partition)
        except KafkaException as exc:   # refused before sending (too large, fenced): the step fails
            raise self._error(f"producing to {topic}", exc) from exc

    def commit(self) -> None:
        """Commit the step's transaction: every record produced since `begin()` becomes visible, or none.
        Raises `Fenced` when another worker took the id over, RuntimeError on any other failure (the
        transaction is then aborted, and the step can be retried)."""
        for _ in range(5):
            try:
                self._p.commit_transaction(self.timeout_s)
                self._in_txn = False
                return
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if not isinstance(err, KafkaError):
                    self.abort()
                elif err.fatal():   # (fenced, or the producer is broken: `_error` drops it)
                    pass
                elif err.retriable() and not err.txn_requires_abort():
                    continue
                else:
                    self.abort()
                raise self._error("committing a transaction", exc) from exc
        self.abort()
        raise RuntimeError("committing a transaction: still retriable after 5 attempts")

    def abort(self) -> None:
        """Abort the open transaction, if any (best effort: a fenced or broken producer is closed, and the
        broker aborts what it had by itself)."""
        if self._p is None or not self._in_txn:
            return
        self._in_txn = False
        try:
            self._p.abort_transaction(self.timeout_s)
        except KafkaException as exc:
            log.warning("aborting the decision stage's transaction: %s; closing the producer", exc)
            self.close()

    def close(self) -> None:
        """Drop the producer (nothing is flushed: an open transaction is aborted by the broker)."""
        self._p, self._in_txn = None, False

    def _error(self, what: str, exc: KafkaException) -> Exception:
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and (err.code() in _FENCED_CODES or
                                            (err.fatal() and "fenced" in str(err.str()).lower())):
            self.close()
            return Fenced(f"{what}: another worker took over transactional id {self.transactional_id!r} ({err.str()})")
        if isinstance(err, KafkaError) and err.fatal():
            self.close()   # (a fatal error: this producer is done; the next decider opens a new one)
        return RuntimeError(f"{what}: {exc}")


class PlainStepWriter:
    """`StepWriter`'s calls without a transaction, for a Kafka-compatible service that has none: `commit()`
    waits until every record of the step is acknowledged (raises RuntimeError if one failed: the caller
    retries the step; records of a failed step that did land are superseded by the retry's, as state and
    plans are keyed and decisions carry the step's workloads). **Not fenced**: a worker that lost the
    stage without noticing can still write its step in flight (see the module docstring), and a reader
    may see a step's first records before its last, or those of a step that failed."""

    def __init__(self, bootstrap: str, timeout_s: float = 30.0) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        self._p: Any = None
        self._errors: list[str] = []

    @property
    def is_open(self) -> bool:
        return self._p is not None

    def open(self) -> None:
        from confluent_kafka import Producer

        self.close()
        self._p = Producer({
            **client_config(self.bootstrap), "enable.idempotence": True, "acks": "all", "linger.ms": 2,
            "compression.type": "lz4", "log_level": 3,
        })

    def begin(self) -> None:
        if self._p is None:
            raise RuntimeError("PlainStepWriter.begin() before open()")
        self._errors = []

    def _on_delivery(self, topic: str, err: Any, _msg: Any) -> None:
        if err is not None:
            self._errors.append(f"{topic}: {err}")

    def produce(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None) -> None:
        """Queue a record of the step (a `streams.runtime.store.Produce`)."""
        try:
            produce_waiting(self._p, topic, key, value, partition, on_delivery=partial(self._on_delivery, topic))
        except KafkaException as exc:   # refused before sending (too large): the step fails
            raise RuntimeError(f"producing to {topic}: {exc}") from exc

    def commit(self) -> None:
        """Wait until the step's records are acknowledged; RuntimeError if one failed or the wait timed out."""
        left = self._p.flush(self.timeout_s)
        if left:
            self._errors = []
            raise RuntimeError(f"writing a step: {left} records undelivered after {self.timeout_s:.0f} s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise RuntimeError(f"writing a step: {len(errors)} records failed ({errors[0]})")

    def abort(self) -> None:
        """End a failed step. Without transactions its records already queued cannot be withdrawn: they are
        sent by librdkafka meanwhile (the next `commit()` waits for them too), and the retried step's records
        supersede them. Nothing blocks here: the caller runs it on the event loop. (librdkafka's `purge()` is
        no way out: on an idempotent producer it purged the next step's records too.)"""
        self._errors = []

    def close(self) -> None:
        self._p, self._errors = None, []


def step_writer(bootstrap: str, transactional_id: str, transactions: bool = True) -> StepWriter | PlainStepWriter:
    """The decision stage's writer: transactional and fenced (`StepWriter`), or plain (`PlainStepWriter`)
    where the Kafka service has no transactions."""
    return StepWriter(bootstrap, transactional_id) if transactions else PlainStepWriter(bootstrap)
