"""Streaming-core benchmark on this machine against the local broker (its own command, not a test):

    .venv/bin/python tests/benchmarks/bench_streams.py [--events 200000] [--latency-s 60] [--latency-runs 3]

1. throughput: N valid PriceObserved over 10,000 offers are produced to cloudarb.prices.v1; the raw
   confluent-kafka consume rate of that topic is measured, then a worker's market stage consumes it through
   validate -> state -> forecast -> trigger (no workloads, so no solve); events/s from its committed
   offsets (commit interval 0.2 s). The same again with two workers of one app (they share the market
   partitions): `events_per_s_2_workers`.
   Then the same events run through the stage's own code in this process, without Kafka (`stage_costs`):
   microseconds per event for validation, state (and its state-topic record) and forecasting (and its
   records), the events/s of one thread doing only that work, and the forecaster's own share
   (`stage_forecaster_us_per_event`; tests/benchmarks/bench_forecast.py measures it on recorded events).
2. latency: a fresh broker; 10,000 offers are loaded, then price moves run through the pipeline at the
   steady rate for `--broker-warmup-s` (30 s) with no workload: the broker JVM's JIT warm-up. A fresh
   broker's C2 compiler thread takes 50-60 % of a core for ~20 s of its first steady load; on 2 cores that
   came out of the decisions measured, which a long-running broker does not cost (0: no warm-up, as
   before 2026-12-08). Then 1,000 workloads are loaded (the initial placement), and events arrive at a
   steady 1,000 events/s: price changes of random offers (x0.9 .. x1.1), and (`--capacity-share`, 0.2 %)
   the loss of capacity of an offer some workload is placed on, back 5 s later: the change a placement
   must react to, and most of the decisions (a ±10 % price move rarely clears the migration threshold).
   Each AllocationDecided carries latency_ms (producer timestamp of the oldest triggering event ->
   decision ready to send, solve included); p50/p99 over the steady phase (after `--warmup-s` 10 s at the
   same rate: the first re-solves after the initial placement are slower), with the number of decisions.
   The phase runs `--latency-runs` times (3), each on a fresh broker: ~145 decisions a run make its p99
   the second-worst decision, so the quantiles are taken over all runs' decisions, and each run's are
   kept (`latency_runs`). The quantiles over the decisions from 30 s after the steady rate began, past
   the re-solves that follow the initial placement, are reported apart (`late_*`); the headline figures
   keep the whole measured phase.
   The same again on recorded markets (`--recorded`, default ../shared/data; skipped where missing):
   every event of every replay dataset (connectors.replay, event-time order, about 79,000) is produced to
   its market topic, `--recorded-repeats` times (4): each earlier repetition is the whole recording
   shifted back in time by its span plus a day, ids suffixed, so the offers' histories continue from one
   repetition into the next. Results under `recorded_markets`. The synthetic events above are the worst
   case (every event moves its price and is due a forecast at both horizons); recorded markets mix
   prices, capacity and interruptions, and few of their events are due a forecast.
3. memory: worker RSS after loading 10,000 offers minus RSS before (the market stage's state); the decision
   stage's process (engine and table mirrors) is reported apart, whole, read after the initial placement.

Results go to tests/benchmarks/results.json under "streams" (other keys are left alone), with
`cpu_loop_ms_before` / `_after`: a fixed pure-Python loop timed at the start and the end. This machine's
speed varies (up to 2x for the same loop within one hour), so compare runs next to it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from connectors.publish import KafkaPublisher, topic_for  # noqa: E402
from connectors.replay import DATASETS, MarketEvent, event_time, replay_events  # noqa: E402
from embedded.demo import group_position  # noqa: E402
from embedded.kafka import LocalKafka, ensure_topics  # noqa: E402
from schemas import CapacityObserved, Market, OfferKey, PriceObserved, WorkloadRequested, WorkloadSpec  # noqa: E402
from schemas.events import Event  # noqa: E402
from schemas.kafka import client_config  # noqa: E402
from schemas.topics import CAPACITY, DECISIONS, INTERRUPTIONS, PRICES  # noqa: E402
from streams.core.forecast import Forecaster  # noqa: E402
from streams.runtime.market import market_group  # noqa: E402
from tests.integration.helpers import start_worker, stop, wait_until  # noqa: E402

RESULTS = ROOT / "tests" / "benchmarks" / "results.json"
DATA = ROOT.parent / "shared" / "data"
MARKET_TOPICS = [PRICES.name, CAPACITY.name, INTERRUPTIONS.name]
# Also reported: the latencies of decisions received this long after the steady rate began (warm-up
# included), past the transient that follows the initial placement (see "latency" above)
LATE_S = 30.0

GPUS = {  # model -> (gpus per instance options, usd per GPU-hour typical) from the recorded catalogue
    "H100-80GB": ([1, 8], 2.5), "A100-80GB": ([1, 8], 1.6), "A100-40GB": ([1, 8], 1.2), "L4": ([1, 4, 8], 0.5),
    "H200": ([8], 3.4), "B200": ([8], 5.0), "L40S": ([1, 4], 1.0), "A10G": ([1, 4], 0.9),
}
PROVIDERS = ["aws", "gcp", "azure", "lambda", "runpod", "vastai", "nebius", "hyperstack"]


def make_offers(n: int, seed: int = 1) -> list[tuple[OfferKey, float]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        gpu = rng.choice(list(GPUS))
        sizes, usd = GPUS[gpu]
        g = rng.choice(sizes)
        market = Market.SPOT if rng.random() < 0.4 else Market.ON_DEMAND
        base = usd * g * (0.45 if market is Market.SPOT else 1.0) * rng.uniform(0.8, 1.3)
        out.append((OfferKey(provider=rng.choice(PROVIDERS), region=f"region-{i % 37}", zone=f"z{i % 3}",
                             instance_type=f"{gpu.lower()}-{g}x-{i}", gpu_model=gpu, gpus_per_instance=g,
                             market=market), round(base, 4)))
    return out


def make_workloads(n: int, seed: int = 2) -> list[WorkloadSpec]:
    rng = random.Random(seed)
    models = list(GPUS)
    out = []
    for i in range(n):
        acc = rng.sample(models, rng.randint(1, 3))
        gpus = rng.choice([1, 2, 4, 8, 16])
        top = max(GPUS[m][1] for m in acc)
        out.append(WorkloadSpec(workload_id=f"w{i}", gpu_throughput={m: 1.0 for m in acc}, min_gpus=gpus,
                                max_gpus=gpus * rng.choice([1, 2]), budget_usd_per_hour=top * gpus * 1.5,
                                max_spot_share=rng.choice([0.0, 0.5, 1.0]), priority=rng.randint(1, 3)))
    return out


def price_event(o: OfferKey, usd: float, t: datetime, i: int) -> PriceObserved:
    return PriceObserved(event_id=f"b{i}", offer=o, usd_per_hour=usd, quoted_at=t, observed_at=t, source="bench")


def capacity_event(o: OfferKey, available: bool, t: datetime, i: int) -> CapacityObserved:
    return CapacityObserved(event_id=f"c{i}", offer=o, available=available, quoted_at=t, observed_at=t,
                            source="bench")


def raw_consume_rate(bootstrap: str, topics: list[str], n: int) -> float:
    """Messages/s of a bare confluent-kafka consumer reading the topics from the start. Partitions are
    assigned directly (no group join to wait for), and the clock starts before the first consume() call:
    timing from the first batch returned counted none of the prefetch librdkafka had made meanwhile (up to
    its 64 MB queue)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"raw-{time.time()}", "enable.auto.commit": False,
                  "fetch.max.bytes": 50_000_000})
    md = c.list_topics(timeout=30).topics
    c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in md[t].partitions])
    got = 0
    t0 = time.perf_counter()
    while got < n:   # (never more than what is left: consume() waits its whole timeout for a full batch)
        msgs = c.consume(min(10_000, n - got), timeout=5)
        got += sum(1 for m in msgs if m.error() is None)
    dt = time.perf_counter() - t0
    c.close()
    return got / dt


def cpu_loop_ms() -> float:
    """A fixed pure-Python loop (10M additions in a function), best of 3: this machine's speed varies
    between runs (the same loop at module level took 0.66 to 1.29 s within one hour), so results are
    comparable only next to it."""
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        s = 0
        for i in range(10_000_000):
            s += i
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 1)


def _children(pid: int) -> list[str]:
    out: list[str] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += (task / "children").read_text().split()
    return out


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def synthetic_events(n: int, spacing_s: float) -> Iterator[PriceObserved]:
    """The throughput phase's events: prices of 10,000 offers in turn, each a random walk (±3 %)."""
    offers = make_offers(10_000)
    rng = random.Random(3)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    cur = {o.key: p for o, p in offers}
    for i in range(n):
        o, _ = offers[i % len(offers)]
        cur[o.key] = round(cur[o.key] * rng.uniform(0.97, 1.03), 4)
        yield price_event(o, cur[o.key], t0 + timedelta(seconds=i * spacing_s), i)


def recorded_events(events: list[MarketEvent], repeats: int) -> Iterator[MarketEvent]:
    """The recording `events` (every replay dataset, in event-time order: `replay_events(data,
    sorted(DATASETS))`) `repeats` times: repetition r (published first for the largest r) shifted back by
    r x (the recording's span + 1 day), its ids suffixed `~r`."""
    if not events:
        return
    step = event_time(events[-1]) - event_time(events[0]) + timedelta(days=1)
    for r in range(repeats - 1, 0, -1):
        shift = step * r
        for e in events:
            when = {name: getattr(e, name) - shift for name in e._utc_fields}
            yield e.model_copy(update={**when, "event_id": f"{e.event_id}~{r}"})
    yield from events


def as_msgs(events: Sequence[MarketEvent]) -> list[Any]:
    """The events as the market stage receives them (its topic, six partitions by offer key)."""
    from streams.core import track

    return [track.Msg(e.model_dump_json().encode(), topic_for(e), zlib.crc32(e.offer.key.encode()) % 6, i, None)
            for i, e in enumerate(events)]


class _NoForecasts(Forecaster):
    """A forecaster that never forecasts (the market stage's cost without forecasting)."""

    def observe_many(self, updates: Any) -> list[Any]:
        return []


class _TimedForecaster(Forecaster):
    """The forecaster, with the time spent in it (the market stage calls `observe_many` once per batch)."""

    spent_s = 0.0

    def observe_many(self, updates: Any) -> list[Any]:
        t0 = time.perf_counter()
        out = super().observe_many(updates)
        self.spent_s += time.perf_counter() - t0
        return out


def stage_costs(msgs: list[Any], batch: int = 5000) -> dict[str, Any]:
    """The market stage's own work per event, in this process, without Kafka: where the throughput goes,
    and the events/s of one thread doing only that. `track_batch` (validate -> state -> forecast ->
    trigger) and the state records it writes run over the throughput phase's events, the first half as
    warm-up (so 1 h predictions are maturing and being learned from) and the second half timed, once with
    forecasting and once without; validation alone is timed apart; the time inside the forecaster is
    `stage_forecaster_us_per_event`. `msgs`: streams.core.track.Msg, in order (`as_msgs`)."""
    from streams.core import track
    from streams.core.heap import FrozenHeap
    from streams.core.validate import validate_many
    from streams.runtime.store import ChangelogStore

    half = len(msgs) // 2
    heap = FrozenHeap()

    def run(f: Forecaster, lo: int, hi: int) -> tuple[float, int]:
        store = ChangelogStore("bench-offer-state.v1", 6)
        t, records = 0.0, 0
        for s in range(lo, hi, batch):
            t0 = time.perf_counter()
            res = track.track_batch(msgs[s:min(s + batch, hi)], store.get, (), f)
            for key, (new, p) in res.updated.items():
                store.put(key, new, p)
            store.write(lambda *_: None)   # encodes each record, as the stage does before producing it
            t += time.perf_counter() - t0
            records += len(res.forecasts)
            heap.worked()
        return t, records

    f = _TimedForecaster()
    run(f, 0, half)
    scored0, spent0 = f.scored, f.spent_s
    full, records = run(f, half, len(msgs))
    nof = _NoForecasts()
    run(nof, 0, half)
    bare, _ = run(nof, half, len(msgs))
    t0 = time.perf_counter()
    for s in range(half, len(msgs), batch):
        validate_many([m.value for m in msgs[s:s + batch]], track.MARKET_TYPES, datetime.now(UTC))
    val = time.perf_counter() - t0
    n = len(msgs) - half
    us = {"validate": val / n * 1e6, "state_and_changelog": (bare - val) / n * 1e6,
          "forecast_and_outputs": (full - bare) / n * 1e6, "total": full / n * 1e6}
    return {"stage_us_per_event": {k: round(v, 1) for k, v in us.items()},
            "stage_one_thread_events_per_s": round(1e6 / us["total"]),
            "stage_forecast_records_per_event": round(records / n, 2),
            "stage_predictions_scored_per_event": round((f.scored - scored0) / n, 2),
            "stage_forecaster_us_per_event": round((f.spent_s - spent0) / n * 1e6, 1), "stage_events_timed": n}


def throughput(bootstrap: str, events: Iterable[Event], tmp: Path, profile: Path | None = None) -> dict[str, float]:
    """The raw consume rate of `events` produced to their topics, and the events/s of one worker, then of
    two, consuming them (see the module docstring)."""
    topics = MARKET_TOPICS
    pub = KafkaPublisher(bootstrap)
    n_events = pub.publish_all(events)
    assert pub.flush(120) == 0
    # the best of three reads: the same read varies up to 3x between runs on this machine (151k then 512k and
    # 451k/s in one process; 168k, 174k, 169k in another), so one read made the ratio a lottery
    raw = max(raw_consume_rate(bootstrap, topics, n_events) for _ in range(3))
    rate = _replay_rate(bootstrap, n_events, tmp, 1, topics, profile)
    rate2 = _replay_rate(bootstrap, n_events, tmp, 2, topics)
    return {"events": n_events, "events_per_s": round(rate),
            "raw_consume_events_per_s": round(raw), "ratio_to_raw_consume": round(rate / raw, 4),
            "events_per_s_2_workers": round(rate2), "ratio_to_raw_consume_2_workers": round(rate2 / raw, 4)}


def _replay_rate(bootstrap: str, n_events: int, tmp: Path, workers: int, topics: list[str],
                 profile: Path | None = None) -> float:
    """Events/s of `workers` workers (one app, started together) replaying `topics` from their start,
    from the market group's committed offsets: from the first commit to all events."""
    os.environ["CLOUDARB_COMMIT_INTERVAL_S"] = "0.2"
    app_id = f"bench-tp{workers}-{int(time.time())}"
    procs = [start_worker(bootstrap, app_id, tmp / f"worker-tp{workers}-{i}.log") for i in range(workers)]
    spy = None
    committed = _Committed(bootstrap, market_group(app_id), topics)
    try:
        wait_until(lambda: committed() > 0, 120, "worker start", 0.05)
        spy = _py_spy(procs[0].pid, 0, profile) if profile else None
        s0, t_start = committed(), time.perf_counter()
        wait_until(lambda: committed() >= n_events, 600, "worker", 0.05)
        elapsed = time.perf_counter() - t_start
    finally:
        committed.close()
        for w in procs:
            stop(w)
        if spy is not None:
            spy.wait(60)
    return (n_events - s0) / elapsed


class _Committed:
    """The sum of a group's committed offsets over `topics`, read by one consumer kept open: a poll every
    50 ms is one request. (embedded.demo.group_position opens a consumer and asks every partition's end
    offset each time: about 20 requests per poll, which cost the co-located broker 3-4 s of CPU in a
    15 s run, taken from the worker being measured.)"""

    def __init__(self, bootstrap: str, group: str, topics: list[str]) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self._c = Consumer({**client_config(bootstrap), "group.id": group, "enable.auto.commit": False})
        md = self._c.list_topics(timeout=10)
        self._tps = [TopicPartition(t, p) for t in topics if t in md.topics for p in md.topics[t].partitions]

    def __call__(self) -> int:
        return sum(max(tp.offset, 0) for tp in self._c.committed(self._tps, timeout=10))

    def close(self) -> None:
        self._c.close()


def _py_spy(pid: int, seconds: float, out: Path) -> Any:
    """py-spy (a flame graph of the worker and its decision-stage child, CPU time only) for `seconds`, or
    None when py-spy is not installed."""
    import shutil
    import subprocess

    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        return None
    dur = ["-d", str(int(seconds))] if seconds else []  # 0: until the process exits
    return subprocess.Popen([exe, "record", "-p", str(pid), "--subprocesses", "--gil", *dur, "-f", "speedscope" if
                             out.suffix == ".json" else "flamegraph", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def move_price(pub: KafkaPublisher, offers: list[tuple[OfferKey, float]], cur: dict[str, float],
               rng: random.Random, event_id: int) -> None:
    """Publish a price move (x0.9 .. x1.1) of a random offer, `cur` updated."""
    o, _ = offers[rng.randrange(len(offers))]
    cur[o.key] = round(cur[o.key] * rng.choice([0.9, 0.97, 0.99, 1.01, 1.03, 1.1]), 4)
    pub.publish(price_event(o, cur[o.key], datetime.now(UTC), event_id))


def price_moves(pub: KafkaPublisher, offers: list[tuple[OfferKey, float]], cur: dict[str, float],
                rate: int, seconds: float, rng: random.Random, first_id: int) -> int:
    """`move_price` at `rate` events/s for `seconds`; returns how many."""
    t0 = time.perf_counter()
    n = 0
    while (elapsed := time.perf_counter() - t0) < seconds:
        while n < int(elapsed * rate):
            move_price(pub, offers, cur, rng, first_id + n)
            n += 1
        time.sleep(0.002)
    return n


def latency(bootstrap: str, seconds: float, engine: str, tmp: Path, rate: int = 1000,
            profile: Path | None = None, capacity_share: float = 0.002, warmup_s: float = 10.0,
            log_name: str = "worker-lat.log", loglevel: str = "info", broker_warmup_s: float = 30.0
            ) -> dict[str, Any]:
    from confluent_kafka import Consumer

    offers = make_offers(10_000)
    workloads = make_workloads(1000)
    os.environ["CLOUDARB_COMMIT_INTERVAL_S"] = "1.0"
    app_id = f"bench-lat-{int(time.time())}"
    worker = start_worker(bootstrap, app_id, tmp / log_name, engine=engine, loglevel=loglevel)
    try:
        time.sleep(8)
        rss0 = rss_kb(worker.pid)
        pub = KafkaPublisher(bootstrap)
        now = datetime.now(UTC)
        for i, (o, p) in enumerate(offers):
            pub.publish(price_event(o, p, now, 10_000_000 + i))
        assert pub.flush(60) == 0
        wait_until(lambda: group_position(bootstrap, market_group(app_id), [PRICES.name])[0] >= len(offers), 300,
                   "offers", 0.2)
        rss1 = rss_kb(worker.pid)
        cur = {o.key: p for o, p in offers}
        # the broker's JIT warm-up, before any workload: the same price traffic through the same pipeline
        # (the market stage, its state and forecast topics, the decision stage's transactional writes of
        # market changes) for `broker_warmup_s`. A fresh broker JVM spends ~20 s of its first steady load
        # compiling (the C2 compiler thread at 50-60 % of a core, its request threads a third slower
        # meanwhile); on 2 cores that CPU came out of the decisions measured, a cost a long-running broker
        # does not have. The workloads' own transient (their initial placement and after) stays measured.
        warm_events = price_moves(pub, offers, cur, rate, broker_warmup_s, random.Random(5), 40_000_000)
        assert pub.flush(60) == 0
        loaded = len(offers) + warm_events
        wait_until(lambda: group_position(bootstrap, market_group(app_id), [PRICES.name])[0] >= loaded, 300,
                   "the warm-up's events", 0.2)
        for w in workloads:
            pub.publish(WorkloadRequested(event_id=f"wr-{w.workload_id}", spec=w, requested_at=now))
        assert pub.flush(60) == 0
        # let the initial placement settle: no new decision for 5 s
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lat-{time.time()}",
                      "auto.offset.reset": "latest", "enable.auto.commit": False})
        c.subscribe([DECISIONS.name])
        quiet_since = time.monotonic()
        t_settle = time.monotonic()
        seen = 0
        held: dict[str, list[str]] = {}  # workload -> offer keys of its current placement (from the decisions)

        def track_held(d: dict[str, Any]) -> None:
            for wid in d.get("workload_ids", []):
                held[wid] = [OfferKey.model_validate(a["offer"]).key for a in d["assignments"]
                             if a["workload_id"] == wid]

        while (seen == 0 or time.monotonic() - quiet_since < 5) and time.monotonic() - t_settle < 600:
            got = c.consume(100, timeout=0.5)
            if got:
                seen += len(got)
                quiet_since = time.monotonic()
                for m in got:
                    if m.error() is None:
                        track_held(json.loads(m.value() or b"{}"))
        settle_s = time.monotonic() - t_settle
        # the decision stage's process (started at the first step): its engine, plan and market view
        decider_rss = sum(rss_kb(int(c)) for c in _children(worker.pid))
        # steady phase
        rng = random.Random(4)
        by_key = {o.key: o for o, _ in offers}
        lat: list[float] = []
        late: list[float] = []  # of the decisions received LATE_S or more after the steady rate began
        n = n_lost = n0 = lost0 = 0
        regain: list[tuple[float, OfferKey]] = []  # (when, offer) capacity comes back 5 s after it was lost
        spy = None
        t_begin = time.perf_counter()
        measuring = False
        while time.perf_counter() - t_begin < warmup_s + seconds:
            if not measuring and time.perf_counter() - t_begin >= warmup_s:  # steady state: start measuring
                measuring, lat, late, n0, lost0 = True, [], [], n, n_lost
                spy = _py_spy(worker.pid, seconds, profile) if profile else None
            due = int((time.perf_counter() - t_begin) * rate)
            while n < due:
                now_dt = datetime.now(UTC)
                lose = rng.random() < capacity_share
                placed = [k for ks in held.values() for k in ks] if lose else []
                if regain and regain[0][0] <= time.perf_counter():
                    pub.publish(capacity_event(regain.pop(0)[1], True, now_dt, 30_000_000 + n))
                elif placed:  # a placement's capacity is lost
                    o = by_key[rng.choice(placed)]
                    pub.publish(capacity_event(o, False, now_dt, 30_000_000 + n))
                    regain.append((time.perf_counter() + 5.0, o))
                    n_lost += 1
                else:
                    move_price(pub, offers, cur, rng, 20_000_000 + n)
                n += 1
            for m in c.consume(500, timeout=0.005):
                if m.error() is None:
                    d = json.loads(m.value() or b"{}")
                    track_held(d)
                    if d.get("latency_ms") is not None:
                        lat.append(float(d["latency_ms"]))
                        if time.perf_counter() - t_begin >= LATE_S:
                            late.append(float(d["latency_ms"]))
        pub.flush(30)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            for m in c.consume(500, timeout=0.2):
                if m.error() is None and (d := json.loads(m.value() or b"{}")).get("latency_ms") is not None:
                    lat.append(float(d["latency_ms"]))
                    late.append(float(d["latency_ms"]))
        c.close()
        if spy is not None:
            spy.wait(60)
    finally:
        stop(worker)
    # the quantiles are computed by `pooled`, over one run or several
    return {"engine": engine, "steady_events": n - n0, "warmup_s": warmup_s, "steady_rate_per_s": rate,
            "latencies_ms": sorted(lat), "late_latencies_ms": sorted(late),
            "steady_capacity_lost_events": n_lost - lost0,
            "memory_mb_per_10k_offers": round((rss1 - rss0) / 1024, 1),
            "decider_process_rss_mb_with_10k_offers": round(decider_rss / 1024, 1),
            "initial_placement_s": round(settle_s, 1), "initial_decisions": seen,
            "broker_warmup_s": broker_warmup_s, "broker_warmup_events": warm_events}


def _quantiles(lat: list[float]) -> Any:
    """p -> the p-quantile of the sorted latencies (nan when there are none)."""
    return (lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]) if lat else (lambda p: float("nan"))


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The latency results of several runs: the first run's other figures, the quantiles over all runs'
    decisions together, and each run's own p50/p90/p99.

    >>> r = pooled([{"latencies_ms": [1.0, 2.0]}, {"latencies_ms": [3.0]}])
    >>> r["decisions"], r["decision_latency_p99_ms"], [x["p99_ms"] for x in r["runs"]]
    (3, 3.0, [2.0, 3.0])
    """
    lat = sorted(x for r in runs for x in r["latencies_ms"])
    late = sorted(x for r in runs for x in r.get("late_latencies_ms", []))
    q, q_late = _quantiles(lat), _quantiles(late)
    per_run = []
    for r in runs:
        qr, qr_late = _quantiles(r["latencies_ms"]), _quantiles(r.get("late_latencies_ms", []))
        per_run.append({"decisions": len(r["latencies_ms"]), "p50_ms": round(qr(0.5), 1), "p90_ms": round(qr(0.9), 1),
                        "p99_ms": round(qr(0.99), 1), "late_p99_ms": round(qr_late(0.99), 1)})
    out = {k: v for k, v in runs[0].items() if k not in ("latencies_ms", "late_latencies_ms")}
    # the same, over the decisions from LATE_S after the steady rate began (the warm-up included): after the
    # first re-solves following the initial placement (see the module docstring)
    out.update(late_window_from_s=LATE_S, late_decisions=len(late), late_decision_latency_p50_ms=round(q_late(0.5), 1),
               late_decision_latency_p99_ms=round(q_late(0.99), 1))
    out.update(decisions=len(lat), decision_latency_p50_ms=round(q(0.50), 1), decision_latency_p90_ms=round(q(0.90), 1),
               decision_latency_p99_ms=round(q(0.99), 1),
               decision_latency_mean_ms=round(statistics.fmean(lat), 1) if lat else None, runs=per_run)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--latency-s", type=float, default=60, help="steady seconds measured (~2.5 decisions/s)")
    ap.add_argument("--warmup-s", type=float, default=10, help="steady-rate events before latencies are recorded")
    ap.add_argument("--broker-warmup-s", type=float, default=30,
                    help="price traffic through the pipeline before the workloads arrive: the fresh broker's JIT "
                         "warm-up (0: none, as before 2026-12-08)")
    ap.add_argument("--engine", default="portfolio")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--latency-runs", type=int, default=3,
                    help="latency runs (each on a fresh broker); quantiles are over all their decisions")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--event-spacing-s", type=float, default=0.5, help="event time between throughput events")
    ap.add_argument("--rate", type=int, default=1000, help="events/s of the latency phase")
    ap.add_argument("--capacity-share", type=float, default=0.002,
                    help="share of latency-phase events that are a capacity loss on a placed offer (back after 5 s)")
    ap.add_argument("--logs", type=Path, help="keep the workers' logs in this directory")
    ap.add_argument("--worker-loglevel", default="info",
                    help="of the latency phase's workers (debug: a line per decision step, with the engine's timings)")
    ap.add_argument("--profile", type=Path, help="write a py-spy flame graph (.svg) of the worker's steady phase")
    ap.add_argument("--stage-only", action="store_true",
                    help="only the market stage's own work in this process (no broker); printed, not saved")
    ap.add_argument("--recorded", type=Path, default=DATA,
                    help="the throughput phase again on the recorded markets under this folder (skipped if none)")
    ap.add_argument("--recorded-repeats", type=int, default=4, help="repetitions of the recording (see above)")
    args = ap.parse_args()

    def synthetic_costs() -> dict[str, Any]:   # (the messages are built here and freed after: a larger heap
        # makes every collection of the stage's garbage slower, so each phase is timed with its own alone)
        return stage_costs(as_msgs(list(synthetic_events(min(args.events, 100_000), args.event_spacing_s))))

    if args.stage_only:
        out0 = {"cpu_loop_ms": cpu_loop_ms(), **synthetic_costs()}
        rec = as_msgs(list(recorded_events(list(replay_events(args.recorded, sorted(DATASETS))),
                                           args.recorded_repeats)))
        print(json.dumps({**out0, "recorded_markets": stage_costs(rec) if rec else None}, indent=1))
        return
    out: dict[str, object] = {"machine": f"{os.cpu_count()} cores", "measured_at": datetime.now(UTC).isoformat(),
                              "cpu_loop_ms_before": cpu_loop_ms()}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            tmp = args.logs
        if not args.skip_throughput:
            broker = LocalKafka(Path(d) / "k1", heap="1g").start()
            try:
                ensure_topics(broker.bootstrap)
                tp_profile = args.profile.with_name("tp-" + args.profile.name) if args.profile else None
                out.update(throughput(broker.bootstrap, synthetic_events(args.events, args.event_spacing_s), tmp,
                                      profile=tp_profile))
                out["event_spacing_s"] = args.event_spacing_s
                out.update(synthetic_costs())
                print(json.dumps(out, indent=1))
            finally:
                broker.stop()
            recording = list(replay_events(args.recorded, sorted(DATASETS)))   # (read once for both uses)
            if recording:   # on a fresh broker: the market topics hold the recording alone
                broker = LocalKafka(Path(d) / "k3", heap="1g").start()
                try:
                    ensure_topics(broker.bootstrap)
                    recorded: dict[str, Any] = {"repeats": args.recorded_repeats, **throughput(
                        broker.bootstrap, recorded_events(recording, args.recorded_repeats), tmp)}
                    recorded.update(stage_costs(as_msgs(list(recorded_events(recording, args.recorded_repeats)))))
                    out["recorded_markets"] = recorded
                    print(json.dumps(out["recorded_markets"], indent=1))
                finally:
                    broker.stop()
            else:
                print(f"no recorded markets under {args.recorded}: that phase skipped")
        runs: list[dict[str, Any]] = []
        for r in range(0 if args.skip_latency else args.latency_runs):  # each on a fresh broker
            broker = LocalKafka(Path(d) / f"k2-{r}", heap="1g").start()
            try:
                ensure_topics(broker.bootstrap)
                runs.append(latency(broker.bootstrap, args.latency_s, args.engine, tmp, rate=args.rate,
                                    profile=args.profile if r == 0 else None, capacity_share=args.capacity_share,
                                    warmup_s=args.warmup_s, log_name=f"worker-lat-{r}.log",
                                    loglevel=args.worker_loglevel, broker_warmup_s=args.broker_warmup_s))
            finally:
                broker.stop()
        if runs:
            out.update(pooled(runs))
            out["latency_runs"] = out.pop("runs")
    out["cpu_loop_ms_after"] = cpu_loop_ms()
    print(json.dumps(out, indent=1))
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data["streams"] = {**data.get("streams", {}), **out}
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")   # (the file's key order kept: a small diff)


if __name__ == "__main__":
    main()
