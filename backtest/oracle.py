"""The hindsight oracle: the cheapest way each workload could have run over the window, knowing every price,
capacity loss and interruption in advance, under the same topology rules as every strategy. It is a
lower bound, not a strategy: strategies' regret is measured against it.

What is solved, per workload, online in event time (one pass, memory per workload = its places):

- gang: a shortest path over time. The states at a decision instant are the places (schemas.placement.
  place_of) that can host the whole gang then: ceil(min_gpus / g) whole instances of one instance type,
  spot only where the offer has capacity (the oracle knows the preemptions) and only up to the workload's
  spot share, interconnect satisfied, within budget; plus "unplaced". Holding a state costs its plan's
  USD/h for the time it is held; entering a state from another costs the move: the restart overhead
  (restart_overhead_h x the new plan's USD/h) plus egress (state_gb x the source provider's USD/GB) when
  the provider changes. dp[s] = min(dp[s] (stay), min over s' of dp[s'] + move(s' -> s)) at every instant.
  The path is chosen on that objective; the bound it reports counts only the egress in dollars and the
  restart hours as delivered (the ledger pays them as hours that deliver nothing, so the oracle's cost per
  delivered GPU-hour stays at or below what the same path costs a strategy).
- replicas: at every instant, the cheapest admissible fill of min_gpus with instances of the right size
  over all offers (spread is free); moves are not charged (a lower bound: they cost >= 0).

Why it is a lower bound: every constraint dropped (shared capacity and quotas between workloads, the
engine's not knowing the future) can only make the optimum cheaper; move costs are charged no higher than
the ledger charges them (egress alike; restart and transfer hours not at all). The oracle places a workload
whenever some place can host it, so it delivers at least what any strategy delivers; compare costs together
with delivered GPU-hours.

>>> from schemas.offers import Market, OfferKey
>>> from schemas.events import WorkloadSpec
>>> from schemas.market import OfferQuote
>>> def q(region, usd):
...     o = OfferKey(provider="gcp", region=region, instance_type="a3-highgpu-8g", gpu_model="H100-80GB",
...                  gpus_per_instance=8, market=Market.ON_DEMAND)
...     return OfferQuote(o, usd)
>>> spec = WorkloadSpec(workload_id="w", gpu_throughput={"H100-80GB": 1.0}, min_gpus=16, max_gpus=16,
...                     budget_usd_per_hour=100.0, restart_overhead_h=1.0)
>>> o = Oracle()
>>> o.observe(0.0, [q("a", 40.0), q("b", 200.0)], [spec])     # 2 instances: $80/h in a
>>> o.observe(3600.0, [q("a", 100.0), q("b", 45.0)], [spec])  # a dearer: move to b (a restart: 1 h of $90)
>>> o.finish(5 * 3600.0)["w"]   # (the restart steers the path; the bound counts its hour as delivered)
{'usd': 440.0, 'gpu_hours': 80.0, 'moves': 1}
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from schemas.events import WorkloadSpec
from schemas.market import OfferQuote
from schemas.offers import OfferKey
from schemas.placement import Topology, move_egress_usd, place_of, satisfies

UNPLACED = ""


BIG_USD_PER_H = 1e7   # the objective's price of staying unplaced while some place could host the workload


@dataclass
class _Path:
    """The DP over one workload's states: per state, the best path ending there (objective, real cost,
    GPU-hours delivered, moves), and the rates the states pay from the last instant on."""

    obj: dict[str, float] = field(default_factory=lambda: {UNPLACED: 0.0})
    usd: dict[str, float] = field(default_factory=lambda: {UNPLACED: 0.0})
    gpu_h: dict[str, float] = field(default_factory=lambda: {UNPLACED: 0.0})
    moves: dict[str, int] = field(default_factory=lambda: {UNPLACED: 0})
    rate: dict[str, tuple[float, float, int, str]] = field(default_factory=dict)  # objective, USD/h, GPUs, provider
    t: float | None = None
    started: bool = False


def gang_plans(spec: WorkloadSpec, quotes: Iterable[OfferQuote]) -> dict[str, tuple[float, int, str]]:
    """Per place that can host the whole gang now: (cheapest USD/h, GPUs, provider)."""
    by_place: dict[str, list[OfferQuote]] = {}
    for qt in quotes:
        o = qt.offer
        if (qt.available and spec.gpu_throughput.get(o.gpu_model)
                and (spec.allowed_providers is None or o.provider in spec.allowed_providers)):
            by_place.setdefault(place_of(o), []).append(qt)
    out: dict[str, tuple[float, int, str]] = {}
    for place, qs in by_place.items():
        g = qs[0].offer.gpus_per_instance
        n = math.ceil(spec.min_gpus / g)
        if n * g > spec.max_gpus or not satisfies(qs[0].offer, spec.interconnect, n):
            continue
        best = math.inf
        spot = [x for x in qs if x.is_spot]
        od = [x for x in qs if not x.is_spot]
        for s_q in [None, *spot]:
            for o_q in [None, *od]:
                cap_s = 0 if s_q is None else min(math.floor(spec.max_spot_share * n + 1e-9),
                                                  n if s_q.capacity_instances is None else s_q.capacity_instances)
                cap_o = 0 if o_q is None else (n if o_q.capacity_instances is None else o_q.capacity_instances)
                if cap_s + cap_o < n:
                    continue
                k = cap_s if (s_q is not None and (o_q is None or s_q.usd_per_hour <= o_q.usd_per_hour)) \
                    else max(0, n - cap_o)   # as much spot as allowed when it is the cheaper, else the least
                usd = k * (s_q.usd_per_hour if s_q else 0.0) + (n - k) * (o_q.usd_per_hour if o_q else 0.0)
                if (n - k) > cap_o or usd > spec.budget_usd_per_hour * (1 + 1e-9):
                    continue
                best = min(best, usd)
        if best < math.inf:
            out[place] = (best, n * g, qs[0].offer.provider)
    return out


def replica_plan(spec: WorkloadSpec, quotes: Iterable[OfferQuote]) -> tuple[float, int] | None:
    """The cheapest fill of min_gpus with replicas (each one instance of the right size), spread freely
    (shares and spot share respected greedily per USD/GPU): (USD/h, GPUs), or None."""
    cands = []
    for qt in quotes:
        o = qt.offer
        if not (qt.available and spec.gpu_throughput.get(o.gpu_model)
                and (spec.allowed_providers is None or o.provider in spec.allowed_providers)
                and (spec.gpus_per_replica is None or o.gpus_per_instance == spec.gpus_per_replica)
                and satisfies(o, spec.interconnect, 1)):
            continue
        cands.append((qt.usd_per_hour / o.gpus_per_instance, qt))
    cands.sort(key=lambda c: c[0])
    gpus = spot = 0
    usd = 0.0
    per_provider: dict[str, int] = {}
    per_region: dict[str, int] = {}
    for _, qt in cands:
        o, g = qt.offer, qt.offer.gpus_per_instance
        n = qt.capacity_instances if qt.capacity_instances is not None else spec.max_gpus
        while n > 0 and gpus + g <= spec.max_gpus and gpus < spec.min_gpus:
            if qt.is_spot and spot + g > spec.max_spot_share * spec.min_gpus + 1e-9:
                break
            if spec.max_share_per_provider is not None and \
                    per_provider.get(o.provider, 0) + g > spec.max_share_per_provider * spec.min_gpus + 1e-9:
                break
            if spec.max_share_per_region is not None and \
                    per_region.get(o.region, 0) + g > spec.max_share_per_region * spec.min_gpus + 1e-9:
                break
            gpus += g
            usd += qt.usd_per_hour
            spot += g if qt.is_spot else 0
            per_provider[o.provider] = per_provider.get(o.provider, 0) + g
            per_region[o.region] = per_region.get(o.region, 0) + g
            n -= 1
    if gpus < spec.min_gpus or usd > spec.budget_usd_per_hour * (1 + 1e-9):
        return None
    return usd, gpus


def could_use(spec: WorkloadSpec, o: OfferKey) -> bool:
    """The static part of admissibility: an offer the workload could ever run on (GPU model, provider,
    replica size, interconnect for the instances it would need)."""
    if not spec.gpu_throughput.get(o.gpu_model) or (spec.allowed_providers is not None
                                                    and o.provider not in spec.allowed_providers):
        return False
    if spec.topology is Topology.REPLICAS:
        return (spec.gpus_per_replica is None or o.gpus_per_instance == spec.gpus_per_replica) and \
            satisfies(o, spec.interconnect, 1)
    return satisfies(o, spec.interconnect, math.ceil(spec.min_gpus / o.gpus_per_instance))


class Oracle:
    """Feed it every decision instant's market (`observe`), then `finish` at the window's end.

    `observe(t, quotes, active, changed)`: `quotes` by offer key; with `changed` (the keys whose quote
    changed since the last call), a workload none of whose usable offers changed keeps its states and
    rates (nothing to re-decide), so a long replay costs what its changes cost."""

    def __init__(self) -> None:
        self.paths: dict[str, _Path] = {}
        self.done: dict[str, dict[str, float | int]] = {}
        self._usable: dict[str, set[str]] = {}

    @staticmethod
    def _charge(p: _Path, t: float) -> None:
        """Every state pays its rate for the time since the last instant."""
        if p.t is not None and t > p.t:
            h = (t - p.t) / 3600
            for s in p.obj:
                o_rate, usd, gpus, _ = p.rate.get(s, (0.0, 0.0, 0, ""))
                p.obj[s] += o_rate * h
                p.usd[s] += usd * h
                p.gpu_h[s] += gpus * h
        p.t = t

    def observe(self, t: float, quotes: Sequence[OfferQuote] | Mapping[str, OfferQuote],
                active: Iterable[WorkloadSpec], changed: Collection[str] | None = None) -> None:
        by_key = quotes if isinstance(quotes, Mapping) else {q.key: q for q in quotes}
        active = list(active)
        ids = {s.workload_id for s in active}
        for wid in [w for w in self.paths if w not in ids]:
            self._close(wid, t)
        for spec in active:
            wid = spec.workload_id
            usable = self._usable.get(wid)
            if usable is None or changed is None or wid not in self.paths:
                usable = self._usable[wid] = {k for k, q in by_key.items() if could_use(spec, q.offer)}
            elif not any(k in usable for k in changed):
                new = [k for k in changed if k not in usable and k in by_key and could_use(spec, by_key[k].offer)]
                if not new:
                    continue   # nothing this workload could use moved: its states and rates stand
                usable.update(new)
            p = self.paths.setdefault(wid, _Path())
            self._charge(p, t)
            quotes = [by_key[k] for k in usable if k in by_key]
            if spec.topology is Topology.REPLICAS:
                r = replica_plan(spec, quotes)
                plans = {"replicas": (r[0], r[1], "")} if r else {}
                self._step(p, spec, plans, free_moves=True)
            else:
                self._step(p, spec, gang_plans(spec, quotes))

    @staticmethod
    def _step(p: _Path, spec: WorkloadSpec, plans: dict[str, tuple[float, int, str]],
              free_moves: bool = False) -> None:
        """Transitions at an instant: stay where the state still exists, or move (restart + egress);
        unplaced is free to enter, and priced BIG_USD_PER_H in the objective while some plan exists."""
        prov = {s: r[3] for s, r in p.rate.items()}
        new: dict[str, tuple[float, float, float, int]] = {}
        targets = {UNPLACED: (0.0, 0, ""), **plans}
        for s, (usd_h, _, provider) in targets.items():
            best: tuple[float, float, float, int] | None = None
            for s2 in p.obj:
                restart = egress = 0.0
                if s != s2 and s != UNPLACED and p.started and not free_moves:
                    restart = spec.restart_overhead_h * usd_h
                    if prov.get(s2):
                        egress = move_egress_usd(spec.state_gb, {prov[s2]}, {provider})
                moved = int(s != s2 and s != UNPLACED and s2 != UNPLACED and not free_moves)
                cand = (p.obj[s2] + restart + egress, p.usd[s2] + egress, p.gpu_h[s2], p.moves[s2] + moved)
                if best is None or cand[0] < best[0]:
                    best = cand
            assert best is not None
            new[s] = best
        p.obj = {s: v[0] for s, v in new.items()}
        p.usd = {s: v[1] for s, v in new.items()}
        p.gpu_h = {s: v[2] for s, v in new.items()}
        p.moves = {s: v[3] for s, v in new.items()}
        p.rate = {s: (usd, usd, gpus, provider) for s, (usd, gpus, provider) in plans.items()}
        if plans:
            p.rate[UNPLACED] = (BIG_USD_PER_H, 0.0, 0, "")
            p.started = True

    def _close(self, wid: str, t: float) -> None:
        p = self.paths.pop(wid)
        self._charge(p, t)
        best = min(p.obj, key=lambda s: p.obj[s])
        self.done[wid] = {"usd": round(p.usd[best], 6), "gpu_hours": round(p.gpu_h[best], 6),
                          "moves": p.moves[best]}

    def finish(self, t: float) -> dict[str, dict[str, float | int]]:
        for wid in list(self.paths):
            self._close(wid, t)
        return self.done
