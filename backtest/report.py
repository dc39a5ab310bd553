"""report.json, report.html (inline SVG, no scripts, no network) and the headline table."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backtest import evaluation
from backtest.sim import BASELINES, OURS, Ledger, Result

COLORS = {OURS: "#1b7f3b", "on_demand_home": "#888888", "launch_cheapest": "#1f5fbf",
          "greedy_spot": "#d9730d", "pco_like": "#8e44ad"}
HEADLINE_BASELINES = ("on_demand_home", "launch_cheapest", "greedy_spot")


def _pct(base: float, ours: float) -> float | None:
    return round(100.0 * (base - ours) / base, 2) if base > 0 else None


def _per_workload(r: Result, led: Ledger) -> dict[str, dict[str, Any]]:
    """Cost, delivered GPU-hours and the placement spread per workload, from the holdings in force."""
    out: dict[str, dict[str, Any]] = {}
    for w in r.portfolio.workloads:
        wid = w.spec.workload_id
        d: dict[str, Any] = {k: round(v, 2) for k, v in led.per_workload.get(wid, {}).items()}
        sp = led.spread.get(wid, {})
        d.update({"topology": w.spec.topology.value,
                  "max_providers_at_once": sp.get("providers", 0),
                  "max_regions_at_once": sp.get("regions", 0),
                  "max_gpu_models_at_once": sp.get("gpu_models", 0),
                  "max_places_at_once": sp.get("places", 0),
                  "quota_violations": led.quota_violations_by_workload.get(wid, 0)})
        out[wid] = d
    return dict(sorted(out.items()))


def _oracle(r: Result) -> dict[str, Any]:
    usd = sum(float(v["usd"]) for v in r.oracle.values())
    gpu_h = sum(float(v["gpu_hours"]) for v in r.oracle.values())
    return {"total_cost_usd": round(usd, 2), "gpu_hours_delivered": round(gpu_h, 2),
            "cost_per_delivered_gpu_hour": round(usd / gpu_h, 4) if gpu_h > 0 else None,
            "delivered_share": round(gpu_h / r.requested_gpu_h, 4) if r.requested_gpu_h > 0 else None,
            "migrations": sum(int(v["moves"]) for v in r.oracle.values()),
            "per_workload": {w: dict(v) for w, v in sorted(r.oracle.items())}}


def build_report(r: Result) -> dict[str, Any]:
    strategies: dict[str, Any] = {}
    baselines = [n for n in r.ledgers if n in BASELINES]
    for name, led in r.ledgers.items():
        per_gpu_h = led.cost / led.gpu_h if led.gpu_h > 0 else None
        per_work_h = led.cost / led.tput_h if led.tput_h > 0 else None
        strategies[name] = {
            "total_cost_usd": round(led.cost, 2),
            "gpu_hours_delivered": round(led.gpu_h, 2),
            "gpu_hours_requested": round(r.requested_gpu_h, 2),
            "throughput_hours_delivered": round(led.tput_h, 2),
            "cost_per_delivered_gpu_hour": round(per_gpu_h, 4) if per_gpu_h is not None else None,
            "cost_per_throughput_hour": round(per_work_h, 4) if per_work_h is not None else None,
            "delivered_share": round(led.gpu_h / r.requested_gpu_h, 4) if r.requested_gpu_h > 0 else None,
            "paid_gpu_hours": round(led.paid_gpu_h, 2),
            "interruptions": led.interruptions,
            "migrations": led.migrations,
            "egress_usd": round(led.egress_usd, 2),
            "launches": led.launches,
            "budget_violations": led.budget_violations,
            "budget_violation_hours": round(led.budget_violation_h, 3),
            "unplaced_workload_hours": round(led.unplaced_h, 2),
            "placements_on_lost_capacity": led.stuck,
            "allocation_share_gpu_hours": {k: round(v, 2) for k, v in sorted(led.share_gpu_h.items())},
            "per_workload": _per_workload(r, led),
            "quota_violations": led.quota_violations,
            "quota_violation_hours": round(led.quota_violation_h, 3),
        }
    for name, st in strategies.items():
        # None when either side delivered nothing (a strategy that places nothing "saves" 100 %)
        ok = {b for b in baselines if b != name and st["gpu_hours_delivered"] > 0
              and strategies[b]["gpu_hours_delivered"] > 0}
        st["savings_pct_vs"] = {b: _pct(strategies[b]["total_cost_usd"], st["total_cost_usd"]) if b in ok else None
                                for b in baselines if b != name}
        st["savings_pct_vs_per_gpu_hour"] = {
            b: _pct(strategies[b]["cost_per_delivered_gpu_hour"] or 0.0, st["cost_per_delivered_gpu_hour"] or 0.0)
            for b in ok if st["cost_per_delivered_gpu_hour"] is not None}
        st["savings_pct_vs_per_throughput_hour"] = {
            b: _pct(strategies[b]["cost_per_throughput_hour"], st["cost_per_throughput_hour"])
            for b in ok if st["cost_per_throughput_hour"] is not None
            and strategies[b]["cost_per_throughput_hour"] is not None}
    oracle = _oracle(r)
    for st in strategies.values():
        o, c = oracle["cost_per_delivered_gpu_hour"], st["cost_per_delivered_gpu_hour"]
        st["regret_pct_vs_oracle"] = round(100 * (c - o) / o, 2) if o and c is not None else None
    cfg = r.config
    return {
        "portfolio": r.portfolio.name,
        "window": {"from": r.start.isoformat(), "to": r.end.isoformat(),
                   "days": round((r.end - r.start).total_seconds() / 86400, 2)},
        "data_dir": str(cfg.data_dir),
        "strategies": strategies,
        "oracle": oracle,
        "forecast_error": r.forecast,
        "forecast_evaluation": r.forecast_evaluation,
        "price_sources": r.price_sources,
        "engine": {k: v for k, v in r.engine_stats.items() if k not in ("solve_ms_total", "time_split_s", "cpu_s")},
        "events": {"market": r.n_events - r.n_trace_events, "trace_overlay": r.n_trace_events,
                   "batches": r.n_batches},
        "timing": {"runtime_s": round(r.runtime_s, 2),  # the only non-deterministic part of the report
                   "solve_ms_total": r.engine_stats.get("solve_ms_total"),
                   "split_s": r.engine_stats.get("time_split_s"), "cpu_s": r.engine_stats.get("cpu_s")},
        "assumptions": {
            "trace_unavailable_value": cfg.trace_unavailable_value,
            "trace_resolution_s": cfg.trace_resolution_s,
            "traces": cfg.traces,
            "trace_mapping": "per (provider, region, GPU model) pool; GPU traces first, then same provider; "
                             "tick 0 = window start, replayed cyclically (see backtest/traces.py)",
            "trace_offers_mapped": len(r.trace_mapping),
            "traces_used": sorted(set(r.trace_mapping.values())),
            "budget_guard": cfg.budget_guard,
            "price_threshold": cfg.price_threshold,
            "moves": "every strategy pays a move as the engine prices it: the state's egress when it leaves its "
                     "providers (state_gb x their dearest USD/GB; egress_usd) and its restart overhead plus "
                     "transfer time (state_gb at the engine's move_bandwidth_gbps) as hours paid, not delivered",
            "savings_pct_vs": "100 x (baseline total cost - strategy total cost) / baseline total cost; "
                              "savings_pct_vs_per_gpu_hour compares cost per delivered GPU-hour, and "
                              "savings_pct_vs_per_throughput_hour cost per unit of work delivered",
            "throughput_hour": "a delivered GPU-hour x the workload's relative throughput on that GPU "
                               "(gpu_throughput): the unit of work the engine prices. Workloads run for their "
                               "whole window at the GPU count asked, so a faster GPU delivers more work, not an "
                               "earlier end; compare strategies that chose different GPU models on it",
            "requested": "sum over active workloads of min_gpus x hours active",
            "placement_spread": "per workload, the most distinct providers, (provider, region) pairs, GPU models "
                                "and places (provider|region|zone|instance type|GPU) held at once, from the "
                                "holdings in force after each decision instant",
            "quota_violations": "decision instants (timestamps where a strategy's holdings changed) after which "
                                "the portfolio's holdings exceed a quota; per workload: those where it holds GPUs "
                                "under an exceeded quota",
            "quotas": [q.model_dump() for q in r.portfolio.quotas],
            "oracle": "a lower bound (backtest/oracle.py): per gang workload the shortest path over the "
                      "places that can host it at each instant, knowing every price and capacity loss ahead, "
                      "with moves steered by restart overhead + egress, its cost counting the egress only; "
                      "replicas the cheapest admissible fill at "
                      "each instant; capacity and quotas not shared between workloads; it runs a workload "
                      "whenever some place can host it. regret_pct_vs_oracle compares cost per delivered GPU-hour",
            "naive_forecasts": cfg.naive_forecasts,
            "forecasts_planned_on": "naive: price = last value (forecast = the quote), risk = max(the offer's state "
                                    "risk, its group's base rate known then, as in forecast_evaluation)"
                                    if cfg.naive_forecasts else
                                    "the forecaster's published forecasts (streams.core.state.engine_view)",
            "forecast_evaluation": f"hourly ticks (tick {cfg.forecast_tick_s:g} s) of event time; each offer's "
                                   "published forecast (as the engine uses it: the predicted move applied to the "
                                   "price in force) vs naive (last value; the group's base rate known then) scored "
                                   "at T + h against the price in force and P(capacity lost or interrupted in "
                                   "(T, T+1h]); scored only for T >= the window start and T >= the group's first "
                                   f"price + {cfg.forecast_warmup_days:g} d (warm-up: the models learn online and "
                                   "see an outcome only after its horizon passed, so every scored outcome was "
                                   "unseen), where the dataset pricing the offer still ran at T + h (risk: or the "
                                   "trace overlay covers the offer), risk only while the offer has capacity; "
                                   "always the model's scores, also with naive_forecasts (backtest/"
                                   "evaluation.py)",
            "price_sources": "the dataset of each price applied (PriceObserved.source); where datasets overlap on "
                             "an offer, event-time order decides: the latest quote is in force (ties: dataset "
                             "name, then event id); a quote older than the one in force is ignored",
        },
    }


def headline(rep: dict[str, Any]) -> str:
    st = rep["strategies"]
    names = [n for n in (OURS, *BASELINES) if n in st]
    cols = [b for b in HEADLINE_BASELINES if b in st]
    hdr = (f"{'strategy':<16}{'cost $':>13}{'$/GPU-h':>9}{'$/work-h':>9}{'deliv/req':>10}{'intr':>6}{'migr':>6}"
           f"{'budg':>5}"
           + "".join(f"{'vs ' + b[:13]:>18}" for b in cols) + f"{'regret':>9}")
    lines = [f"portfolio {rep['portfolio']}  {rep['window']['from'][:16]} -> {rep['window']['to'][:16]} "
             f"({rep['window']['days']} d), {rep['timing']['runtime_s']} s wall, {rep['timing']['cpu_s']} s CPU",
             hdr, "-" * len(hdr)]
    for n in names:
        s = st[n]
        cpg = s["cost_per_delivered_gpu_hour"]
        ds = s["delivered_share"]
        cpw = s.get("cost_per_throughput_hour")
        row = (f"{n:<16}{s['total_cost_usd']:>13,.0f}{(cpg if cpg is not None else float('nan')):>9.3f}"
               f"{(cpw if cpw is not None else float('nan')):>9.3f}{(ds if ds is not None else float('nan')):>10.3f}"
               f"{s['interruptions']:>6}{s['migrations']:>6}{s['budget_violations']:>5}")
        for b in cols:
            v = s["savings_pct_vs"].get(b)
            row += f"{'-' if v is None else f'{v:+.1f}%':>18}"
        rg = s.get("regret_pct_vs_oracle")
        row += f"{'-' if rg is None else f'{rg:+.1f}%':>9}"
        lines.append(row)
    o = rep.get("oracle")
    if o and o.get("cost_per_delivered_gpu_hour") is not None:
        lines.append(f"{'oracle (bound)':<16}{o['total_cost_usd']:>13,.0f}{o['cost_per_delivered_gpu_hour']:>9.3f}"
                     f"{'-':>9}{(o['delivered_share'] or float('nan')):>10.3f}{0:>6}{o['migrations']:>6}{0:>5}")
    wids = sorted({w for n in names for w in st[n].get("per_workload", {})})
    if wids:
        lines.append("placement spread per workload (most providers/regions/GPU models at once; q = instants over "
                     "a quota):")
        for wid in wids:
            cells = []
            for n in names:
                d = st[n]["per_workload"].get(wid)
                if d is not None:
                    q = f" q{d['quota_violations']}" if d["quota_violations"] else ""
                    cells.append(f"{n} {d['max_providers_at_once']}/{d['max_regions_at_once']}/"
                                 f"{d['max_gpu_models_at_once']}{q}")
            topo = next((st[n]["per_workload"][wid]["topology"] for n in names if wid in st[n]["per_workload"]), "")
            lines.append(f"  {wid} ({topo}): " + ", ".join(cells))
    fe = rep.get("forecast_error", {})
    parts = []
    for h, v in fe.items():
        if "mae_model" in v:
            parts.append(f"{h}: MAE model {v['mae_model']:.4f} vs naive {v['mae_naive']:.4f} (n={v['n']})")
        elif "logloss_model" in v:
            parts.append(f"{h}: log-loss model {v['logloss_model']:.4f} vs base rate {v['logloss_naive']:.4f}")
    if parts:
        lines.append("forecast: " + "; ".join(parts))
    fe_line = evaluation.headline_line(rep.get("forecast_evaluation") or {})
    if fe_line:
        lines.append(fe_line)
    ps = (rep.get("price_sources") or {}).get("offers_by_dataset")
    if ps:
        lines.append("offers priced by: " + ", ".join(f"{d} {n}" for d, n in ps.items())
                     + (" (naive forecasts planned on)" if rep.get("assumptions", {}).get("naive_forecasts") else ""))
    return "\n".join(lines)


# --- HTML with inline SVG ------------------------------------------------------------------------

def _svg_lines(series: dict[str, list[tuple[float, float]]], w: int = 860, h: int = 300, title: str = "") -> str:
    pts = [p for s in series.values() for p in s]
    if not pts:
        return ""
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0 = min(0.0, min(p[1] for p in pts))
    y1 = max(p[1] for p in pts)
    if y1 <= y0:
        y1 = y0 + 1.0
    ml, mb, mt = 70, 30, 20

    def sx(x: float) -> float:
        return ml + (x - x0) / ((x1 - x0) or 1) * (w - ml - 10)

    def sy(y: float) -> float:
        return mt + (1 - (y - y0) / (y1 - y0)) * (h - mt - mb)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">',
           f'<text x="{ml}" y="14" font-size="12">{html.escape(title)}</text>']
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        out.append(f'<line x1="{ml}" x2="{w - 10}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#eee"/>'
                   f'<text x="{ml - 4}" y="{sy(y) + 4:.1f}" font-size="10" text-anchor="end">${y:,.0f}</text>')
    for i in range(5):
        x = x0 + (x1 - x0) * i / 4
        d = datetime.fromtimestamp(x, UTC).strftime("%Y-%m-%d")
        out.append(f'<text x="{sx(x):.1f}" y="{h - 10}" font-size="10" text-anchor="middle">{d}</text>')
    for k, (name, s) in enumerate(series.items()):
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
        c = COLORS.get(name, "#000")
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{path}"/>'
                   f'<text x="{ml + 10}" y="{mt + 14 + 13 * k}" font-size="11" fill="{c}">{html.escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def _svg_bars(rows: dict[str, dict[str, float]], w: int = 860, title: str = "") -> str:
    cats = sorted({c for r in rows.values() for c in r})
    palette = ["#1b7f3b", "#1f5fbf", "#d9730d", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#2c3e50",
               "#f1c40f", "#e84393", "#6c5ce7", "#00b894"]
    col = {c: palette[i % len(palette)] for i, c in enumerate(cats)}
    bh, ml = 22, 130
    h = 30 + bh * len(rows) + 20 + 16 * ((len(cats) + 3) // 4)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">',
           f'<text x="{ml}" y="14" font-size="12">{html.escape(title)}</text>']
    for i, (name, r) in enumerate(rows.items()):
        y = 24 + i * bh
        tot = sum(r.values()) or 1.0
        x = float(ml)
        out.append(f'<text x="{ml - 6}" y="{y + 14}" font-size="11" text-anchor="end">{html.escape(name)}</text>')
        for c in cats:
            v = r.get(c, 0.0) / tot * (w - ml - 10)
            if v > 0:
                out.append(f'<rect x="{x:.1f}" y="{y}" width="{v:.1f}" height="{bh - 4}" fill="{col[c]}">'
                           f'<title>{html.escape(c)}: {100 * r.get(c, 0.0) / tot:.1f}%</title></rect>')
                x += v
    ly = 30 + bh * len(rows)
    for i, c in enumerate(cats):
        lx, lyy = ml + (i % 4) * 180, ly + 16 * (i // 4)
        out.append(f'<rect x="{lx}" y="{lyy}" width="10" height="10" fill="{col[c]}"/>'
                   f'<text x="{lx + 14}" y="{lyy + 9}" font-size="11">{html.escape(c)}</text>')
    out.append("</svg>")
    return "".join(out)


def _svg_events(r: Result, w: int = 860) -> str:
    names = list(r.ledgers)
    t0, t1 = r.start.timestamp(), r.end.timestamp()
    ml, rh = 130, 22
    h = 30 + rh * len(names) + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">',
           f'<text x="{ml}" y="14" font-size="12">interruptions (red) and migrations (blue) over time</text>']
    for i, n in enumerate(names):
        y = 24 + i * rh
        out.append(f'<text x="{ml - 6}" y="{y + 12}" font-size="11" text-anchor="end">{html.escape(n)}</text>'
                   f'<line x1="{ml}" x2="{w - 10}" y1="{y + 8}" y2="{y + 8}" stroke="#ddd"/>')
        for ev in r.ledgers[n].events[:3000]:
            if ev["kind"] not in ("interruption", "migration"):
                continue
            x = ml + (ev["t"] - t0) / ((t1 - t0) or 1) * (w - ml - 10)
            c = "#c0392b" if ev["kind"] == "interruption" else "#1f5fbf"
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y}" y2="{y + 16}" stroke="{c}" stroke-opacity="0.6"/>')
    out.append("</svg>")
    return "".join(out)


PALETTE = ["#1b7f3b", "#1f5fbf", "#d9730d", "#8e44ad", "#c0392b", "#16a085", "#2c3e50", "#f1c40f", "#e84393",
           "#6c5ce7", "#00b894", "#a0522d", "#0984e3", "#b8860b", "#2d3436", "#fd79a8"]
TIMELINE_MAX_RECTS = 6000


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def _place_label(led: Ledger, key: str) -> str:
    o = led.offers.get(key)
    return key if o is None else f"{o.provider}/{o.region}/{o.instance_type}"


def _svg_timeline(r: Result, wid: str, w: int = 860) -> str:
    """Which offer each strategy held for `wid`, when: one row per strategy on the event-time axis; a row is
    split by GPU share when the holdings span several offers; spot is drawn lighter than on-demand."""
    t0, t1 = r.start.timestamp(), r.end.timestamp()
    names = [n for n, led in r.ledgers.items() if led.timeline.get(wid)]
    if not names:
        return "<p>never placed</p>"
    held: dict[str, float] = {}
    spans: list[tuple[str, float, float, list[tuple[str, str, int]]]] = []   # (strategy, from, to, holdings)
    for n in names:
        led = r.ledgers[n]
        tl = led.timeline[wid]
        for i, (ts, snap) in enumerate(tl):
            te = tl[i + 1][0] if i + 1 < len(tl) else t1
            if te <= ts or not snap:
                continue
            hs = [(k, _place_label(led, k), m) for k, m in snap]
            for k, lab, m in hs:
                o = led.offers.get(k)
                held[lab] = held.get(lab, 0.0) + (te - ts) * m * (o.gpus_per_instance if o else 1)
            spans.append((n, ts, te, hs))
    top = sorted(held, key=lambda k: (-held[k], k))[:len(PALETTE)]
    col = {lab: PALETTE[i] for i, lab in enumerate(top)}
    ml, rh = 130, 26
    legend_rows = (len(top) + 1 + 2) // 3
    h = 30 + rh * len(names) + 24 + 16 * legend_rows
    row = {n: i for i, n in enumerate(names)}

    def sx(t: float) -> float:
        return ml + (t - t0) / ((t1 - t0) or 1) * (w - ml - 10)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">',
           f'<text x="{ml}" y="14" font-size="12">{html.escape(wid)}: placement timeline '
           f'(offer held over event time; lighter = spot)</text>']
    for n in names:
        y = 24 + row[n] * rh
        out.append(f'<text x="{ml - 6}" y="{y + 14}" font-size="11" text-anchor="end">{html.escape(n)}</text>'
                   f'<rect x="{ml}" y="{y}" width="{w - ml - 10}" height="{rh - 6}" fill="#f4f4f4"/>')
    rects = 0
    for n, ts, te, hs in spans:
        if rects >= TIMELINE_MAX_RECTS:
            out.append(f'<text x="{ml}" y="{h - 4}" font-size="10">(timeline truncated at '
                       f'{TIMELINE_MAX_RECTS} spans)</text>')
            break
        led = r.ledgers[n]
        y = 24 + row[n] * rh
        x0, x1 = sx(max(ts, t0)), sx(min(te, t1))
        tot = sum(m * (led.offers[k].gpus_per_instance if k in led.offers else 1) for k, _, m in hs) or 1
        yy = float(y)
        for k, lab, m in hs:
            o = led.offers.get(k)
            g = m * (o.gpus_per_instance if o else 1)
            hh = (rh - 6) * g / tot
            spot = o is not None and o.market.value == "spot"
            tip = f"{lab} {o.market.value if o else ''} x{m} ({g} GPUs) {_when(ts)} -> {_when(te)}"
            out.append(f'<rect x="{x0:.1f}" y="{yy:.1f}" width="{max(0.5, x1 - x0):.1f}" height="{hh:.1f}" '
                       f'fill="{col.get(lab, "#999999")}" fill-opacity="{0.55 if spot else 1.0}">'
                       f'<title>{html.escape(tip)}</title></rect>')
            yy += hh
            rects += 1
    ya = 24 + rh * len(names)
    for i in range(5):
        x = t0 + (t1 - t0) * i / 4
        d = datetime.fromtimestamp(x, UTC).strftime("%Y-%m-%d")
        out.append(f'<text x="{sx(x):.1f}" y="{ya + 8}" font-size="10" text-anchor="middle">{d}</text>')
    labels = [*top, *(["other"] if len(held) > len(top) else [])]
    for i, lab in enumerate(labels):
        lx, ly = ml + (i % 3) * 240, ya + 18 + 16 * (i // 3)
        out.append(f'<rect x="{lx}" y="{ly}" width="10" height="10" fill="{col.get(lab, "#999999")}"/>'
                   f'<text x="{lx + 14}" y="{ly + 9}" font-size="10">{html.escape(lab)}</text>')
    out.append("</svg>")
    return "".join(out)


def _timelines(r: Result, rep: dict[str, Any]) -> str:
    parts = []
    for w in r.portfolio.workloads:
        wid = w.spec.workload_id
        spread = ", ".join(
            f"{n}: {d['max_providers_at_once']}/{d['max_regions_at_once']}/{d['max_gpu_models_at_once']}"
            + (f" ({d['quota_violations']} over quota)" if d["quota_violations"] else "")
            for n, st in rep["strategies"].items() if (d := st["per_workload"].get(wid)))
        parts.append(f"<h3>{html.escape(wid)} ({html.escape(w.spec.topology.value)}, "
                     f"interconnect {html.escape(w.spec.interconnect.value)})</h3>"
                     f"<p>most providers/regions/GPU models at once &mdash; {html.escape(spread)}</p>"
                     + _svg_timeline(r, wid))
    return "".join(parts)


def _savings(r: Result) -> dict[str, list[tuple[float, float]]]:
    base = r.ledgers.get("on_demand_home")
    if base is None:
        return {}
    ref = dict(base.series)
    return {n: [(t, ref[t] - c) for t, c in led.series if t in ref]
            for n, led in r.ledgers.items() if n != "on_demand_home"}


def render_html(r: Result, rep: dict[str, Any]) -> str:
    series = {n: led.series for n, led in r.ledgers.items()}
    shares = {n: led.share_gpu_h for n, led in r.ledgers.items()}
    table = html.escape(headline(rep))
    name = html.escape(rep["portfolio"])
    fe = evaluation.html_section(rep.get("forecast_evaluation") or {}, rep.get("price_sources") or {})
    style = "body{font-family:system-ui,sans-serif;margin:24px;max-width:920px}pre{background:#f6f6f6;padding:10px}"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>CloudArb back-test: {name}</title>
<style>{style}</style>
</head><body>
<h1>Back-test: {html.escape(rep['portfolio'])}</h1>
<p>{html.escape(rep['window']['from'])} &rarr; {html.escape(rep['window']['to'])}; data {html.escape(rep['data_dir'])};
{rep['events']['market']} market events, {rep['events']['trace_overlay']} trace-overlay events;
{rep['timing']['runtime_s']} s.</p>
<pre>{table}</pre>
<h2>Cumulative cost per strategy</h2>{_svg_lines(series, title="cumulative cost, USD")}
<h2>Cumulative savings versus on-demand in the home cloud</h2>{_svg_lines(_savings(r), title="USD saved")}
<h2>Allocation share by provider and market (delivered GPU-hours)</h2>{_svg_bars(shares, title="share of GPU-hours")}
<h2>Interruptions and migrations</h2>{_svg_events(r)}
<h2>Placement timeline per workload</h2>{_timelines(r, rep)}
<h2>Forecast evaluation (per group, on unseen periods)</h2>{fe}
<h2>Assumptions</h2><pre>{html.escape(json.dumps(rep['assumptions'], indent=2))}</pre>
<h2>Forecast error (model vs last-value naive)</h2><pre>{html.escape(json.dumps(rep['forecast_error'], indent=2))}</pre>
</body></html>
"""


def write_report(r: Result, out_dir: Path) -> dict[str, Any]:
    rep = build_report(r)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(rep, indent=2, sort_keys=True) + "\n")
    (out_dir / "report.html").write_text(render_html(r, rep))
    return rep
