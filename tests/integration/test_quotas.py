"""GPU quotas end to end: a worker (greedy engine) never emits a plan over the quota in force, re-decides its
workloads when the quotas change, and the workload a lowered quota evicts is told which quota binds. And the
CLI's `quotas set --file` / `quotas show` round trip through the topic.

Every quota here covers only this test's own region, and the tests end by publishing an empty set: the
quotas topic is shared by the session's workers (each reads it from the beginning)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudarb.app import workload_events
from cloudarb.pipeline import publish_events
from cloudarb.quotas import QUOTAS_KEY, publish_quotas, quotas_event, read_quotas
from connectors.publish import KafkaPublisher
from schemas.events import AllocationDecided, QuotasSet
from schemas.placement import GpuQuota
from schemas.topics import DECISIONS, DLQ, QUOTAS
from solvers import GreedyEngine
from tests.conftest import unique
from tests.integration.helpers import read_all, start_worker, stop, wait_until
from tests.streams.helpers import offer, price, workload

pytestmark = [
    pytest.mark.integration, pytest.mark.slow,
    # until then a quota set is a poison record to every worker of the session (dead-lettered)
    pytest.mark.skipif(not hasattr(GreedyEngine, "set_quotas"), reason="needs engine quota enforcement"),
]

GPU = "A6000"   # in no sample data set: this test's offer is the only one the workloads can use


@pytest.fixture
def clean_quotas(kafka_bootstrap: str) -> Iterator[None]:
    yield
    publish_quotas(kafka_bootstrap, quotas_event([]))


def decisions_of(bootstrap: str, wids: set[str]) -> list[AllocationDecided]:
    out = [AllocationDecided.model_validate_json(m.value()) for m in read_all(bootstrap, [DECISIONS.name])]
    return [d for d in out if wids & set(d.workload_ids)]


def gpus_held(plan: dict[str, Any]) -> int:
    return sum(a.instances * a.offer.gpus_per_instance for assigns in plan.values() for a in assigns)


def test_placements_never_exceed_the_quota_and_the_evicted_workload_names_it(
        kafka_bootstrap: str, tmp_path: Path, clean_quotas: None) -> None:
    app_id = unique("quotas")
    tag = app_id.split("-")[-1]
    region = f"quota-{tag}"
    only = offer(region=region, gpu=GPU, n=8)   # the only offer: 8 GPUs per instance, capacity unbounded

    def quota(gpus: int) -> QuotasSet:
        return quotas_event([GpuQuota(provider="gcp", region=region, gpu=GPU, gpus=gpus)])

    log = tmp_path / "worker.log"
    worker = start_worker(kafka_bootstrap, app_id, log, engine="greedy")
    w1, w2 = f"q1-{tag}", f"q2-{tag}"
    wids = {w1, w2}
    try:
        # invalid quota sets are dead-lettered with the reason, as invalid workloads are
        bad_gpu = quota(8).model_dump(mode="json")
        bad_gpu["quotas"][0]["gpu"] = "H9000"
        pub = KafkaPublisher(kafka_bootstrap)
        for raw in (json.dumps(bad_gpu), json.dumps({"event_type": "QuotasSet", "event_id": f"x-{region}"})):
            pub.publish_raw(QUOTAS.name, QUOTAS_KEY, raw.encode())
        assert pub.flush(15) == 0
        q8 = quota(8)
        publish_quotas(kafka_bootstrap, q8)
        publish_events(kafka_bootstrap, [price(only, 0.08)])
        publish_events(kafka_bootstrap, workload_events([workload(w, gpus={GPU: 0.5}, n=8, budget=5.0)
                                                         for w in sorted(wids)]))

        def plan_after(ds: list[AllocationDecided]) -> dict[str, Any]:
            plan: dict[str, Any] = {}
            for d in ds:
                for wid in set(d.workload_ids) & wids:
                    plan[wid] = [a for a in d.assignments if a.workload_id == wid]
            return plan

        # one of the two fits under 8 GPUs
        wait_until(lambda: gpus_held(plan_after(decisions_of(kafka_bootstrap, wids))) == 8, 120,
                   "one workload placed", log=log, worker=worker)
        # the quota rises: the other is placed too (a quota change re-decides every workload)
        q16 = quota(16)
        publish_quotas(kafka_bootstrap, q16)
        wait_until(lambda: gpus_held(plan_after(decisions_of(kafka_bootstrap, wids))) == 16, 120,
                   "both placed under the raised quota", log=log, worker=worker)
        # and falls again: one is evicted, told which quota binds
        q8b = quota(8)
        publish_quotas(kafka_bootstrap, q8b)
        wait_until(lambda: any(q8b.event_id in d.trigger_event_ids for d in decisions_of(kafka_bootstrap, wids)),
                   120, "the re-decision under the lowered quota", log=log, worker=worker)

        dead = [d for d in (json.loads(m.value()) for m in read_all(kafka_bootstrap, [DLQ.name]))
                if d["source_topic"] == QUOTAS.name and region.encode() in base64.b64decode(d["original_b64"])]
        assert len(dead) == 2 and all(d["stage"] == "streams.decide_allocations" for d in dead)
        assert any("quotas.0.gpu" in d["reason"] and "H9000" in d["reason"] for d in dead), dead
        ds = decisions_of(kafka_bootstrap, wids)
        # never over the quota in force: the limit changes with the first decision the quota set triggered
        limit, plan = 8, {}
        for d in ds:
            if q16.event_id in d.trigger_event_ids:
                limit = 16
            if q8b.event_id in d.trigger_event_ids:
                limit = 8
            for wid in set(d.workload_ids) & wids:
                plan[wid] = [a for a in d.assignments if a.workload_id == wid]
            assert gpus_held(plan) <= limit, (d.event_id, limit, plan)
        assert gpus_held(plan) == 8
        (evicted,) = [w for w in wids if not plan.get(w)]
        last = next(d for d in reversed(ds) if evicted in d.workload_ids)
        (why,) = [e for e in last.explanations if e.workload_id == evicted]
        text = f"{why.infeasible_reason} {why.summary}"
        assert q8b.quotas[0].key in text or (region in text and "quota" in text.lower()), text
    finally:
        stop(worker)


def test_the_cli_sets_quotas_from_a_file_and_shows_them_back(kafka_bootstrap: str, tmp_path: Path,
                                                              clean_quotas: None) -> None:
    region = f"quota-cli-{unique('q').split('-')[-1]}"
    f = tmp_path / "quotas.yaml"
    f.write_text(f"quotas:\n  - {{provider: gcp, region: {region}, gpu: H100, gpus: 16}}\n"
                 f"  - {{provider: aws, region: '*', gpu: A100-80GB, gpus: 8}}\n")
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cloudarb", "quotas", *args], env=env, capture_output=True,
                              text=True, timeout=60)

    r = cli("set", "--file", str(f))
    assert r.returncode == 0, r.stderr
    assert "published 2 quotas" in r.stdout
    shown = cli("show", "--json")
    assert shown.returncode == 0, shown.stderr
    got = json.loads(shown.stdout)
    assert [q["region"] for q in got["quotas"]] == [region, "*"]
    e = read_quotas(kafka_bootstrap)
    assert e is not None and e.event_id == got["event_id"]
    # `show` prints a file `set` reads back
    again = tmp_path / "again.yaml"
    again.write_text(cli("show").stdout)
    assert cli("set", "--file", str(again)).returncode == 0
    # a bad file: exit 2, the field named, nothing published
    bad = tmp_path / "bad.yaml"
    bad.write_text("quotas:\n  - {provider: gcp, region: x, gpu: H9000, gpus: 1}\n")
    r = cli("set", "--file", str(bad))
    assert r.returncode == 2 and "quotas.0.gpu" in r.stderr
    latest = read_quotas(kafka_bootstrap)
    assert latest is not None and latest.quotas[0].region == region
