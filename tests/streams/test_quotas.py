"""GPU quotas in the decision stage: a quota set reaches the engine (`set_quotas`), is written to the quotas
table, re-decides every workload, and a decider rebuilt from the tables gets it back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Sequence
from datetime import timedelta
from typing import Any

from schemas.events import ChangeAction, QuotasSet, WorkloadRequested
from schemas.market import SolveResult
from schemas.placement import GpuQuota
from solvers import GreedyEngine
from streams.core.decider import QUOTAS_KEY, Decider
from streams.runtime.remote import RemoteDecider
from tests.streams.helpers import T0, offer, workload

L4A, L4B = offer(region="a"), offer(region="b")


class QuotaEngine(GreedyEngine):
    """A fake engine that records `set_quotas` and the workloads each solve re-decides, and honours a quota
    of 0 GPUs by hiding the offers it covers (enough to see plans follow the quotas)."""

    def __init__(self, log: list[tuple[str, Any]] | None = None) -> None:
        super().__init__()
        self.log: list[tuple[str, Any]] = [] if log is None else log
        self.quotas: list[GpuQuota] = []

    def set_quotas(self, quotas: Sequence[GpuQuota]) -> None:
        self.quotas = list(quotas)
        self.log.append(("set_quotas", [q.key for q in quotas]))

    def solve(self, workload_ids: Collection[str] | None = None) -> SolveResult:
        self.log.append(("solve", sorted(workload_ids or ())))
        saved = self.quotes
        self.quotes = {k: q for k, q in saved.items()
                       if not any(x.gpus == 0 and x.covers(q.offer) for x in self.quotas)}
        try:
            return super().solve(workload_ids)
        finally:
            self.quotes = saved


def recording(log: list[tuple[str, Any]]) -> Callable[[], QuotaEngine]:
    return lambda: QuotaEngine(log)


def change(o: Any, usd: float, eid: str) -> dict[str, Any]:
    return {"offer_key": o.key, "state": {"usd_per_hour": usd, "price_t": T0.timestamp()}, "reason": "new offer",
            "event_id": eid, "msg_ts": None}


def requested(wid: str) -> WorkloadRequested:
    return WorkloadRequested(event_id=f"r-{wid}", spec=workload(wid), requested_at=T0)


def quotas_set(eid: str, *quotas: GpuQuota, minutes: float = 0) -> QuotasSet:
    return QuotasSet(event_id=eid, quotas=list(quotas), set_at=T0 + timedelta(minutes=minutes))


NO_L4_IN_A = GpuQuota(provider="gcp", region="a", gpu="L4", gpus=0)


def tables_of(*outs: Any) -> dict[str, dict[str, Any]]:
    tables: dict[str, dict[str, Any]] = {"market": {}, "workloads": {}, "plans": {}, "quotas": {}}
    for out in outs:
        for t, k, v in [*out.state_writes, *out.plan_writes]:
            tables[t][k] = v
    return tables


def test_a_quota_set_reaches_the_engine_is_stored_and_re_decides_every_workload() -> None:
    log: list[tuple[str, Any]] = []
    d = Decider(recording(log), {}, {}, {})
    first = d.step([change(L4A, 1.0, "e1"), change(L4B, 2.0, "e2")], [requested("w1"), requested("w2")])
    assert {a.offer for dec in first.decisions for a in dec.assignments} == {L4A}
    assert not [e for e in log if e[0] == "set_quotas"]   # no quota set yet: the engine is never told
    log.clear()
    q = quotas_set("q1", NO_L4_IN_A)
    out = d.step([], [q])
    assert log[0] == ("set_quotas", ["gcp/a/L4"])
    assert ("solve", ["w1", "w2"]) in log   # every workload, though no market change touched them
    assert ("quotas", QUOTAS_KEY, q.model_dump(mode="json")) in out.state_writes
    (dec,) = out.decisions
    assert "q1" in dec.trigger_event_ids and "quotas set" in dec.reason
    assert {c.action for c in dec.changes} == {ChangeAction.MIGRATE}
    assert {a.offer for a in dec.assignments} == {L4B}


def test_a_quota_set_without_workloads_is_stored_and_solves_nothing() -> None:
    log: list[tuple[str, Any]] = []
    d = Decider(recording(log), {}, {}, {})
    out = d.step([], [quotas_set("q1", NO_L4_IN_A)])
    assert out.state_writes == [("quotas", QUOTAS_KEY, quotas_set("q1", NO_L4_IN_A).model_dump(mode="json"))]
    assert not out.solved and out.decisions == [] and ("set_quotas", ["gcp/a/L4"]) in log


def test_an_older_quota_set_is_ignored() -> None:
    """The latest set_at wins, as in the store (a set re-published with an old date does not undo a newer)."""
    log: list[tuple[str, Any]] = []
    d = Decider(recording(log), {}, {}, {})
    d.step([], [quotas_set("q2", NO_L4_IN_A, minutes=5)])
    out = d.step([], [quotas_set("q1", minutes=1)])
    assert out.state_writes == [] and d.quotas is not None and d.quotas.event_id == "q2"
    assert [e for e in log if e[0] == "set_quotas"] == [("set_quotas", ["gcp/a/L4"])]


def test_a_decider_rebuilt_from_the_tables_gets_the_quotas_and_decides_like_the_original() -> None:
    log_a: list[tuple[str, Any]] = []
    a = Decider(recording(log_a), {}, {}, {})
    first = a.step([change(L4A, 1.0, "e1"), change(L4B, 2.0, "e2")], [requested("w1")])
    second = a.step([], [quotas_set("q1", NO_L4_IN_A)])
    tables = tables_of(first, second)
    assert set(tables["quotas"]) == {QUOTAS_KEY}
    log_b: list[tuple[str, Any]] = []
    b = Decider(recording(log_b), tables["market"], tables["workloads"], tables["plans"], tables["quotas"])
    b.engine()
    assert ("set_quotas", ["gcp/a/L4"]) in log_b
    nxt = [change(L4A, 0.1, "e3")]   # cheaper, but the quota still rules it out: no decision in either
    assert [x.event_id for x in a.step(nxt, [requested("w2")]).decisions] == \
        [x.event_id for x in b.step(nxt, [requested("w2")]).decisions]
    assert all(a_.offer == L4B for a_ in b.plan["w2"])


def test_the_remote_decider_is_built_with_the_quotas_table() -> None:
    async def run() -> None:
        q = quotas_set("q1", NO_L4_IN_A)
        loop = asyncio.get_running_loop()
        r = await loop.run_in_executor(None, lambda: RemoteDecider(
            QuotaEngine, {}, {}, {}, {QUOTAS_KEY: q.model_dump(mode="json")}))
        try:
            out = await r.step([change(L4A, 1.0, "e1"), change(L4B, 2.0, "e2")], [requested("w1")])
            assert {a.offer for d in out.decisions for a in d.assignments} == {L4B}
        finally:
            r.close()

    asyncio.run(run())
