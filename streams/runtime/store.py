"""`ChangelogStore`: the one state-store mechanism of the worker, a dict backed by a compacted topic of ours.

Every piece of state a stage owns (the market stage's offer states; the decision stage's market view,
workload specs, quotas and plans) is a `ChangelogStore`:

- **write after the outputs**: `put()` changes the dict and queues the record; the stage produces its
  outputs, waits for the broker's acknowledgement, then `write()`s the queued records (and waits again).
  A crash in between redelivers the input, whose processing is idempotent; `rollback()` puts the dict
  back when a batch fails;
- **recover on assignment**: `recover(partitions)` reads the topic's partitions from their start to their
  end into the dict before the stage processes anything of them;
- **follow**: `TopicFollower` reads a topic to its end, then picks up what follows (the plans topic, which
  every worker's market stage follows for the offers under a plan).

Encoding (version 1, named in the topic: `.v1`): the key is the UTF-8 string key; the value its compact
JSON; no value (a tombstone) deletes the key. Topics are compacted, so a topic holds at least the last
record of every key.

>>> s = ChangelogStore("t.v1")
>>> s.put("a", {"n": 1}); s.put("b", 2); s.rollback(); len(s)
0
>>> s.put("a", {"n": 1}); sent = []; s.write(lambda *r: sent.append(r))
1
>>> s.get("a"), sent
({'n': 1}, [('t.v1', b'a', b'{"n":1}', 0)])
>>> decode_record(*encode_record("a", {"n": 1}))
('a', {'n': 1})
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pydantic_core import from_json, to_json

from schemas.kafka import client_config

log = logging.getLogger(__name__)

Produce = Callable[[str, bytes, bytes | None, int], None]   # (topic, key, value, partition)
_UNSET = object()


class StoreUnavailable(RuntimeError):
    """A store's topic could not be read (the broker is down or the topic is missing): retry later. A
    RuntimeError, never an OSError or TimeoutError, so that callers never mistake it for a dead process."""


def encode_record(key: str, value: Any) -> tuple[bytes, bytes | None]:
    """A store record: UTF-8 key, compact JSON value (None: a tombstone)."""
    return key.encode(), None if value is None else to_json(value)


def decode_record(key: bytes, value: bytes | None) -> tuple[str, Any]:
    """`encode_record` reversed."""
    return key.decode(), None if value is None else from_json(value)


class ChangelogStore:
    """A dict of JSON values whose every change is a record on `topic` (compacted, `partitions` partitions)."""

    def __init__(self, topic: str, partitions: int = 1) -> None:
        self.topic = topic
        self.partitions = partitions
        self.data: dict[str, Any] = {}
        self.partition_of: dict[str, int] = {}   # key -> the partition its records go to
        self._undo: dict[str, tuple[Any, int | None]] = {}   # key -> (value, partition) before the batch
        self._pending: dict[str, tuple[Any, int]] = {}      # key -> (value, partition) to write

    # --- reading ------------------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __len__(self) -> int:
        return len(self.data)

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(self.data.items())

    # --- a batch of changes -------------------------------------------------------------------------

    def put(self, key: str, value: Any, partition: int = 0) -> None:
        """store[key] = value (None deletes it), and queue the record for `write()`."""
        if key not in self._undo:
            self._undo[key] = (self.data.get(key, _UNSET), self.partition_of.get(key))
        self._set(key, value, partition)
        self._pending[key] = (value, partition)

    def rollback(self) -> None:
        """Put back what the `put()`s since the last `write()` changed; drop their records."""
        for key, (value, partition) in self._undo.items():
            if value is _UNSET:
                self.data.pop(key, None)
                self.partition_of.pop(key, None)
            else:
                self.data[key] = value
                if partition is not None:
                    self.partition_of[key] = partition
        self._undo.clear()
        self._pending.clear()

    def pending(self) -> int:
        return len(self._pending)

    def write(self, produce: Produce) -> int:
        """Produce the queued records (the caller then waits for the broker's acknowledgement). Returns
        how many. Call it only once the outputs the changes stand for are acknowledged."""
        n = len(self._pending)
        for key, (value, partition) in self._pending.items():
            produce(self.topic, *encode_record(key, value), partition)
        self._pending.clear()
        self._undo.clear()
        return n

    def clear(self) -> None:
        self.data.clear()
        self.partition_of.clear()
        self._undo.clear()
        self._pending.clear()

    def _set(self, key: str, value: Any, partition: int) -> None:
        if value is None:
            self.data.pop(key, None)
            self.partition_of.pop(key, None)
        else:
            self.data[key] = value
            self.partition_of[key] = partition

    # --- recovery -----------------------------------------------------------------------------------

    def recover(self, bootstrap: str, partitions: Iterable[int] | None = None,
                stop: Callable[[], bool] = lambda: False, timeout_s: float = 30.0) -> int:
        """Replace the dict by what the topic's `partitions` (default: all) hold, read from their start to
        their end. Returns the records read. Raises StoreUnavailable when the topic cannot be read."""
        self.clear()
        parts = list(range(self.partitions)) if partitions is None else sorted(partitions)

        def apply(_topic: str, partition: int, key: bytes, value: bytes | None) -> None:
            k, v = decode_record(key, value)
            self._set(k, v, partition)

        follower = TopicFollower(bootstrap, [(self.topic, p) for p in parts], apply, group=f"{self.topic}-recovery")
        try:
            return follower.read_to_end(stop, timeout_s)
        finally:
            follower.close()


def recover_all(bootstrap: str, stores: Iterable[ChangelogStore], stop: Callable[[], bool] = lambda: False) -> int:
    """Recover several whole stores (each from all its partitions); returns the records read."""
    return sum(s.recover(bootstrap, None, stop) for s in stores)


class TopicFollower:
    """A consumer of whole topic partitions, outside any consumer group: `read_to_end()` from the start,
    then `poll()` for what follows. Each record with a key goes to `apply(topic, partition, key, value)`;
    a record `apply` cannot read (ValueError, KeyError, TypeError) is logged and skipped."""

    def __init__(self, bootstrap: str, partitions: list[tuple[str, int]],
                 apply: Callable[[str, int, bytes, bytes | None], None], group: str) -> None:
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.apply = apply
        self.group = group
        self._consumer: Any = None

    def read_to_end(self, stop: Callable[[], bool] = lambda: False, timeout_s: float = 30.0) -> int:
        """Assign the partitions from their start and apply every record up to their end (as of now).
        Returns the records applied; raises StoreUnavailable when a topic is missing or unreachable."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

        self.close()
        try:
            c = Consumer({**client_config(self.bootstrap), "group.id": self.group, "enable.auto.commit": False,
                          "log_level": 3, "fetch.max.bytes": 50_000_000,
                          "topic.metadata.refresh.interval.ms": 10_000})
            self._consumer = c
            ends: dict[tuple[str, int], int] = {}
            for topic, p in self.partitions:
                meta = c.list_topics(topic, timeout=timeout_s).topics.get(topic)
                if meta is None or meta.error is not None or p not in meta.partitions:
                    raise StoreUnavailable(f"cannot read {topic}[{p}]: {meta.error if meta else 'no such topic'}")
                ends[(topic, p)] = c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1]
            c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in self.partitions])
            todo = {tp for tp, end in ends.items() if end > 0}
            n = 0
            t0 = progress_t = time.monotonic()
            while todo:
                if stop():
                    raise StoreUnavailable("stopped while reading back a store")
                got = self.poll(0.5)
                n += got
                done = {(tp.topic, tp.partition) for tp in c.position([TopicPartition(t, p) for t, p in todo])
                        if tp.offset >= ends[(tp.topic, tp.partition)]}
                todo -= done
                now = time.monotonic()
                if got or done:
                    progress_t = now
                elif todo and now - progress_t > timeout_s:
                    # (a consumer that stopped fetching, e.g. across a broker restart: the caller retries
                    # with a fresh one, rather than waiting silently for the overall limit)
                    raise StoreUnavailable(f"reading {sorted(todo)} to their end: nothing read for {timeout_s:.0f} s")
                if todo and now - t0 > 10 * timeout_s:
                    raise StoreUnavailable(f"reading {sorted(todo)} to their end took over {10 * timeout_s:.0f} s")
            return n
        except StoreUnavailable:
            raise
        except (KafkaException, OSError, TimeoutError, RuntimeError) as exc:
            raise StoreUnavailable(f"cannot read {self.partitions}: {exc}") from exc

    def poll(self, timeout_s: float = 0.0) -> int:
        """Apply the records that arrived since the last call; returns how many."""
        if self._consumer is None:
            return 0
        n = 0
        for m in self._consumer.consume(10_000, timeout=timeout_s):
            key = m.key()
            if m.error() is not None or key is None:
                continue
            try:
                self.apply(m.topic(), m.partition(), key, m.value())
                n += 1
            except (ValueError, KeyError, TypeError) as exc:  # not our record: never fatal
                log.warning("%s: skipped an unreadable record at %s[%s]@%s: %s", self.group, m.topic(),
                            m.partition(), m.offset(), exc)
        return n

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def ensure_compacted(bootstrap: str, topics: dict[str, int], also: dict[str, int] | None = None) -> None:
    """Create the compacted `topics` ({name: partitions}) and the plain `also` topics, where missing."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(client_config(bootstrap))
    want = {n: NewTopic(n, p, 1, config={"cleanup.policy": "compact"}) for n, p in topics.items()}
    want.update({n: NewTopic(n, p, 1) for n, p in (also or {}).items()})
    have = set(admin.list_topics(timeout=30).topics)
    missing = [t for n, t in want.items() if n not in have]
    for name, fut in (admin.create_topics(missing) if missing else {}).items():
        try:
            fut.result(30)
        except Exception as exc:  # created meanwhile by another worker
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
            log.debug("topic %s exists", name)
