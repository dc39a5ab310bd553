"""The forecasts judged in the back-test, per offer group, against naive, on outcomes not yet seen; and which
dataset priced each offer.

Independent of the forecaster's internals: it reads only what the forecaster publishes
(`Forecaster.latest[key]`: a `streams.core.forecast_events.Forecast`) and its `ModelPromoted` events, and keeps its own
record of what happened (prices in force, capacity losses and interruptions, from the offer states that
`streams.core.state.apply_event` produces).

Tick rule. At every tick T of event time (`tick_s`, hourly, aligned to the epoch), with every event of time
<= T applied, each offer with a price and a published forecast is recorded:
  * price, per horizon h: the published forecast as the engine uses it (`streams.core.state.engine_view`: the
    forecast's predicted move, forecast / price when it was made, applied to the price in force at T), and
    naive = the price in force at T (last value);
  * risk, P(capacity lost or interrupted in (T, T + 1 h]): the published probability, and naive = the
    group's base rate known at T: the Jeffreys-smoothed share, (events + 0.5) / (ticks + 1), of the group's
    (offer, hour) ticks of the last 7 days resolved by T (offer available at the tick) whose next hour held
    a capacity loss or an interruption; 0 before any is resolved. A trailing week rather than all history:
    the spot-trace overlay starts at the window start, and an all-history rate (years of quiet warm-up)
    would make a straw-man naive.
At T + h the record is scored against the price in force at T + h (absolute error, USD per instance-hour)
and the risk label (log-loss with p clipped to [1e-6, 1 - 1e-6], Brier), then forgotten. The published
p10 and p90 are applied the same way, and the shares of outcomes strictly below p10 and above p90 are
reported (`below_p10`, `above_p90`: at most about 0.1 each for calibrated quantiles; less where the price
often stays put, as the outcome is then the price itself). Coverage alone rewards a wide band, so the band
is also scored by the quantile (pinball) loss of its two ends, rho_0.1(actual - p10) + rho_0.9(actual - p90)
with rho_tau(u) = u * (tau - [u < 0]) (`quantile_loss_model`), against the band of no change
(p10 = p90 = the price in force), whose loss is the naive absolute error (`quantile_loss_naive`); their
`quantile_loss_ratio` < 1 where the band says more than "no change".
The forecast in force is judged at every tick until the offer's next one: a forecast made at t0 for t0 + h
keeps steering the engine (its predicted move applied to the current price) until it is replaced. The
`fresh` cells score only the forecasts made within the tick before T (T - made_t < tick_s), which is
close to how the forecaster scores itself (each forecast once, for its own made time + h).

Scored only when (i) T >= the window start and T >= the group's first price + `warmup_s`: the judged
period is one the models had not been fitted on (they learn online, from an outcome only once its horizon
has passed, so every scored outcome was unseen when it was forecast, and the first week of a group is theirs
to learn from); (ii) the outcome was observed: T + h <= the last event of the dataset whose price is in
force at T (a dataset that has ended says nothing about later prices), or, for risk, the offer is covered
by the spot-trace overlay; (iii) for risk, the offer has capacity at T. Groups are (provider, GPU model,
market), as the forecaster's.

Price sources: every price applied to an offer's state is attributed to its dataset (the `replay:<name>`
prefix of `PriceObserved.source`); `price_sources` counts, per dataset, the offers it priced while the
window ran (including the price in force at its start). Where datasets overlap on an offer, event-time
order decides: the latest quote is in force whichever dataset sent it (`replay_events` merges by time, then
dataset name, then event id; `streams.core.state.apply_event` ignores a quote older than the one in force).

>>> _dataset("replay:aws-spot-daily open (USD/instance-h)"), _dataset("test")
('aws-spot-daily', 'test')
"""

from __future__ import annotations

import html
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas.events import CapacityObserved, InterruptionObserved, ModelPromoted, PriceObserved
from schemas.offers import OfferKey

MarketEvent = PriceObserved | CapacityObserved | InterruptionObserved
RISK_H = 3600
BASE_RATE_WINDOW_S = 7 * 86_400
BINS: tuple[float, ...] = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)   # reliability table edges
HYPERSCALERS = frozenset({"aws", "gcp", "azure"})
EPS = 1e-6


def _dataset(source: str) -> str:
    return source.split(" ", 1)[0].removeprefix("replay:")


def group_of(o: OfferKey) -> str:
    return f"{o.provider}|{o.gpu_model}|{o.market.value}"


def dataset_spans(events: Iterable[MarketEvent], event_t: Any) -> dict[str, tuple[float, float]]:
    """(first, last) event time per dataset."""
    out: dict[str, tuple[float, float]] = {}
    for e in events:
        d, t = _dataset(e.source), event_t(e)
        lo, hi = out.get(d, (t, t))
        out[d] = (min(lo, t), max(hi, t))
    return out


@dataclass(frozen=True, slots=True)
class NaiveForecast:
    """What `--naive-forecasts` gives the engine in place of a published forecast (the fields
    `streams.core.state.engine_view` reads): the price stays the last value, the risk is the group's base rate."""

    usd_per_hour: dict[int, float]
    p0_usd_per_hour: float
    interruption_probability_next_hour: float


@dataclass(slots=True)
class _Snap:
    price: np.ndarray
    pred: dict[int, np.ndarray]
    lo: dict[int, np.ndarray]       # the published p10 / p90 as the engine uses them (per horizon)
    hi: dict[int, np.ndarray]
    risk: np.ndarray
    base: np.ndarray
    bad: np.ndarray
    avail: np.ndarray
    live: np.ndarray
    trace: np.ndarray
    group: np.ndarray
    ds: np.ndarray
    scored: np.ndarray
    fresh: np.ndarray


class ForecastEvaluation:
    """Fed the offer states as the simulation applies them (`observe`), time (`advance`) and the forecaster's
    promotions (`promotions`); `report()` at the end."""

    def __init__(self, horizons: Sequence[int], tick_s: float, score_from_t: float, warmup_s: float,
                 spans: Mapping[str, tuple[float, float]], trace_offers: Iterable[str] = ()) -> None:
        if tick_s <= 0 or any(h % tick_s for h in (*horizons, RISK_H)):
            raise ValueError(f"every horizon and {RISK_H} s must be a multiple of the tick ({tick_s} s)")
        self.horizons = tuple(sorted(horizons))
        self.tick = float(tick_s)
        self.score_from = score_from_t
        self.warmup = warmup_s
        self.datasets = sorted(spans)
        self.ds_index = {d: i for i, d in enumerate(self.datasets)}
        self.ds_end = np.array([spans[d][1] for d in self.datasets] + [-math.inf])   # [-1]: no dataset
        self.spans = dict(spans)
        self.trace_offers = set(trace_offers)
        # per offer (index)
        self.index: dict[str, int] = {}
        self.keys: list[str] = []
        self.gidx: list[int] = []
        self.price: list[float] = []
        self.ratio: dict[int, list[float]] = {h: [] for h in self.horizons}
        self.lo_ratio: dict[int, list[float]] = {h: [] for h in self.horizons}   # p10 / price when made
        self.hi_ratio: dict[int, list[float]] = {h: [] for h in self.horizons}   # p90 / price when made
        self.risk: list[float] = []
        self.made: list[float] = []
        self.bad: list[int] = []
        self.avail: list[bool] = []
        self.ds: list[int] = []
        self.traced: list[bool] = []
        # per group (index)
        self.groups: list[str] = []
        self.g_index: dict[str, int] = {}
        self.g_first: list[float] = []
        self.acc: dict[str, np.ndarray] = {}
        self.snaps: dict[float, _Snap] = {}
        self.base_hist: deque[tuple[np.ndarray, np.ndarray]] = deque()   # per resolved tick: (n, events) per group
        self.next_tick: float | None = None
        self.champion: dict[tuple[str, str], str] = {}
        self.n_promotions: dict[str, int] = {}
        # price sources
        self.in_force: dict[str, str] = {}
        self.window_sources: dict[str, set[str]] = {}
        self.window_prices: dict[str, int] = {}
        self.started = False

    # --- input ----------------------------------------------------------------------------------------

    def _offer(self, o: OfferKey) -> int:
        k = o.key
        i = self.index.get(k)
        if i is None:
            g = group_of(o)
            gi = self.g_index.get(g)
            if gi is None:
                gi = self.g_index[g] = len(self.groups)
                self.groups.append(g)
                self.g_first.append(math.inf)
            i = self.index[k] = len(self.keys)
            self.keys.append(k)
            self.gidx.append(gi)
            self.price.append(math.nan)
            for h in self.horizons:
                self.ratio[h].append(math.nan)
                self.lo_ratio[h].append(math.nan)
                self.hi_ratio[h].append(math.nan)
            self.risk.append(math.nan)
            self.made.append(math.nan)
            self.bad.append(0)
            self.avail.append(True)
            self.ds.append(-1)
            self.traced.append(k in self.trace_offers)
        return i

    def observe(self, e: MarketEvent, old: Mapping[str, Any], new: Mapping[str, Any], t: float) -> None:
        """The offer's state after `e` was applied (`old` before)."""
        i = self._offer(e.offer)
        if "usd_per_hour" in new:
            self.price[i] = float(new["usd_per_hour"])
            gi = self.gidx[i]
            self.g_first[gi] = min(self.g_first[gi], t)
        self.avail[i] = bool(new.get("available", True))
        nb, ob = new.get("bad_t") or [], old.get("bad_t") or []
        if nb and (len(nb) != len(ob) or nb[-1] != ob[-1]):
            self.bad[i] += 1
        if isinstance(e, PriceObserved):
            d = _dataset(e.source)
            self.ds[i] = self.ds_index.get(d, -1)
            self.in_force[e.offer.key] = d
            if self.started:
                self.window_sources.setdefault(e.offer.key, set()).add(d)
                self.window_prices[d] = self.window_prices.get(d, 0) + 1

    def published(self, offer_key: str, forecast: Any) -> None:
        """The offer's forecast in force now (a `streams.core.forecast_events.Forecast`, or None)."""
        i = self.index.get(offer_key)
        if i is not None and forecast is not None:
            p0 = forecast.p0_usd_per_hour
            lo, hi = getattr(forecast, "p10_usd_per_hour", {}), getattr(forecast, "p90_usd_per_hour", {})
            for h in self.horizons:
                f, f10, f90 = forecast.usd_per_hour.get(h), lo.get(h), hi.get(h)
                self.ratio[h][i] = f / p0 if (f is not None and p0) else math.nan
                self.lo_ratio[h][i] = f10 / p0 if (f10 is not None and p0) else math.nan
                self.hi_ratio[h][i] = f90 / p0 if (f90 is not None and p0) else math.nan
            self.risk[i] = float(forecast.interruption_probability_next_hour)
            self.made[i] = float(getattr(forecast, "made_t", math.nan))

    def promotions(self, promoted: Iterable[ModelPromoted]) -> None:
        for p in promoted:
            self.champion[(p.group, p.target)] = p.champion
            self.n_promotions[p.group] = self.n_promotions.get(p.group, 0) + 1

    def base_rate(self, offer_key: str) -> float:
        """The offer's group base rate of a capacity loss or interruption within the next hour, known now."""
        i = self.index.get(offer_key)
        return 0.0 if i is None else float(self._base()[self.gidx[i]])

    def _base(self) -> np.ndarray:
        G = len(self.groups)
        self._ensure(G)
        n, pos = self.acc["base_n"][:G], self.acc["base_pos"][:G]
        return np.where(n > 0, (pos + 0.5) / (n + 1.0), 0.0)

    # --- time -----------------------------------------------------------------------------------------

    def advance(self, t: float) -> None:
        """Every tick T < t: record (the state in force now is the state at T) and score what is due."""
        if self.next_tick is None:
            self.next_tick = math.ceil(t / self.tick) * self.tick
        if not self.started and t >= self.score_from:
            self.started = True
            for k, d in self.in_force.items():
                self.window_sources.setdefault(k, set()).add(d)
        if not self.keys:
            self.next_tick = max(self.next_tick, math.ceil(t / self.tick) * self.tick)
            return
        lead = self.score_from - BASE_RATE_WINDOW_S - max(self.horizons[-1], RISK_H)
        while self.next_tick < t:
            now = self.next_tick
            if now < lead:   # nothing this early is used (scores start at the window; base rates look back a week)
                self.next_tick = max(now + self.tick, min(math.ceil(lead / self.tick),
                                                        math.ceil(t / self.tick)) * self.tick)
                continue
            snap = self._snapshot(now)
            self._score(now, snap)   # resolves the hour that ended at `now`: the base rate known at `now`
            snap.base = self._base()[snap.group]
            self.snaps.pop(now - max(self.horizons[-1], RISK_H), None)
            self.next_tick = now + self.tick

    def _snapshot(self, T: float) -> _Snap:
        price = np.array(self.price)
        g = np.array(self.gidx, dtype=np.int64)
        ds = np.array(self.ds, dtype=np.int64)
        first = np.array(self.g_first)[g]
        snap = _Snap(price=price, pred={h: price * np.array(self.ratio[h]) for h in self.horizons},
                     lo={h: price * np.array(self.lo_ratio[h]) for h in self.horizons},
                     hi={h: price * np.array(self.hi_ratio[h]) for h in self.horizons},
                     risk=np.array(self.risk), base=np.zeros(len(g)), bad=np.array(self.bad, dtype=np.int64),
                     avail=np.array(self.avail, dtype=bool), live=self.ds_end[ds],
                     trace=np.array(self.traced, dtype=bool), group=g, ds=ds,
                     scored=(first + self.warmup <= T) & (self.score_from <= T),
                     fresh=(T - np.array(self.made)) < self.tick)
        self.snaps[T] = snap
        return snap

    def _ensure(self, G: int) -> None:
        D, B = len(self.datasets) + 1, len(BINS) - 1
        shapes = {**{f"{p}{m}_{h}": (G,) for h in self.horizons for m in ("n", "mae_m", "mae_n")
                     for p in ("", "fresh_")},
                  **{f"q_{m}_{h}": (G,) for h in self.horizons for m in ("n", "below", "above", "loss", "naive")},
                  **{f"ds_{m}_{h}": (D,) for h in self.horizons for m in ("n", "mae_m", "mae_n")},
                  **{k: (G,) for k in ("base_n", "base_pos", "r_n", "r_pos", "ll_m", "ll_n", "br_m", "br_n")},
                  **{f"rel_{w}_{m}": (G, B) for w in ("n", "p", "y") for m in ("m", "n")}}
        for k, shape in shapes.items():
            a = self.acc.get(k)
            if a is None or a.shape[0] < shape[0]:
                z = np.zeros((max(shape[0], 2 * (0 if a is None else a.shape[0])), *shape[1:]))
                if a is not None:
                    z[:a.shape[0]] = a
                self.acc[k] = z

    def _score(self, T: float, cur: _Snap) -> None:
        self._ensure(len(self.groups))
        acc = self.acc
        for h in self.horizons:
            s = self.snaps.get(T - h)
            if s is None:
                continue
            n = len(s.price)
            actual = cur.price[:n]
            m = s.scored & np.isfinite(s.pred[h]) & np.isfinite(actual) & (s.live >= T)
            if not m.any():
                continue
            g, ds, fr = s.group[m], s.ds[m], s.fresh[m]
            em, en = np.abs(s.pred[h][m] - actual[m]), np.abs(s.price[m] - actual[m])
            for key, idx, sel in ((f"{{}}_{h}", g, None), (f"ds_{{}}_{h}", ds, None), (f"fresh_{{}}_{h}", g, fr)):
                size = acc[key.format("n")].shape[0]
                ix, wm, wn = (idx, em, en) if sel is None else (idx[sel], em[sel], en[sel])
                acc[key.format("n")] += np.bincount(ix, minlength=size)[:size]
                acc[key.format("mae_m")] += np.bincount(ix, weights=wm, minlength=size)[:size]
                acc[key.format("mae_n")] += np.bincount(ix, weights=wn, minlength=size)[:size]
            q = np.isfinite(s.lo[h][m]) & np.isfinite(s.hi[h][m])
            if q.any():
                size, a, gq = acc[f"q_n_{h}"].shape[0], actual[m][q], g[q]
                acc[f"q_n_{h}"] += np.bincount(gq, minlength=size)[:size]
                acc[f"q_below_{h}"] += np.bincount(gq, weights=a < s.lo[h][m][q], minlength=size)[:size]
                acc[f"q_above_{h}"] += np.bincount(gq, weights=a > s.hi[h][m][q], minlength=size)[:size]
                loss = _pinball(a - s.lo[h][m][q], 0.1) + _pinball(a - s.hi[h][m][q], 0.9)
                acc[f"q_loss_{h}"] += np.bincount(gq, weights=loss, minlength=size)[:size]
                acc[f"q_naive_{h}"] += np.bincount(gq, weights=np.abs(a - s.price[m][q]), minlength=size)[:size]
        s = self.snaps.get(T - RISK_H)
        if s is None:
            return
        n = len(s.price)
        label = (cur.bad[:n] - s.bad) > 0
        ok = s.avail & np.isfinite(s.price) & (s.trace | (s.live >= T))
        G = acc["base_n"].shape[0]
        bn, bp = np.bincount(s.group[ok], minlength=G)[:G], np.bincount(s.group[ok & label], minlength=G)[:G]
        acc["base_n"] += bn
        acc["base_pos"] += bp
        self.base_hist.append((bn, bp))
        if len(self.base_hist) > BASE_RATE_WINDOW_S / self.tick:
            on, op = self.base_hist.popleft()
            acc["base_n"][:len(on)] -= on
            acc["base_pos"][:len(op)] -= op
        m = ok & s.scored & np.isfinite(s.risk)
        if not m.any():
            return
        g, y = s.group[m], label[m].astype(float)
        acc["r_n"] += np.bincount(g, minlength=G)[:G]
        acc["r_pos"] += np.bincount(g, weights=y, minlength=G)[:G]
        B = len(BINS) - 1
        for tag, p in (("m", s.risk[m]), ("n", s.base[m])):
            pc = np.clip(p, EPS, 1 - EPS)
            ll = -(y * np.log(pc) + (1 - y) * np.log(1 - pc))
            acc[f"ll_{tag}"] += np.bincount(g, weights=ll, minlength=G)[:G]
            acc[f"br_{tag}"] += np.bincount(g, weights=(p - y) ** 2, minlength=G)[:G]
            cell = g * B + np.clip(np.searchsorted(BINS, p, side="right") - 1, 0, B - 1)
            for w, wt in (("n", None), ("p", p), ("y", y)):
                acc[f"rel_{w}_{tag}"] += np.bincount(cell, weights=wt, minlength=G * B)[:G * B].reshape(G, B)

    # --- output ---------------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """`forecast_evaluation` of report.json (see the module docstring for the rule)."""
        G = len(self.groups)
        self._ensure(G)
        acc = self.acc
        hname = {h: f"{h}s" for h in self.horizons}

        def price_cell(prefix: str, i: int | slice, h: int) -> dict[str, Any]:
            n = int(acc[f"{prefix}n_{h}"][i].sum())
            if not n:
                return {"n": 0} if prefix else {"n": 0, "fresh": {"n": 0}}
            mm, mn = float(acc[f"{prefix}mae_m_{h}"][i].sum()) / n, float(acc[f"{prefix}mae_n_{h}"][i].sum()) / n
            out: dict[str, Any] = {"n": n, "mae_model": _r(mm), "mae_naive": _r(mn),
                                   "ratio": _r(mm / mn) if mn > 0 else (1.0 if mm == 0 else None)}
            if not prefix:
                out["fresh"] = price_cell("fresh_", i, h)
                nq = float(acc[f"q_n_{h}"][i].sum())
                if nq:   # shares of outcomes outside the published p10 / p90 (calibrated: at most ~0.1 each)
                    out["below_p10"] = _r(float(acc[f"q_below_{h}"][i].sum()) / nq)
                    out["above_p90"] = _r(float(acc[f"q_above_{h}"][i].sum()) / nq)
                    ql, qn = float(acc[f"q_loss_{h}"][i].sum()) / nq, float(acc[f"q_naive_{h}"][i].sum()) / nq
                    out["quantile_loss_model"], out["quantile_loss_naive"] = _r(ql), _r(qn)
                    out["quantile_loss_ratio"] = _r(ql / qn) if qn > 0 else (1.0 if ql == 0 else None)
            return out

        def risk_cell(i: int | slice) -> dict[str, Any]:
            n = int(acc["r_n"][:G][i].sum())
            if not n:
                return {"n": 0}
            llm, lln = float(acc["ll_m"][:G][i].sum()) / n, float(acc["ll_n"][:G][i].sum()) / n
            return {"n": n, "events": int(acc["r_pos"][:G][i].sum()), "logloss_model": _r(llm),
                    "logloss_base_rate": _r(lln), "logloss_ratio": _r(llm / lln) if lln > 0 else None,
                    "brier_model": _r(float(acc["br_m"][:G][i].sum()) / n),
                    "brier_base_rate": _r(float(acc["br_n"][:G][i].sum()) / n)}

        def reliability(i: int | slice, tag: str) -> list[dict[str, Any]]:
            rows = []
            cnt = acc[f"rel_n_{tag}"][:G][i]
            cnt, sp, sy = (cnt if cnt.ndim == 1 else cnt.sum(0)), acc[f"rel_p_{tag}"][:G][i], acc[f"rel_y_{tag}"][:G][i]
            sp, sy = (sp if sp.ndim == 1 else sp.sum(0)), (sy if sy.ndim == 1 else sy.sum(0))
            for b in range(len(BINS) - 1):
                if cnt[b]:
                    rows.append({"bin": f"[{BINS[b]:g}, {BINS[b + 1]:g}{']' if b == len(BINS) - 2 else ')'}",
                                 "n": int(cnt[b]), "mean_predicted": _r(float(sp[b] / cnt[b])),
                                 "observed": _r(float(sy[b] / cnt[b]))})
            return rows

        targets = [f"price_{h}s" for h in self.horizons] + ["risk_1h"]
        groups: dict[str, Any] = {}
        for gi, name in sorted(enumerate(self.groups), key=lambda x: x[1]):
            d: dict[str, Any] = {"offers": sum(1 for x in self.gidx if x == gi),
                                 "price": {hname[h]: price_cell("", gi, h) for h in self.horizons},
                                 "risk_1h": risk_cell(gi),
                                 "reliability_model": reliability(gi, "m"),
                                 "champion": {t: self.champion.get((name, t), "base-rate" if t == "risk_1h"
                                                                   else "naive") for t in targets},
                                 "promotions": self.n_promotions.get(name, 0)}
            groups[name] = d
        all_g = slice(0, G)
        overall = {"price": {hname[h]: price_cell("", all_g, h) for h in self.horizons},
                   "risk_1h": risk_cell(all_g),
                   "reliability": {"model": reliability(all_g, "m"), "base_rate": reliability(all_g, "n")}}
        by_ds = {d: {hname[h]: price_cell("ds_", j, h) for h in self.horizons}
                 for j, d in enumerate(self.datasets)}
        return {"overall": overall, "groups": groups, "by_dataset": {d: v for d, v in by_ds.items()
                                                                       if any(c["n"] for c in v.values())},
                "goals": self._goals(groups, overall),
                "dataset_spans": {d: [_iso(a), _iso(b)] for d, (a, b) in sorted(self.spans.items())},
                "tick_s": self.tick, "warmup_days": self.warmup / 86400}

    def _goals(self, groups: dict[str, Any], overall: dict[str, Any]) -> dict[str, Any]:
        worse = {f"{h}s": sorted(g for g, d in groups.items() if d["price"][f"{h}s"].get("n")
                                 and d["price"][f"{h}s"]["mae_model"] > d["price"][f"{h}s"]["mae_naive"])
                 for h in self.horizons}
        day = f"{self.horizons[-1]}s"
        neo = {g: d["price"][day].get("ratio") for g, d in groups.items()
               if g.split("|", 1)[0] not in HYPERSCALERS and d["price"][day].get("n")}
        r = overall["risk_1h"].get("logloss_ratio")
        return {"price_groups_worse_than_naive": worse,
                "price_never_worse": not any(worse.values()),
                f"neocloud_{day}_ratio": neo,
                f"neocloud_{day}_strictly_better": bool(neo) and all(v is not None and v < 1 for v in neo.values()),
                "risk_logloss_ratio": r, "risk_logloss_goal_0_9": r is not None and r <= 0.9}

    def price_sources(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for srcs in self.window_sources.values():
            for d in srcs:
                counts[d] = counts.get(d, 0) + 1
        overlap = sorted(k for k, v in self.window_sources.items() if len(v) > 1)
        return {"offers_by_dataset": dict(sorted(counts.items())),
                "price_events_in_window_by_dataset": dict(sorted(self.window_prices.items())),
                "offers_priced_by_several": len(overlap),
                "per_offer": {k: sorted(v) for k, v in sorted(self.window_sources.items())}}


def _r(x: float) -> float:
    return float(f"{x:.6g}")


def _pinball(u: Any, tau: float) -> Any:
    """The quantile (pinball) loss of the tau-quantile for outcome - quantile `u`: tau * u above it,
    (1 - tau) * -u below it.

    >>> _pinball(np.array([2.0, -2.0]), 0.1).tolist()
    [0.2, 1.8]
    """
    return u * (tau - (u < 0))


def _iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat()


# --- presentation -------------------------------------------------------------------------------------------

def headline_line(fe: Mapping[str, Any]) -> str:
    """One line: per horizon MAE model/naive over every scored group, groups worse than naive, risk scores."""
    if not fe:
        return ""
    parts = []
    worse = fe["goals"]["price_groups_worse_than_naive"]
    for h, c in fe["overall"]["price"].items():
        if c.get("n"):
            fr = c["fresh"]
            parts.append(f"{h} MAE model/naive {c['ratio'] if c['ratio'] is not None else '-'} "
                         f"(n={c['n']}, worse in {len(worse.get(h, []))}/"
                         f"{sum(1 for g in fe['groups'].values() if g['price'][h].get('n'))} groups; fresh "
                         f"{fr.get('ratio', '-')}, n={fr['n']}; below p10 {c.get('below_p10', '-')}, above p90 "
                         f"{c.get('above_p90', '-')}, p10/p90 loss / naive {c.get('quantile_loss_ratio', '-')})")
    r = fe["overall"]["risk_1h"]
    if r.get("n"):
        parts.append(f"risk log-loss {r['logloss_model']:.4f} vs base rate {r['logloss_base_rate']:.4f} "
                     f"(x{r['logloss_ratio']}), Brier {r['brier_model']:.5f} vs {r['brier_base_rate']:.5f} "
                     f"(n={r['n']}, {r['events']} events)")
    return "forecast evaluation (unseen, per offer-hour): " + ("; ".join(parts) if parts else "nothing scored")


def html_section(fe: Mapping[str, Any], sources: Mapping[str, Any]) -> str:
    """The per-group table, the overall reliability table and the price sources (compact HTML)."""
    if not fe:
        return ""
    hs = list(fe["overall"]["price"])
    head = "".join(f"<th>{html.escape(h)} n</th><th>MAE model</th><th>MAE naive</th><th>ratio</th><th>fresh</th>"
                   "<th>&lt; p10 / &gt; p90</th><th>p10/p90 loss ratio</th>" for h in hs)
    rows = []
    for g, d in fe["groups"].items():
        cells = ""
        for h in hs:
            c = d["price"][h]
            cells += ("<td>0</td><td></td><td></td><td></td><td></td><td></td><td></td>" if not c.get("n") else
                      f"<td>{c['n']}</td><td>{c['mae_model']:.5g}</td><td>{c['mae_naive']:.5g}</td>"
                      f"<td>{'-' if c['ratio'] is None else c['ratio']}</td><td>{c['fresh'].get('ratio', '-')}</td>"
                      f"<td>{c.get('below_p10', '-')} / {c.get('above_p90', '-')}</td>"
                      f"<td>{c.get('quantile_loss_ratio', '-')}</td>")
        r = d["risk_1h"]
        cells += ("<td>0</td><td></td><td></td>" if not r.get("n") else
                  f"<td>{r['n']}</td><td>{r['logloss_model']:.4f} / {r['logloss_base_rate']:.4f}</td>"
                  f"<td>{r['brier_model']:.5f} / {r['brier_base_rate']:.5f}</td>")
        champ = ", ".join(f"{k}: {v}" for k, v in d["champion"].items())
        rows.append(f"<tr><td>{html.escape(g)}</td>{cells}<td>{html.escape(champ)}</td></tr>")
    rel = "".join(
        f"<tr><td>{html.escape(w)}</td><td>{html.escape(b['bin'])}</td><td>{b['n']}</td>"
        f"<td>{b['mean_predicted']:.4f}</td><td>{b['observed']:.4f}</td></tr>"
        for w, tab in fe["overall"]["reliability"].items() for b in tab)
    src = "".join(f"<tr><td>{html.escape(d)}</td><td>{n}</td></tr>"
                  for d, n in sources.get("offers_by_dataset", {}).items())
    style = '<style>table.fe{border-collapse:collapse;font-size:11px}table.fe td,table.fe th' \
            '{border:1px solid #ddd;padding:2px 4px;text-align:right}</style>'
    return (f"{style}<p>{html.escape(headline_line(fe))}</p>"
            f'<table class="fe"><tr><th>group</th>{head}<th>risk n</th><th>log-loss model / base</th>'
            f"<th>Brier model / base</th><th>champion at the end</th></tr>{''.join(rows)}</table>"
            f'<h3>Reliability of the 1 h risk (all groups)</h3><table class="fe"><tr><th>forecast</th><th>bin</th>'
            f"<th>n</th><th>mean predicted</th><th>observed</th></tr>{rel}</table>"
            f'<h3>Price sources (offers priced while the window ran)</h3><table class="fe"><tr><th>dataset</th>'
            f"<th>offers</th></tr>{src}</table><p>{sources.get('offers_priced_by_several', 0)} offers priced by "
            "several datasets: the latest quote in event time is in force.</p>")
