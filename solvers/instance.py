"""The frozen problem instance (numpy arrays) and `evaluate`, the independent checker of a plan.

An `Instance` is data only: offers, workloads, the plan in force and the engine parameters, as
arrays built once from `OfferQuote`s and `WorkloadSpec`s. Model building (solvers/portfolio.py)
reads it and never mutates it; price events produce a new Instance with copied arrays
(`with_offer_updates`, microseconds at 10k offers).

`evaluate(instance, plan)` re-checks every hard constraint from scratch (GPU counts, whole
instances, accepted GPU models and providers, availability, capacity, budget, spot share,
co-location, and the placement rules: a gang in one place, the interconnect for the instance count,
replica sizes, provider/region shares of replicas, GPU quotas portfolio-wide, checked on the domain
objects with schemas.placement's own functions, not with solvers/placement.py's array code the engines
use) and prices the plan with the same objective the engine optimises. It shares no code
with the solver's constraint rows, so it is a real cross-check (used by the engine before
returning a plan and by the property tests).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from schemas.events import Assignment, WorkloadSpec
from schemas.gpus import GPU_CATALOGUE
from schemas.market import OfferQuote
from schemas.offers import OfferKey
from schemas.placement import (
    GpuQuota,
    Interconnect,
    Topology,
    egress_usd_per_gb,
    gpu_family,
    interconnect_of,
    place_of,
    quota_violations,
    satisfies,
)
from solvers.placement import amortised_move

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B8 = npt.NDArray[np.bool_]

MODELS: tuple[str, ...] = tuple(GPU_CATALOGUE)
MODEL_INDEX: dict[str, int] = {m: i for i, m in enumerate(MODELS)}
EPS = 1e-6


@dataclass(frozen=True, slots=True)
class EngineParams:
    """Knobs of the portfolio objective (see the model comment in solvers/portfolio.py)."""

    risk_lambda: float = 1.0                        # weight of risk (interruption + concentration + migration)
    concentration_cap: float = 0.5                  # share of portfolio GPUs per (provider, region, market)
    concentration_penalty_usd_per_gpu_hour: float = 0.10  # per GPU above the cap (soft cap)
    migration_threshold_usd_per_hour: float = 0.50  # never move a workload to save less than this ...
    migration_threshold_fraction: float = 0.05      # ... or this share of its current cost, whichever larger
    unplaced_penalty_usd_per_hour: float = 1000.0   # per unit priority, on top of 100 x budget (LP slack)
    move_bandwidth_gbps: float = 1.0                # a move copies state_gb at this rate (hours charged)
    payback_horizon_h: float = 24.0                 # a move must pay its one-off cost back within this


@dataclass(frozen=True)
class Instance:
    """Frozen arrays. Offers are indexed 0..n-1, workloads 0..W-1."""

    # offers
    offer_keys: tuple[OfferKey, ...]
    keys: tuple[str, ...]
    provider: I64                 # index into providers
    region: I64                   # index into regions
    group: I64                    # index into groups = (provider, region, market)
    model: I64                    # index into MODELS
    gpus: I64
    spot: B8
    price: F64                    # usd_per_hour now (budgets are checked against this)
    plan_price: F64               # forecast at the horizon (the objective uses this)
    plan_hi: F64                  # its upper quantile (p90): the planning price of risk-averse workloads
    capacity: F64                 # instances, inf = unknown
    available: B8
    interrupt: F64                # interruption probability per hour
    quote_age_s: F64
    providers: tuple[str, ...]
    regions: tuple[str, ...]          # "provider|region": a region is one provider's
    groups: tuple[tuple[str, str, str], ...]
    place: I64                    # index into places (schemas.placement.place_of: where a gang keeps all)
    egress: F64                   # USD per GB out of the offer's provider
    nvlink: B8                    # the instance type links its GPUs (NVLink/NVSwitch)
    ib: B8                        # ... and has an InfiniBand/EFA-class fabric between instances
    places: tuple[str, ...]
    # workloads
    specs: tuple[WorkloadSpec, ...]
    ids: tuple[str, ...]
    tput: F64                     # [W, len(MODELS)] relative throughput per GPU, 0 = not acceptable
    ref_tput: F64                 # [W] best throughput the workload accepts (cost normaliser)
    min_gpus: I64
    max_gpus: I64
    budget: F64
    spot_share: F64
    restart_h: F64
    same_region: B8
    priority: I64
    allowed: B8                   # [W, len(providers)]
    gang: B8                      # topology gang: all instances in one place
    replica_gpus: I64             # replicas: GPUs per instance required (0 = any)
    need_ic: I64                  # 0 any, 1 nvlink, 2 infiniband
    share_provider: F64           # replicas: max share of GPUs per provider (1 = no limit)
    share_region: F64             # replicas: max share of GPUs per (provider, region)
    state_gb: F64
    averse: B8                    # risk-averse: plans on plan_hi
    lost_h: F64                   # hours an interruption costs: restart overhead + copying state_gb again
    # quotas: qmask[q, o] = quota q covers offer o; qlimit[q] GPUs; offer_quotas[o] = the q covering o
    quotas: tuple[GpuQuota, ...] = ()
    qmask: B8 = field(default_factory=lambda: np.zeros((0, 0), np.bool_))
    qlimit: F64 = field(default_factory=lambda: np.zeros(0))
    offer_quotas: tuple[tuple[int, ...], ...] = ()
    # current plan: workload id -> ((offer index, instances), ...); offers unknown here are dropped
    # and the workload is listed in `stale_plan`
    current: Mapping[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    stale_plan: frozenset[str] = frozenset()
    params: EngineParams = EngineParams()

    @property
    def n_offers(self) -> int:
        return len(self.keys)

    @property
    def n_workloads(self) -> int:
        return len(self.ids)

    def offer_index(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.keys)}

    def workload_index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.ids)}

    def pair_ratio(self, w: int, o: int | I64) -> F64:
        """Throughput normaliser ref_tput / tput: USD per hour of the workload's best GPU."""
        with np.errstate(divide="ignore"):   # an unacceptable model prices at +inf
            return np.asarray(self.ref_tput[w] / self.tput[w, self.model[o]], dtype=np.float64)

    # Objective cost of one instance of offer o for workload w (USD/h; migration and concentration apart):
    #
    #   c_wo = p^_wo · r_wo · (1 + λ · π_o · m_wo · h_w)
    #
    #   p^_wo  planning price: the p90 forecast (plan_hi) when w is risk-averse, else the median (plan_price)
    #   r_wo   t*_w / t_w,model(o): USD per hour of w's best GPU
    #   π_o    P(the instance is interrupted within an hour)
    #   m_wo   instances that stop when any one is interrupted: ceil(L_w / g_o) for a gang (the whole job
    #          restarts), 1 for replicas (only that replica does)
    #   h_w    hours an interruption costs: restart overhead + copying state_gb again at the move bandwidth
    #
    # so λ·π·m·h·p·r is the expected cost per hour of the time interruptions waste. `unit_costs` (vectorised
    # over pairs), `unit_cost` and `rows_cost` compute it with the same operations in the same order.

    def unit_costs(self, w: I64 | int, o: I64, ratio: F64) -> F64:
        """c_wo for pairs (w[i], o[i]) with throughput ratios `ratio` (see the model above)."""
        lam = self.params.risk_lambda
        plan = np.where(self.averse[w], self.plan_hi[o], self.plan_price[o])
        m = np.where(self.gang[w], np.ceil(self.min_gpus[w] / self.gpus[o]), 1.0)
        return np.asarray(plan * ratio * (1.0 + lam * self.interrupt[o] * (m * self.lost_h[w])), dtype=np.float64)

    def unit_cost(self, w: int, o: I64, with_migration: bool) -> F64:
        """Objective cost of one instance of offers `o` for workload `w` (risk and migration
        included, concentration excluded: it is not separable per workload)."""
        lam = self.params.risk_lambda
        c = self.unit_costs(w, o, self.pair_ratio(w, o))
        if with_migration:
            c = c + lam * self.migration_per_gpu(w) * self.gpus[o]
        return np.asarray(c, dtype=np.float64)

    def rows_cost(self, w: int, rows: Sequence[tuple[int, int]]) -> float:
        """Objective cost of whole instances `rows` ((offer index, instances), ...) for workload `w`,
        migration excluded: `(unit_cost(w, o, False) * n).sum()`, in scalar arithmetic (a plan has a few
        rows; the engine calls this for every workload it moves, where numpy's per-call overhead dominated).

        The operations are those of `unit_cost`, in the same order, so the result is the same float.
        """
        if not rows:
            return 0.0
        lam = self.params.risk_lambda
        ref, lost = float(self.ref_tput[w]), float(self.lost_h[w])
        gang, lo = bool(self.gang[w]), int(self.min_gpus[w])
        plans = self.plan_hi if self.averse[w] else self.plan_price
        tput_w = self.tput[w]
        tot = 0.0
        for o, n in rows:
            t = float(tput_w[self.model[o]])
            ratio = ref / t if t else math.inf
            m = float(math.ceil(lo / int(self.gpus[o]))) if gang else 1.0
            tot += float(plans[o]) * ratio * (1.0 + lam * float(self.interrupt[o]) * (m * lost)) * float(n)
        return tot

    def threshold(self, w: int) -> float:
        """Hysteresis: the saving (objective USD/h) below which workload `w` is not moved."""
        cur = self.current.get(self.ids[w])
        return self.threshold_of(self.rows_cost(w, cur)) if cur else 0.0

    def threshold_of(self, cost: float) -> float:
        """The hysteresis threshold of a plan whose objective cost (migration excluded) is `cost`."""
        p = self.params
        return max(p.migration_threshold_usd_per_hour, p.migration_threshold_fraction * cost)

    def migration_per_gpu(self, w: int) -> float:
        cur = self.current.get(self.ids[w])
        if not cur:
            return 0.0
        g = sum(self.gpus[o] * n for o, n in cur)
        return self.threshold(w) / max(1, int(g))

    def with_offer_updates(self, quotes: Sequence[OfferQuote], index: Mapping[str, int]) -> Instance:
        """A new Instance with changed prices/capacity/availability/risk of existing offers."""
        price, plan, cap = self.price.copy(), self.plan_price.copy(), self.capacity.copy()
        hi = self.plan_hi.copy()
        avail, pi, age = self.available.copy(), self.interrupt.copy(), self.quote_age_s.copy()
        for q in quotes:
            i = index[q.key]
            price[i] = q.usd_per_hour
            plan[i] = q.planning_usd_per_hour
            hi[i] = q.planning_usd_per_hour_p90
            cap[i] = math.inf if q.capacity_instances is None else float(q.capacity_instances)
            avail[i] = q.available
            pi[i] = q.interruption_probability_per_hour
            age[i] = q.quote_age_s
        return replace(self, price=price, plan_price=plan, plan_hi=hi, capacity=cap, available=avail,
                       interrupt=pi, quote_age_s=age)

    def with_removed(self, offer_idx: Iterable[int]) -> Instance:
        avail = self.available.copy()
        avail[list(offer_idx)] = False
        return replace(self, available=avail)

    def with_current(self, plan: Mapping[str, Sequence[Assignment]]) -> Instance:
        cur, stale = _current(plan, self.offer_index())
        return replace(self, current=cur, stale_plan=stale)


def _current(plan: Mapping[str, Sequence[Assignment]], index: Mapping[str, int]
             ) -> tuple[dict[str, tuple[tuple[int, int], ...]], frozenset[str]]:
    cur: dict[str, tuple[tuple[int, int], ...]] = {}
    stale: set[str] = set()
    for wid, assigns in plan.items():
        rows: dict[int, int] = {}
        for a in assigns:
            i = index.get(a.offer.key)
            if i is None:
                stale.add(wid)
                continue
            rows[i] = rows.get(i, 0) + a.instances
        if rows:
            cur[wid] = tuple(sorted(rows.items()))
    return cur, frozenset(stale)


def build_instance(quotes: Sequence[OfferQuote], specs: Sequence[WorkloadSpec],
                   current: Mapping[str, Sequence[Assignment]] | None = None,
                   params: EngineParams | None = None, quotas: Sequence[GpuQuota] = ()) -> Instance:
    """Arrays from domain objects (one pass over each list)."""
    quotes = list(quotes)
    specs = list(specs)
    prov_ix: dict[str, int] = {}
    reg_ix: dict[str, int] = {}
    grp_ix: dict[tuple[str, str, str], int] = {}
    n = len(quotes)
    provider = np.empty(n, np.int64)
    region = np.empty(n, np.int64)
    group = np.empty(n, np.int64)
    model = np.empty(n, np.int64)
    gpus = np.empty(n, np.int64)
    spot = np.empty(n, np.bool_)
    price = np.empty(n)
    plan = np.empty(n)
    hi = np.empty(n)
    cap = np.empty(n)
    avail = np.empty(n, np.bool_)
    pi = np.empty(n)
    age = np.empty(n)
    place = np.empty(n, np.int64)
    egress = np.empty(n)
    nvl = np.empty(n, np.bool_)
    ibf = np.empty(n, np.bool_)
    place_ix: dict[str, int] = {}
    for i, q in enumerate(quotes):
        k = q.offer
        place[i] = place_ix.setdefault(place_of(k), len(place_ix))
        egress[i] = egress_usd_per_gb(k.provider)
        have = interconnect_of(k)
        nvl[i] = "nvlink" in have
        ibf[i] = "infiniband" in have
        provider[i] = prov_ix.setdefault(k.provider, len(prov_ix))
        # a region is a provider's: two clouds that both name a region us-east-1 are not one place
        region[i] = reg_ix.setdefault(f"{k.provider}|{k.region}", len(reg_ix))
        group[i] = grp_ix.setdefault((k.provider, k.region, k.market.value), len(grp_ix))
        model[i] = MODEL_INDEX[k.gpu_model]
        gpus[i] = k.gpus_per_instance
        spot[i] = q.is_spot
        price[i] = q.usd_per_hour
        plan[i] = q.planning_usd_per_hour
        hi[i] = q.planning_usd_per_hour_p90
        cap[i] = math.inf if q.capacity_instances is None else float(q.capacity_instances)
        avail[i] = q.available and q.usd_per_hour > 0
        pi[i] = q.interruption_probability_per_hour
        age[i] = q.quote_age_s
    for s in specs:  # providers a workload names but no offer has: still indexable
        for p in s.allowed_providers or ():
            prov_ix.setdefault(p, len(prov_ix))
    W = len(specs)
    tput = np.zeros((W, len(MODELS)))
    allowed = np.ones((W, len(prov_ix)), np.bool_)
    for w, s in enumerate(specs):
        for m, t in s.gpu_throughput.items():
            tput[w, MODEL_INDEX[m]] = t
        if s.allowed_providers is not None:
            allowed[w, :] = False
            for p in s.allowed_providers:
                allowed[w, prov_ix[p]] = True
    keys = tuple(q.key for q in quotes)
    qs = tuple(quotas)
    qmask = np.zeros((len(qs), n), np.bool_)
    if qs:
        prov_names = np.array(list(prov_ix))
        reg_names = np.array([r.split("|", 1)[1] for r in reg_ix]) if reg_ix else np.zeros(0, str)
        fam = np.array([gpu_family(m) for m in MODELS])
        mnames = np.array(MODELS)
        for qi, qq in enumerate(qs):
            m_ok = (mnames == qq.gpu) | (fam == qq.gpu)
            ok = (prov_names[provider] == qq.provider) & m_ok[model] if n else np.zeros(0, np.bool_)
            if qq.region != "*" and n:
                ok &= reg_names[region] == qq.region
            qmask[qi] = ok
    offer_quotas: tuple[tuple[int, ...], ...] = (
        tuple(tuple(np.flatnonzero(qmask[:, i]).tolist()) for i in range(n)) if qs else ((),) * n)
    prm = params or EngineParams()
    ic_code = {Interconnect.ANY: 0, Interconnect.NVLINK: 1, Interconnect.INFINIBAND: 2}
    inst = Instance(
        offer_keys=tuple(q.offer for q in quotes), keys=keys, provider=provider, region=region,
        group=group, model=model, gpus=gpus, spot=spot, price=price, plan_price=plan, plan_hi=hi, capacity=cap,
        available=avail, interrupt=pi, quote_age_s=age,
        providers=tuple(prov_ix), regions=tuple(reg_ix), groups=tuple(grp_ix),
        specs=tuple(specs), ids=tuple(s.workload_id for s in specs), tput=tput,
        ref_tput=tput.max(axis=1) if W else np.zeros(0),
        min_gpus=np.array([s.min_gpus for s in specs], np.int64),
        max_gpus=np.array([s.max_gpus for s in specs], np.int64),
        budget=np.array([s.budget_usd_per_hour for s in specs], np.float64),
        spot_share=np.array([s.max_spot_share for s in specs], np.float64),
        restart_h=np.array([s.restart_overhead_h for s in specs], np.float64),
        same_region=np.array([s.same_region for s in specs], np.bool_),
        priority=np.array([s.priority for s in specs], np.int64),
        allowed=allowed, params=prm,
        place=place, egress=egress, nvlink=nvl, ib=ibf, places=tuple(place_ix),
        gang=np.array([s.topology is Topology.GANG for s in specs], np.bool_),
        replica_gpus=np.array([s.gpus_per_replica or 0 for s in specs], np.int64),
        need_ic=np.array([ic_code[s.interconnect] for s in specs], np.int64),
        share_provider=np.array([s.max_share_per_provider or 1.0 for s in specs], np.float64),
        share_region=np.array([s.max_share_per_region or 1.0 for s in specs], np.float64),
        state_gb=np.array([s.state_gb for s in specs], np.float64),
        averse=np.array([s.risk_averse for s in specs], np.bool_),
        lost_h=np.array([s.restart_overhead_h + s.state_gb * 8.0 / (max(prm.move_bandwidth_gbps, 1e-9) * 3600.0)
                         for s in specs], np.float64),
        quotas=qs, qmask=qmask, qlimit=np.array([float(q.gpus) for q in qs]), offer_quotas=offer_quotas,
    )
    if current:
        inst = inst.with_current(current)
    return inst


# --- evaluate --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    violations: tuple[str, ...]
    objective: float                       # separable objective + concentration penalty
    usd_per_hour: float                    # what the plan costs now
    per_workload: dict[str, float]         # separable objective per placed workload (incl. migration)
    concentration: float = 0.0
    placed: frozenset[str] = frozenset()

    @property
    def ok(self) -> bool:
        return not self.violations


def plan_rows(inst: Instance, plan: Mapping[str, Sequence[Assignment]]) -> dict[str, tuple[tuple[int, int], ...]]:
    idx = inst.offer_index()
    out: dict[str, tuple[tuple[int, int], ...]] = {}
    for wid, assigns in plan.items():
        rows: dict[int, int] = {}
        for a in assigns:
            i = idx.get(a.offer.key, -1)
            rows[i] = rows.get(i, 0) + a.instances
        out[wid] = tuple(sorted(rows.items()))
    return out


def evaluate(inst: Instance, plan: Mapping[str, Sequence[Assignment]],
             reserved: Mapping[str, Sequence[Assignment]] | None = None, *,
             offer_index: Mapping[str, int] | None = None, used: F64 | None = None,
             workload_index: Mapping[str, int] | None = None) -> Evaluation:
    """Check every hard constraint of `plan` (workload id -> assignments) against the instance.

    `reserved` holds assignments of workloads not in `plan` that still consume capacity (or pass
    their per-offer instance counts as `used`). Returns the violations (empty = feasible) and the
    plan's objective value (concentration counted over `plan` only). `offer_index`/`workload_index`:
    the instance's indexes, when the caller keeps them (building them is O(offers + workloads)).
    """
    v: list[str] = []
    widx = inst.workload_index() if workload_index is None else workload_index
    idx = inst.offer_index() if offer_index is None else offer_index
    used = np.zeros(inst.n_offers) if used is None else used.astype(np.float64, copy=True)
    for assigns in (reserved or {}).values():
        for a in assigns:
            i = idx.get(a.offer.key)
            if i is not None:
                used[i] += a.instances
    lam = inst.params.risk_lambda
    per_w: dict[str, float] = {}
    usd = 0.0
    grp_gpus = np.zeros(len(inst.groups))
    for wid, assigns in plan.items():
        if not assigns:
            continue
        w = widx.get(wid)
        if w is None:
            v.append(f"{wid}: unknown workload")
            continue
        g_tot = g_spot = 0
        cost = 0.0
        regions: set[int] = set()
        rows: dict[int, int] = {}
        for a in assigns:
            if a.workload_id != wid:
                v.append(f"{wid}: assignment filed under another workload ({a.workload_id})")
            o = idx.get(a.offer.key)
            if o is None:
                v.append(f"{wid}: unknown offer {a.offer.key}")
                continue
            if not isinstance(a.instances, int) or a.instances < 1:
                v.append(f"{wid}: instances must be a positive integer, got {a.instances}")
                continue
            if not inst.available[o]:
                v.append(f"{wid}: offer {a.offer.key} is not available")
            if inst.tput[w, inst.model[o]] <= 0:
                v.append(f"{wid}: GPU model {inst.offer_keys[o].gpu_model} not acceptable")
            if not inst.allowed[w, inst.provider[o]]:
                v.append(f"{wid}: provider {inst.providers[inst.provider[o]]} not allowed")
            expect = a.instances * inst.price[o]
            if abs(a.usd_per_hour - expect) > 1e-6 * max(1.0, expect):
                v.append(f"{wid}: usd_per_hour {a.usd_per_hour} != instances x price {expect}")
            rows[o] = rows.get(o, 0) + a.instances
            g = int(inst.gpus[o]) * a.instances
            g_tot += g
            g_spot += g if inst.spot[o] else 0
            cost += a.instances * float(inst.price[o])
            regions.add(int(inst.region[o]))
            used[o] += a.instances
            grp_gpus[inst.group[o]] += g
        if not rows:
            continue
        if not inst.min_gpus[w] <= g_tot <= inst.max_gpus[w]:
            v.append(f"{wid}: {g_tot} GPUs outside [{inst.min_gpus[w]}, {inst.max_gpus[w]}]")
        if cost > inst.budget[w] * (1 + 1e-9) + 1e-9:
            v.append(f"{wid}: cost ${cost:.4f}/h above budget ${inst.budget[w]:.4f}/h")
        if g_spot > inst.spot_share[w] * g_tot + 1e-9:
            v.append(f"{wid}: spot share {g_spot / g_tot:.3f} above {inst.spot_share[w]:.3f}")
        if inst.same_region[w] and len(regions) > 1:
            v.append(f"{wid}: spans {len(regions)} regions, co-location required")
        v.extend(f"{wid}: {r}" for r in _placement_violations(inst.specs[w], [(inst.offer_keys[o], n)
                                                                              for o, n in sorted(rows.items())]))
        moved = bool(inst.current.get(wid)) and tuple(sorted(rows.items())) != inst.current.get(wid)
        moved = moved or wid in inst.stale_plan
        obj = inst.rows_cost(w, list(rows.items()))
        if moved:
            obj += lam * (inst.migration_per_gpu(w) * g_tot + amortised_move(inst, w, tuple(sorted(rows.items()))))
        per_w[wid] = obj
        usd += cost
    over = used > inst.capacity + 1e-9
    for oi in np.nonzero(over)[0].tolist():
        v.append(f"offer {inst.keys[oi]}: {int(used[oi])} instances above capacity {int(inst.capacity[oi])}")
    if inst.quotas:   # portfolio-wide: every workload's GPUs (plan, reserved and `used`) on the offers a quota covers
        held = [(inst.offer_keys[o], round(float(used[o]))) for o in np.flatnonzero(used > 0).tolist()]
        v.extend(f"quota {x}" for x in quota_violations(inst.quotas, held))
    conc = concentration_penalty(inst, grp_gpus)
    return Evaluation(tuple(v), sum(per_w.values()) + conc, usd, per_w, conc, frozenset(per_w))


def _placement_violations(spec: WorkloadSpec, rows: Sequence[tuple[OfferKey, int]]) -> list[str]:
    """The placement rules, checked on the domain objects with schemas.placement (not on the instance's arrays
    the engines read: an independent check of solvers/placement.py)."""
    v: list[str] = []
    if spec.topology is Topology.GANG:
        places = {place_of(k) for k, _ in rows}
        if len(places) > 1:
            v.append(f"gang spans {len(places)} places (provider/region/zone/instance type), one required")
        n_tot = sum(n for _, n in rows)
        v.extend(f"interconnect {spec.interconnect.value} not met by {n_tot} x {k.key}"
                 for k, _ in rows if not satisfies(k, spec.interconnect, n_tot))
        return v
    for k, _ in rows:
        if not satisfies(k, spec.interconnect, 1):
            v.append(f"interconnect {spec.interconnect.value} not met by {k.key}")
        if spec.gpus_per_replica is not None and k.gpus_per_instance != spec.gpus_per_replica:
            v.append(f"replica size {k.gpus_per_instance} GPUs on {k.key}, {spec.gpus_per_replica} required")
    total = sum(k.gpus_per_instance * n for k, n in rows)
    for name, share, dom in (("provider", spec.max_share_per_provider, lambda k: k.provider),
                             ("region", spec.max_share_per_region, lambda k: (k.provider, k.region))):
        if share is None or not total:
            continue
        by: dict[object, int] = {}
        for k, n in rows:
            by[dom(k)] = by.get(dom(k), 0) + k.gpus_per_instance * n
        top = max(by.values())
        if top > share * total + 1e-9:
            v.append(f"spread: {top / total:.3f} of the GPUs on one {name}, at most {share:.3f}")
    return v


def concentration_penalty(inst: Instance, grp_gpus: F64) -> float:
    p = inst.params
    total = float(grp_gpus.sum())
    excess = np.maximum(0.0, grp_gpus - p.concentration_cap * total)
    return float(p.risk_lambda * p.concentration_penalty_usd_per_gpu_hour * excess.sum())
