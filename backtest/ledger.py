"""The back-tester's accounting: each strategy's holdings, cost, deliveries, interruptions, budget and
quota violations and placement spread, piecewise constant in event time (see backtest/sim.py).

A move is charged as the engine prices it (solvers.placement.move_cost_usd), for every strategy alike: the
state's egress (`state_gb` x the dearest egress USD/GB of the providers it was on, when the new placement
uses a provider the state was not on) in dollars at once, and its restart overhead plus the state's
transfer time (`state_gb` at `move_bandwidth_gbps`) as hours the new instances are paid for but deliver
nothing."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.events import (
    Assignment,
    WorkloadSpec,
)
from schemas.offers import OfferKey
from schemas.placement import GpuQuota, move_egress_usd, place_of, quota_violations

Plan = dict[str, list[Assignment]]   # workload id -> its assignments
OURS = "cloudarb"
BASELINES = ("on_demand_home", "launch_cheapest", "greedy_spot", "pco_like")
RELAXED_BUDGET = 1e9
Snapshot = tuple[tuple[str, int], ...]        # a workload's holdings at once: sorted (offer key, instances)
SPREAD_KEYS = ("providers", "regions", "gpu_models", "places")


@dataclass
class Holding:
    key: str
    offer: OfferKey
    instances: int
    ready_t: float = -math.inf   # delivers from this time on (restart overhead)

    @property
    def gpus(self) -> int:
        return self.instances * self.offer.gpus_per_instance


@dataclass
class Ledger:
    """Accounting of one strategy.

    Restart scope per workload: "workload" (gang-scheduled, e.g. data-parallel training: an interruption or
    a migration of any part restarts the whole job, which pays but delivers nothing for
    `restart_overhead_h`) or "instance" (independent replicas, e.g. inference: only the new instances wait).
    """

    name: str
    specs: dict[str, WorkloadSpec]
    gang: dict[str, bool] = field(default_factory=dict)
    quotas: tuple[GpuQuota, ...] = ()
    move_bandwidth_gbps: float = 1.0   # a move copies the workload's state_gb at this rate
    cost: float = 0.0
    egress_usd: float = 0.0            # the part of `cost` paid for moving state between providers
    gpu_h: float = 0.0
    tput_h: float = 0.0
    paid_gpu_h: float = 0.0
    interruptions: int = 0
    migrations: int = 0
    launches: int = 0
    budget_violations: int = 0
    budget_violation_h: float = 0.0
    unplaced_h: float = 0.0
    stuck: int = 0
    holdings: dict[str, list[Holding]] = field(default_factory=dict)
    launched: set[str] = field(default_factory=set)
    needs_replace: set[str] = field(default_factory=set)
    over: set[str] = field(default_factory=set)
    share_gpu_h: dict[str, float] = field(default_factory=dict)
    per_workload: dict[str, dict[str, float]] = field(default_factory=dict)
    series: list[tuple[float, float]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)          # holdings changed at the current instant
    timeline: dict[str, list[tuple[float, Snapshot]]] = field(default_factory=dict)
    offers: dict[str, OfferKey] = field(default_factory=dict)  # every offer a timeline names
    spread: dict[str, dict[str, int]] = field(default_factory=dict)  # max distinct SPREAD_KEYS at once
    quota_violations: int = 0                                # decision instants over a quota
    quota_violation_h: float = 0.0
    quota_violations_by_workload: dict[str, int] = field(default_factory=dict)
    violated: tuple[str, ...] = ()                           # quotas exceeded now ('key used/limit')
    state_at: dict[str, frozenset[str]] = field(default_factory=dict)  # per workload: the providers its state is on

    def accrue(self, t0: float, t1: float, states: dict[str, dict[str, Any]], active: Iterable[str]) -> None:
        dt = t1 - t0
        if dt <= 0:
            return
        if self.violated:
            self.quota_violation_h += dt / 3600
        for wid in active:
            hs = self.holdings.get(wid)
            pw = self.per_workload.setdefault(wid, {"cost": 0.0, "gpu_h": 0.0})
            if not hs:
                self.unplaced_h += dt / 3600
                continue
            spec = self.specs[wid]
            rate = sum(h.instances * float(states[h.key]["usd_per_hour"]) for h in hs)
            c = rate * dt / 3600
            self.cost += c
            pw["cost"] += c
            for h in hs:
                self.paid_gpu_h += h.gpus * dt / 3600
                live = max(0.0, t1 - max(t0, h.ready_t))
                if live > 0:
                    g = h.gpus * live / 3600
                    self.gpu_h += g
                    pw["gpu_h"] += g
                    self.tput_h += g * spec.gpu_throughput.get(h.offer.gpu_model, 0.0)
                    s = f"{h.offer.provider}/{h.offer.market.value}"
                    self.share_gpu_h[s] = self.share_gpu_h.get(s, 0.0) + g
            if rate > spec.budget_usd_per_hour * (1 + 1e-9):
                self.budget_violation_h += dt / 3600
                if wid not in self.over:
                    self.over.add(wid)
                    self.budget_violations += 1
                    self.events.append({"t": t0, "kind": "budget_violation", "workload": wid,
                                        "usd_per_hour": rate, "budget": spec.budget_usd_per_hour})
            else:
                self.over.discard(wid)

    def interrupt(self, lost: set[str], t: float) -> set[str]:
        """Drop holdings on offers that lost spot capacity; the workloads hit."""
        hit: set[str] = set()
        for wid, hs in self.holdings.items():
            keep = [h for h in hs if h.key not in lost]
            if len(keep) != len(hs):
                hit.add(wid)
                self.touched.add(wid)
                self.holdings[wid] = keep
                self.interruptions += 1
                self.needs_replace.add(wid)
                if self.gang.get(wid, True):
                    for h in keep:  # the job stops until it is whole again (and restarted)
                        h.ready_t = math.inf
                self.events.append({"t": t, "kind": "interruption", "workload": wid,
                                    "offers": sorted({h.key for h in hs} & lost)})
        return hit

    def set_plan(self, wid: str, assigns: Sequence[Assignment], t: float, dead: set[str]) -> None:
        new = [a for a in assigns if a.instances > 0]
        alive = [a for a in new if a.offer.key not in dead]
        if len(alive) != len(new):
            self.stuck += 1
        old: dict[str, list[Holding]] = {}
        for h in self.holdings.get(wid, []):
            old.setdefault(h.key, []).append(h)
        added = {a.offer.key for a in alive} - set(old)
        spec = self.specs[wid]
        overhead = spec.restart_overhead_h * 3600
        gang = self.gang.get(wid, True)
        first = wid not in self.launched
        replacing = wid in self.needs_replace
        if alive and first:
            self.launches += 1
            self.launched.add(wid)
        elif added and old and not replacing:
            self.migrations += 1
            self.events.append({"t": t, "kind": "migration", "workload": wid})
        # the state follows the workload to new instances: transfer time, and egress when it leaves its providers
        moved = bool(alive) and not first and bool(added)
        was_on = self.state_at.get(wid, frozenset())
        providers = frozenset(a.offer.provider for a in alive)
        usd = move_egress_usd(spec.state_gb, was_on, providers) if moved else 0.0
        if usd:
            self.cost += usd
            self.egress_usd += usd
            pw = self.per_workload.setdefault(wid, {"cost": 0.0, "gpu_h": 0.0})
            pw["cost"] += usd
        transfer = spec.state_gb * 8.0 / max(self.move_bandwidth_gbps, 1e-9) if moved else 0.0
        if alive:
            self.state_at[wid] = providers
        hs: list[Holding] = []
        for a in alive:
            k = a.offer.key
            if first:
                hs.append(Holding(k, a.offer, a.instances, t))
            elif (gang and (added or replacing)) or k in added:
                hs.append(Holding(k, a.offer, a.instances, t + overhead + transfer))
            else:   # a kept offer: its running instances keep their start; more instances start now
                left = a.instances
                for h in sorted(old[k], key=lambda h: h.ready_t):
                    n = min(left, h.instances)
                    if n:
                        hs.append(Holding(k, a.offer, n, h.ready_t))
                        left -= n
                if left:
                    hs.append(Holding(k, a.offer, left, t + overhead + transfer))
        if alive:
            self.needs_replace.discard(wid)
        self.holdings[wid] = hs
        self.touched.add(wid)

    def remove(self, wid: str) -> None:
        if self.holdings.pop(wid, None) is not None:
            self.touched.add(wid)
        self.needs_replace.discard(wid)
        self.over.discard(wid)

    def settle(self, t: float) -> None:
        """The end of a decision instant: what is held now stays in force until the next instant. Record the
        changed workloads' placements (timeline, spread) and check the portfolio's quotas."""
        if not self.touched:
            return
        for wid in sorted(self.touched):
            hs = self.holdings.get(wid, [])
            inst: dict[str, int] = {}
            for h in hs:
                inst[h.key] = inst.get(h.key, 0) + h.instances
            snap: Snapshot = tuple(sorted(inst.items()))
            tl = self.timeline.setdefault(wid, [])
            if tl and tl[-1][1] == snap:
                continue
            tl.append((t, snap))
            if not hs:
                continue
            for h in hs:
                self.offers.setdefault(h.key, h.offer)
            now = {"providers": len({h.offer.provider for h in hs}),
                   "regions": len({(h.offer.provider, h.offer.region) for h in hs}),
                   "gpu_models": len({h.offer.gpu_model for h in hs}),
                   "places": len({place_of(h.offer) for h in hs})}
            sp = self.spread.setdefault(wid, dict.fromkeys(SPREAD_KEYS, 0))
            for k, v in now.items():
                sp[k] = max(sp[k], v)
        self.touched.clear()
        if not self.quotas:
            return
        self.violated = tuple(quota_violations(
            self.quotas, ((h.offer, h.instances) for hs in self.holdings.values() for h in hs)))
        if not self.violated:
            return
        self.quota_violations += 1
        over = {v.rsplit(" ", 1)[0] for v in self.violated}
        qs = [q for q in self.quotas if q.key in over]
        wids = sorted(w for w, hs in self.holdings.items() if any(q.covers(h.offer) for h in hs for q in qs))
        for wid in wids:
            self.quota_violations_by_workload[wid] = self.quota_violations_by_workload.get(wid, 0) + 1
        self.events.append({"t": t, "kind": "quota_violation", "quotas": list(self.violated), "workloads": wids})

    def rate_of(self, wid: str, states: dict[str, dict[str, Any]]) -> float:
        return sum(h.instances * float(states[h.key]["usd_per_hour"]) for h in self.holdings.get(wid, []))
