"""The decision stage's transactional writes (streams.runtime.txout) on the real broker: a writer overtaken by
another with the same transactional id (a zombie) gets nothing more in, and readers see whole steps only; and
the plain writer of a Kafka service without transactions (CLOUDARB_KAFKA_TRANSACTIONS=false)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.runtime.txout import Fenced, PlainStepWriter, StepWriter
from tests.conftest import unique
from tests.integration.helpers import decided, overtake_after_a_decision, read_all, start_worker, stop, wait_until
from tests.integration.test_kafka_clients import _new_topic

pytestmark = pytest.mark.integration


def _values(bootstrap: str, topic: str) -> list[bytes]:
    return [m.value() for m in read_all(bootstrap, [topic], idle_polls=4)]   # (read_committed: librdkafka's default)


def _fail_a_step_then_write(w: StepWriter | PlainStepWriter, topic: str, first: bytes | None, nxt: bytes) -> None:
    """A step (`first`, if any, then a record over the producer's message.max.bytes: refused) that fails and
    is aborted; then a step of `nxt`, committed; the writer closed."""
    w.begin()
    if first is not None:
        w.produce(topic, b"k", first)
    with pytest.raises(RuntimeError, match="producing to"):
        w.produce(topic, b"k", b"x" * 2_000_000)
    w.abort()
    w.begin()
    w.produce(topic, b"k", nxt)
    w.commit()
    w.close()


def test_an_overtaken_writer_is_fenced_and_its_open_step_never_shows(kafka_bootstrap: str) -> None:
    topic = _new_topic(kafka_bootstrap, 1)
    tid = unique("decide")
    old = StepWriter(kafka_bootstrap, tid)
    old.open()
    old.begin()
    old.produce(topic, b"k", b"step 1")
    old.commit()
    old.begin()
    old.produce(topic, b"k", b"zombie step, open when overtaken")
    new = StepWriter(kafka_bootstrap, tid)
    new.open()                                   # the new owner starts its decider
    with pytest.raises(Fenced):
        old.commit()
    assert not old.is_open
    new.begin()
    new.produce(topic, b"k", b"step 2")
    new.produce(topic, b"k", b"step 2, second record")
    new.commit()
    new.close()
    assert _values(kafka_bootstrap, topic) == [b"step 1", b"step 2", b"step 2, second record"]


def test_a_step_that_fails_leaves_nothing_and_the_next_one_lands(kafka_bootstrap: str) -> None:
    topic = _new_topic(kafka_bootstrap, 1)
    w = StepWriter(kafka_bootstrap, unique("decide"))
    w.open()
    _fail_a_step_then_write(w, topic, b"part of a failed step", b"next step")
    assert _values(kafka_bootstrap, topic) == [b"next step"]


def test_the_plain_writer_lands_each_step_and_fails_one_it_cannot_write(kafka_bootstrap: str) -> None:
    topic = _new_topic(kafka_bootstrap, 1)
    w = PlainStepWriter(kafka_bootstrap)
    w.open()
    w.begin()
    w.produce(topic, b"k", b"step 1")
    w.produce(topic, b"k", b"step 1, second record")
    w.commit()
    assert _values(kafka_bootstrap, topic) == [b"step 1", b"step 1, second record"]
    _fail_a_step_then_write(w, topic, None, b"step 2")
    assert _values(kafka_bootstrap, topic)[-1] == b"step 2"


@pytest.mark.slow
def test_a_worker_without_transactions_decides_and_uses_no_transactional_id(kafka_bootstrap: str,
                                                                            tmp_path: Path) -> None:
    """CLOUDARB_KAFKA_TRANSACTIONS=false: the worker decides, and another producer registering the stage's
    transactional id (which fences a transactional worker: test_reliability) changes nothing."""
    app_id = unique("plain")
    tag = app_id.split("-")[-1]
    log = tmp_path / "worker.log"
    worker = start_worker(kafka_bootstrap, app_id, log, env_extra={"CLOUDARB_KAFKA_TRANSACTIONS": "false"})
    try:
        other = overtake_after_a_decision(kafka_bootstrap, app_id, tag, log)
        wait_until(lambda: decided(kafka_bootstrap, f"b-{tag}"), 120, "the second workload's decision", poll_s=1.0,
                   log=log, worker=worker)
        other.close()
        text = log.read_text()
        assert "writing without Kafka transactions" in text and "decision stage fenced" not in text
    finally:
        stop(worker)
