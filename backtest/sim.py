"""The back-tester: recorded market events, in event time, through the live decision chain and baselines.

One pass over the events. The market side is shared by every strategy and is the live pipeline's own
code: `streams.core.state.apply_event` (state + materiality), `streams.core.forecast.Forecaster.observe`, and
the decision stage of `streams.runtime.app` (`streams.core.state.engine_view` ->
`engine.upsert_offers(quote_from_state(...))` -> `streams.core.decide.affected_workloads` ->
`streams.core.decide.resolve`). What the live pipeline coalesces over its batch windows and solve time, the
back-tester coalesces per event timestamp (one decision batch per distinct time).

Accounting is piecewise constant in event time: between two timestamps every allocation costs
instances x the offer's price in force (the latest recorded price, not the price the engine saw) and
delivers its GPUs, except during a restart: after an interruption or a migration the whole workload
pays but delivers nothing for `restart_overhead_h` (from the moment it is placed again). A spot
allocation is interrupted when its offer loses capacity or is preempted (see backtest/traces.py).
On-demand allocations are never interrupted (a listing disappearing stops new launches, not running
machines). A budget violation is a span of time where a workload's placement costs more than its
`budget_usd_per_hour` at the prices in force.

Placements in force: after every strategy's step at a timestamp (a decision instant), the ledger records
each changed workload's holdings (its placement timeline) and, from them, how far the workload is spread at
once (providers, regions, GPU models, places in the sense of `schemas.placement.place_of`) and whether the
whole portfolio's holdings exceed one of the portfolio's `quotas` (`schemas.placement.quota_violations`).
These are measured on what each strategy holds, never on what it claims. Every strategy gets the same
quotas: the engine through `set_quotas`, the baselines through `greedy_plan` with a running usage across
the portfolio's workloads.

Budget guard (ours only, on by default): the engine enforces budgets at the prices it has seen, and a
price move below the 2 % materiality threshold is not sent to it. When such a move would put a placed
workload over its budget, the back-tester sends the held offers' fresh view through the same
upsert/affected/resolve chain. Since the live pipeline treats any price move on a held offer as material
(`streams.core.state.apply_event(held=...)`, used here too), the guard is a safety net that should not fire.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backtest import traces as tr
from backtest.evaluation import ForecastEvaluation, NaiveForecast, dataset_spans
from backtest.ledger import BASELINES, OURS, Ledger
from backtest.oracle import Oracle
from backtest.portfolio import Portfolio
from backtest.strategies import Batch, EngineStrategy, GreedyRuleStrategy, Strategy
from connectors.replay import DATASETS, replay_events
from schemas.events import (
    CapacityObserved,
    InterruptionKind,
    InterruptionObserved,
    PriceObserved,
    WorkloadSpec,
)
from schemas.market import AllocationEngine, OfferQuote
from schemas.offers import KNOWN_PROVIDERS, Market, OfferKey
from solvers import EngineParams
from streams.core import state
from streams.core.forecast import Forecaster

MarketEvent = PriceObserved | CapacityObserved | InterruptionObserved



@dataclass
class BacktestConfig:
    data_dir: Path
    start: datetime | None = None
    end: datetime | None = None
    datasets: list[str] | None = None          # None = every replay dataset except trace ones (overlaid here)
    traces: bool = True
    trace_unavailable_value: int = 1
    trace_resolution_s: float = 0.0           # 0: the traces at their recorded ticks (backtest/traces.py)
    budget_guard: bool = True
    price_threshold: float = state.PRICE_MOVE_THRESHOLD
    engine: str = "portfolio"
    strategies: tuple[str, ...] = (OURS, *BASELINES)
    progress: bool = False
    series_points: int = 400
    naive_forecasts: bool = False              # the engine and baselines plan on naive forecasts (evaluation.py)
    forecast_horizons_s: tuple[int, ...] = (3600, 86_400)   # judged by the forecast evaluation
    forecast_tick_s: float = 3600.0
    forecast_warmup_days: float = 7.0
    forecast_refresh_s: float = 3600.0     # Forecaster.refresh at every such whole step of event time (0: never)



@dataclass
class Result:
    config: BacktestConfig
    portfolio: Portfolio
    start: datetime
    end: datetime
    ledgers: dict[str, Ledger]
    requested_gpu_h: float
    forecast: dict[str, Any]
    trace_mapping: dict[str, str]
    n_events: int
    n_trace_events: int
    n_batches: int
    runtime_s: float
    engine_stats: dict[str, Any]
    oracle: dict[str, dict[str, float | int]] = field(default_factory=dict)   # workload -> hindsight bound
    forecast_evaluation: dict[str, Any] = field(default_factory=dict)   # backtest/evaluation.py
    price_sources: dict[str, Any] = field(default_factory=dict)


class Simulation:
    def __init__(self, cfg: BacktestConfig, portfolio: Portfolio,
                 engine_factory: Callable[[], AllocationEngine] | None = None,
                 events: Sequence[MarketEvent] | None = None, traces: list[tr.Trace] | None = None) -> None:
        """`events` / `traces` replace the data folder's replay / spot traces (tests, synthetic markets)."""
        self.cfg = cfg
        self._events = events
        self._traces = traces
        self.portfolio = portfolio
        self.states: dict[str, dict[str, Any]] = {}
        self.forecaster = Forecaster()
        self.offers: dict[str, OfferKey] = {}
        self._quotes: dict[str, OfferQuote] = {}
        self._dirty: set[str] = set()
        self.dead: set[str] = set()   # spot offers without capacity now
        self.engine_factory = engine_factory
        self.evaluation: ForecastEvaluation | None = None

    def forecast_for(self, k: str) -> Any:
        """The forecast strategies plan on: the forecaster's latest, or with `naive_forecasts` the naive one
        (price = last value, risk = the group's base rate as the forecast evaluation knows it now)."""
        if not self.cfg.naive_forecasts:
            return self.forecaster.latest.get(k)
        p = self.states.get(k, {}).get("usd_per_hour")
        if p is None:
            return None
        base = self.evaluation.base_rate(k) if self.evaluation is not None else 0.0
        return NaiveForecast({3600: float(p)}, float(p), base)

    def quotes(self) -> list[OfferQuote]:
        """Current quotes at the prices in force (for the baselines; risk = state + forecast)."""
        for k in self._dirty:
            s = self.states[k]
            if "usd_per_hour" not in s:
                continue
            fc = self.forecast_for(k)
            p = float(s.get("interruption_p", 0.0))
            if fc is not None:
                p = max(p, fc.interruption_probability_next_hour)
            self._quotes[k] = OfferQuote(offer=self.offers[k], usd_per_hour=float(s["usd_per_hour"]),
                                         available=bool(s.get("available", True)),
                                         capacity_instances=s.get("capacity_instances"),
                                         interruption_probability_per_hour=p)
        self._dirty.clear()
        return [self._quotes[k] for k in sorted(self._quotes)]

    def _refresh(self, t: float, ev: ForecastEvaluation, sent: dict[str, dict[str, Any]],
                 pending: dict[str, dict[str, Any]], reasons: list[str], triggers: list[str],
                 spent: dict[str, float]) -> None:
        """`Forecaster.refresh` at event time `t`: the refreshed forecasts are published (the evaluation's
        tick at `t` is scored at the timeline's next step, with them), the baselines' quotes take their risk,
        and the engine gets the views that moved materially (`state.forecast_moved`), as the market stage
        forwards them."""
        tf = time.perf_counter()
        refreshed = self.forecaster.refresh(t, self.cfg.forecast_refresh_s)
        spent["forecast_s"] += time.perf_counter() - tf
        for fc in refreshed:
            k = fc.offer_key
            ev.published(k, fc)
            if "usd_per_hour" not in self.states.get(k, {}):
                continue
            self._dirty.add(k)
            view = state.engine_view(self.states[k], self.forecast_for(k))
            if state.forecast_moved(sent.get(k), view, self.cfg.price_threshold):
                pending[k] = sent[k] = view
                reasons.append(f"{state.FORECAST_REFRESHED} on {k}")
                triggers.append("")

    def _market_events(self) -> tuple[list[MarketEvent], dict[str, OfferKey]]:
        names = self.cfg.datasets
        if names is None:  # trace datasets replay at their recorded dates; the overlay maps them instead
            names = [n for n in DATASETS if "trace" not in n]
        src: Iterable[MarketEvent] = (replay_events(self.cfg.data_dir, names, end=self.cfg.end)
                                      if self._events is None else
                                      sorted(self._events, key=lambda e: (state.event_t(e), e.event_id)))
        evs = [e for e in src if self.portfolio.in_market(e.offer.provider, e.offer.region)
               and (self.cfg.end is None or state.event_t(e) < self.cfg.end.timestamp())]
        return evs, {e.offer.key: e.offer for e in evs}

    def run(self) -> Result:
        t_run, c_run = time.perf_counter(), time.process_time()
        cfg, pf = self.cfg, self.portfolio
        events, offers = self._market_events()
        if not events:
            raise ValueError(f"no market events under {cfg.data_dir} for this portfolio's markets")
        start = cfg.start or datetime.fromtimestamp(state.event_t(events[0]), UTC)
        end = cfg.end or datetime.fromtimestamp(state.event_t(events[-1]) + 1, UTC)
        if end <= start:
            raise ValueError(f"empty window {start} .. {end}")
        t_start, t_end = start.timestamp(), end.timestamp()
        specs = {w.spec.workload_id: w.spec for w in pf.workloads}
        # trace overlay onto the spot offers any workload could use
        usable = [o for o in offers.values() if o.market is Market.SPOT and any(
            o.gpu_model in s.gpu_throughput and s.max_spot_share > 0
            and (s.allowed_providers is None or o.provider in s.allowed_providers) for s in specs.values())]
        trace_mapping: dict[str, str] = {}
        overlay: Iterator[CapacityObserved | InterruptionObserved] = iter(())
        trace_dir = cfg.data_dir / "spot-traces"
        traces = self._traces
        if traces is None and cfg.traces and trace_dir.is_dir():
            traces = tr.load_traces(trace_dir, cfg.trace_unavailable_value)
        if cfg.traces and traces:
            overlay, trace_mapping = tr.overlay_events(usable, traces, start, end, cfg.trace_resolution_s)
        ev = self.evaluation = ForecastEvaluation(
            cfg.forecast_horizons_s, cfg.forecast_tick_s, start.timestamp(), cfg.forecast_warmup_days * 86400,
            dataset_spans(events, state.event_t), trace_mapping)
        # workload start / end, as (t, order, kind, wid)
        sched: list[tuple[float, int, str, str]] = []
        for w in pf.workloads:
            ws, we = w.window(start, end)
            if we > ws:
                sched.append((ws.timestamp(), 0, "start", w.spec.workload_id))
                sched.append((we.timestamp(), 1, "end", w.spec.workload_id))
        sched.sort()
        merged = heapq.merge(((state.event_t(e), 0, i, e) for i, e in enumerate(events)),
                             ((state.event_t(e), 1, i, e) for i, e in enumerate(overlay)),
                             key=lambda x: (x[0], x[1], x[2]))

        gang = {w.spec.workload_id: w.restart_scope == "workload" for w in pf.workloads}
        # moves are charged at the transfer rate the engine plans with (the portfolio's engine settings)
        bw = float(pf.engine.get("move_bandwidth_gbps", EngineParams().move_bandwidth_gbps))
        ledgers = {n: Ledger(n, specs, dict(gang), pf.quotas, move_bandwidth_gbps=bw) for n in cfg.strategies}
        strategies: list[Strategy] = []
        ours: EngineStrategy | None = None
        for n in cfg.strategies:
            if n == OURS:
                factory = self.engine_factory or _engine(cfg.engine, pf)
                ours = EngineStrategy(ledgers[n], factory(), pf.quotas)
                strategies.append(ours)
            elif n in BASELINES:
                strategies.append(GreedyRuleStrategy(ledgers[n], n))
            else:
                raise ValueError(f"unknown strategy {n!r}; known: {[OURS, *BASELINES]}")

        oracle = Oracle()   # the hindsight lower bound (backtest/oracle.py), fed the same market
        active: set[str] = set()
        requested = 0.0
        t_prev = t_start
        pending: dict[str, dict[str, Any]] = {}
        pending_moved: set[str] = set()    # offers whose price changed at all (the baselines' own rules)
        pending_reasons: list[str] = []
        pending_triggers: list[str] = []
        sent: dict[str, dict[str, Any]] = {}   # offer key -> the engine view last sent
        step_s = cfg.forecast_refresh_s
        next_refresh = math.floor(state.event_t(events[0]) / step_s + 1) * step_s if step_s else math.inf
        n_events = n_trace = n_batches = 0
        si = 0
        series_every = (t_end - t_start) / max(1, cfg.series_points)
        next_series = t_start
        progress = _Progress(cfg.progress, t_start, t_end)
        spent = {"forecast_s": 0.0, "ours_s": 0.0, "baselines_s": 0.0, "oracle_s": 0.0, "evaluation_s": 0.0}

        def batches() -> Iterator[tuple[float, list[MarketEvent]]]:
            cur_t: float | None = None
            cur: list[MarketEvent] = []
            for t, _src, _, e in merged:
                if t >= t_end:
                    break
                if cur_t is not None and t != cur_t:
                    yield cur_t, cur
                    cur = []
                cur_t = t
                cur.append(e)
            if cur_t is not None:
                yield cur_t, cur

        def timeline() -> Iterator[tuple[float, list[MarketEvent]]]:
            """Market batches merged with workload start/end times (and the window start)."""
            refresh_marks = ([next_refresh + i * step_s for i in range(math.ceil((t_end - next_refresh) / step_s))]
                             if step_s and t_end > next_refresh else [])
            marks = sorted({t_start, *(x[0] for x in sched), *refresh_marks})
            mi = 0
            for t, evs in batches():
                while mi < len(marks) and marks[mi] < t:
                    if marks[mi] < t_end:
                        yield marks[mi], []
                    mi += 1
                if mi < len(marks) and marks[mi] == t:
                    mi += 1
                yield t, evs
            while mi < len(marks):
                if marks[mi] < t_end:
                    yield marks[mi], []
                mi += 1

        for t, evs in timeline():
            # 1. accrue the interval that just ended, at the prices in force during it
            if t > t_prev and t >= t_start:
                a0 = max(t_prev, t_start)
                for led in ledgers.values():
                    led.accrue(a0, t, self.states, active)
                for wid in active:
                    requested += specs[wid].min_gpus * (t - a0) / 3600
                if t >= next_series:
                    for led in ledgers.values():
                        led.series.append((t, led.cost))
                    next_series = t + series_every
            if t >= t_start:
                t_prev = t
            # 2. market events: the live track_offers chain
            te = time.perf_counter()
            ev.advance(t)   # the forecast evaluation's ticks before t see the state in force now
            spent["evaluation_s"] += time.perf_counter() - te
            lost: set[str] = set()
            touched: dict[str, None] = {}      # offers whose state changed now (in order)
            views: dict[str, None] = {}        # ... with a material change: their engine view is sent
            held = ours.held_offers() if ours is not None else set()
            for e in evs:
                n_events += 1
                if e.source.startswith("backtest:"):
                    n_trace += 1
                if e.offer.provider not in KNOWN_PROVIDERS:
                    continue  # streams.core.validate rejects these
                k = e.offer.key
                old = self.states.get(k)
                # `held`: as live, any price move on an offer our plan holds is material
                new, reason = state.apply_event(old or {}, e, cfg.price_threshold, held=k in held)
                if new is old:
                    continue
                self.states[k] = new
                self.offers.setdefault(k, e.offer)
                if isinstance(e, PriceObserved) and new.get("usd_per_hour") != (old or {}).get("usd_per_hour"):
                    pending_moved.add(k)
                self._dirty.add(k)
                if e.offer.market is Market.SPOT:
                    if new.get("available", True):
                        self.dead.discard(k)
                    else:
                        self.dead.add(k)
                tf = time.perf_counter()
                self.forecaster.observe(k, new, state.event_t(e))
                spent["forecast_s"] += time.perf_counter() - tf
                ev.observe(e, old or {}, new, state.event_t(e))
                touched[k] = None
                if e.offer.market is Market.SPOT and (
                        (isinstance(e, CapacityObserved) and not e.available and (old or {}).get("available", True))
                        or (isinstance(e, InterruptionObserved) and e.kind is InterruptionKind.PREEMPTED)):
                    lost.add(k)
                if reason and "usd_per_hour" in new:
                    views[k] = None
                    pending_reasons.append(f"{reason} on {k}")
                    pending_triggers.append(e.event_id)
            if touched:
                # a forecaster that predicts per batch (a `flush()`, as the market stage calls per consumed
                # batch) publishes now; then the views carry the forecasts in force after this timestamp
                flush = getattr(self.forecaster, "flush", None)
                if flush is not None:
                    tf = time.perf_counter()
                    flush()
                    spent["forecast_s"] += time.perf_counter() - tf
                for k in touched:
                    ev.published(k, self.forecaster.latest.get(k))
                for k in views:
                    pending[k] = sent[k] = state.engine_view(self.states[k], self.forecast_for(k))
                ev.promotions(self.forecaster.drain_promotions())
            # 2b. forecasts refreshed at each whole step of event time (a timeline mark), once its events are
            # applied, as the market stage does (streams.runtime.market)
            if t >= next_refresh:
                self._refresh(t, ev, sent, pending, pending_reasons, pending_triggers, spent)
                next_refresh = (math.floor(t / step_s) + 1) * step_s
            if t < t_start:
                continue  # warm-up: state and forecasts only; the changes reach the engine at the start
            # 3. workloads starting / ending now
            started: list[WorkloadSpec] = []
            ended: list[str] = []
            while si < len(sched) and sched[si][0] <= t:
                _, _, kind, wid = sched[si]
                si += 1
                if kind == "start":
                    active.add(wid)
                    started.append(specs[wid])
                else:
                    active.discard(wid)
                    ended.append(wid)
            changed = set(self._dirty)
            self.quotes()
            to = time.perf_counter()
            oracle.observe(t, self._quotes, [specs[w] for w in sorted(active)], changed)
            spent["oracle_s"] += time.perf_counter() - to
            b = Batch(t, pending, pending_reasons, pending_triggers, lost, started, ended,
                      frozenset(pending_moved))
            pending, pending_reasons, pending_triggers = {}, [], []
            pending_moved = set()
            n_batches += 1
            dead = self.dead
            for strat in strategies:
                ts = time.perf_counter()
                led = strat.ledger
                if lost:
                    led.interrupt(lost, t)
                for wid, assigns in strat.step(self, b).items():
                    if wid in ended:
                        led.remove(wid)
                    else:
                        led.set_plan(wid, assigns, t, dead)
                if strat is ours and cfg.budget_guard and active:
                    for wid, assigns in ours.guard(self, t).items():
                        led.set_plan(wid, assigns, t, dead)
                led.settle(t)
                spent["ours_s" if strat is ours else "baselines_s"] += time.perf_counter() - ts
            progress.update(t)
        # close the last interval
        if t_end > t_prev:
            for led in ledgers.values():
                led.accrue(t_prev, t_end, self.states, active)
            for wid in active:
                requested += specs[wid].min_gpus * (t_end - t_prev) / 3600
        for led in ledgers.values():
            led.series.append((t_end, led.cost))
        ev.advance(t_end)
        ev.promotions(self.forecaster.drain_promotions())
        progress.close()
        estats: dict[str, Any] = {}
        if ours is not None:
            estats = {"engine": ours.engine.name, "solves": ours.solves, "decisions": ours.decisions,
                      "budget_guard_fired": ours.guard_fired, "solve_ms_total": round(ours.solve_ms, 1)}
        estats["time_split_s"] = {k: round(v, 2) for k, v in spent.items()}
        estats["cpu_s"] = round(time.process_time() - c_run, 2)  # robust to other load on shared cores
        bound = oracle.finish(t_end)
        return Result(cfg, pf, start, end, ledgers, requested, self.forecaster.summary(), trace_mapping,
                      n_events, n_trace, n_batches, time.perf_counter() - t_run, estats, bound,
                      ev.report(), ev.price_sources())


def _engine(name: str, pf: Portfolio) -> Callable[[], AllocationEngine]:
    from solvers.registry import engine_factory

    f = engine_factory(name)
    if name == "portfolio":
        kw = {"risk_lambda": pf.risk_lambda, **pf.engine}
        return lambda: f(**kw)  # type: ignore[call-arg]
    return f


class _Progress:
    def __init__(self, enabled: bool, t0: float, t1: float) -> None:
        self.p: Any = None
        self.t0 = t0
        if enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.p = Progress(TextColumn("backtest {task.fields[at]}"), BarColumn(),
                              TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), transient=False)
            self.task = self.p.add_task("replay", total=max(1.0, t1 - t0), at="")
            self.p.start()
            self.last = 0.0

    def update(self, t: float) -> None:
        if self.p is None or t < self.t0:
            return
        now = time.monotonic()
        if now - self.last < 0.1:
            return
        self.last = now
        self.p.update(self.task, completed=t - self.t0, at=datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d"))

    def close(self) -> None:
        if self.p is not None:
            self.p.update(self.task, completed=self.p.tasks[0].total)
            self.p.stop()


def run_backtest(cfg: BacktestConfig, portfolio: Portfolio,
                 engine_factory: Callable[[], AllocationEngine] | None = None,
                 events: Sequence[MarketEvent] | None = None, traces: list[tr.Trace] | None = None) -> Result:
    return Simulation(cfg, portfolio, engine_factory, events, traces).run()
