"""Decisions on the last optimal LP against one simplex run per decision (its own command, not a test):

    .venv/bin/python tests/benchmarks/bench_lp_deferral.py [--steps 300] [--idle-ms 10]

The portfolio engine's `cg_budget_s` sets the LP work inside a decision: 0.03 runs the simplex once, for at
most 30 ms, before the integer phase decides; 0 runs none, and the integer phase decides on the last optimal
LP solution (the model behind it by at most `MAX_STALE_LP_S`, else the decision runs the simplex itself),
re-solved by `warm()` after the decision, as the decision stage calls it while it waits for the next step.

Both engines get the same instance (10,000 offers and 1,000 workloads: `--instance streams`, the latency
phase's of bench_streams.py; `data`, bench_solvers.py's from ../shared/data, with capacities and gangs) and
the same stream of steps: per step `--changes` price moves (x0.9 .. x1.1) of random offers and, in a third
of the steps, the loss of capacity of an offer the initial plan holds (back `--regain-steps` steps later).
Each step is `upsert_offers`, `solve()` of the workloads the changed offers concern
(`streams.core.decide.affected_workloads`, as the decision stage asks; timed: process CPU, as the
decision's own cost, and wall time), `settle()` (the adoption the decision stage does after replying), then
`warm()` for `--idle-ms` of wall time (the decision stage's time between steps at 1,000 events/s: the write
and the take window, ~10 ms). The idle CP-SAT search is off in both (`idle_time_limit_s=0`): only the LP
differs.

Quality, every `--eval-every` steps: each engine's plan evaluated on a fresh instance of the quotes then
(no plan in force, so no migration term: what the plan costs to run), its feasibility, the workloads it
places, and the plan changes each engine made (churn). Results go to results.json under "lp_deferral",
per instance.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from solver_instances import data_available, load_base_catalogue, make_offers, make_workloads  # noqa: E402

from schemas.market import OfferQuote  # noqa: E402
from solvers import PortfolioEngine, build_instance, evaluate  # noqa: E402
from streams.core.decide import affected_workloads  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results.json"
BUDGETS = (0.03, 0.0)


def _past(deadline: float) -> bool:
    return time.perf_counter() >= deadline


def plan_rows(plan: Any) -> dict[str, tuple[tuple[str, int], ...]]:
    return {w: tuple(sorted((a.offer.key, a.instances) for a in assigns)) for w, assigns in plan.items()}


def run(budget: float, quotes: list[OfferQuote], specs: list[Any], steps: list[list[OfferQuote]], idle_ms: float,
        eval_every: int) -> dict[str, Any]:
    e = PortfolioEngine(cg_budget_s=budget, idle_time_limit_s=0.0)
    e.upsert_offers(quotes)
    for s in specs:
        e.upsert_workload(s)
    e.solve()
    e.warm(lambda: False)   # the LP to its optimum before the stream
    e.solve()
    e.settle()
    prev = plan_rows(e.plan)
    by_id = {s.workload_id: s for s in specs}
    accepting: dict[tuple[str, str], set[str]] = {}
    cur = {q.key: q for q in quotes}
    cpu_ms: list[float] = []
    wall_ms: list[float] = []
    settle_ms: list[float] = []
    evals: list[dict[str, float]] = []
    moves = 0
    for i, qs in enumerate(steps):
        for q in qs:
            cur[q.key] = q
        c0, w0 = time.process_time(), time.perf_counter()
        e.upsert_offers(qs)
        # the workloads the decision stage asks for (streams.core.decider): those the changed offers concern
        e.solve(affected_workloads([q.key for q in qs], by_id, e.plan, accepting))
        cpu_ms.append((time.process_time() - c0) * 1000)
        wall_ms.append((time.perf_counter() - w0) * 1000)
        t = time.perf_counter()
        e.settle()
        settle_ms.append((time.perf_counter() - t) * 1000)
        e.warm(functools.partial(_past, time.perf_counter() + idle_ms / 1000))
        now = plan_rows(e.plan)
        moves += sum(1 for w in now.keys() | prev.keys() if now.get(w) != prev.get(w))
        prev = now
        if (i + 1) % eval_every == 0:
            fresh = build_instance(list(cur.values()), specs, params=e.params)
            ev = evaluate(fresh, e.plan)
            evals.append({"objective": ev.objective, "usd_per_hour": ev.usd_per_hour, "placed": len(ev.placed),
                          "violations": len(ev.violations)})
    q = np.percentile(cpu_ms, [50, 90, 99])
    return {"cg_budget_s": budget, "step_cpu_ms_p50": round(float(q[0]), 2), "step_cpu_ms_p90": round(float(q[1]), 2),
            "step_cpu_ms_p99": round(float(q[2]), 2), "step_cpu_ms_mean": round(statistics.fmean(cpu_ms), 2),
            "step_wall_ms_p50": round(float(np.percentile(wall_ms, 50)), 2),
            "step_wall_ms_p99": round(float(np.percentile(wall_ms, 99)), 2),
            "settle_ms_mean": round(statistics.fmean(settle_ms), 2), "plan_changes": moves,
            "lp_solves": e.stats.get("lp_solves", 0), "lp_deferred": e.stats.get("lp_deferred", 0),
            "lp_warm": e.stats.get("lp_warm", 0), "evaluations": evals}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--offers", type=int, default=10_000)
    ap.add_argument("--workloads", type=int, default=1_000)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--changes", type=int, default=20, help="price moves per step")
    ap.add_argument("--regain-steps", type=int, default=10)
    ap.add_argument("--idle-ms", type=float, default=10.0, help="warm() time between steps")
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--instance", choices=("streams", "data"), default="streams",
                    help="bench_streams.py's latency-phase instance (unbounded capacity, the load the decision "
                         "latency is measured on), or bench_solvers.py's from ../shared/data (capacities, gangs)")
    args = ap.parse_args()
    if args.instance == "data":
        if not data_available():
            print("no ../shared/data: skipped")
            return
        quotes = make_offers(args.offers, args.seed, load_base_catalogue())
        specs = make_workloads(args.workloads, args.seed, quotes)
    else:
        import bench_streams as bs
        quotes = [OfferQuote(o, p) for o, p in bs.make_offers(args.offers)]
        specs = bs.make_workloads(args.workloads)
    # the stream, the same for both engines: held offers are those of a plain cold solve's plan
    e0 = PortfolioEngine(idle_time_limit_s=0.0)
    e0.upsert_offers(quotes)
    for s in specs:
        e0.upsert_workload(s)
    held = sorted({a.offer.key for a in e0.solve().assignments})
    rng = np.random.default_rng(args.seed + 11)
    cur = {q.key: q for q in quotes}
    keys = list(cur)
    lost: list[tuple[int, str]] = []   # (step it comes back, offer)
    steps: list[list[OfferQuote]] = []
    for i in range(args.steps):
        qs: dict[str, OfferQuote] = {}
        for k in rng.choice(len(keys), args.changes, replace=False).tolist():
            q = cur[keys[k]]
            qs[q.key] = cur[q.key] = replace(q, usd_per_hour=round(q.usd_per_hour * float(rng.uniform(0.9, 1.1)), 4))
        while lost and lost[0][0] <= i:
            k2 = lost.pop(0)[1]
            qs[k2] = cur[k2] = replace(cur[k2], available=True)
        if rng.random() < 1 / 3:
            k2 = held[int(rng.integers(len(held)))]
            if cur[k2].available:
                qs[k2] = cur[k2] = replace(cur[k2], available=False)
                lost.append((i + args.regain_steps, k2))
        steps.append(list(qs.values()))
    runs = [run(b, quotes, specs, steps, args.idle_ms, args.eval_every) for b in BUDGETS]
    full, deferred = runs
    ratio = [d["objective"] / f["objective"] for f, d in zip(full["evaluations"], deferred["evaluations"], strict=True)]
    out = {"what": __doc__.split("\n\n")[0].strip().rstrip(":"), "measured_at": datetime.now(UTC).isoformat(),
           "instance": args.instance, "size": f"{args.workloads}x{len(quotes)}", "steps": args.steps,
           "changes_per_step": args.changes,
           "idle_ms": args.idle_ms,
           "objective_ratio_deferred_to_full": {"mean": round(statistics.fmean(ratio), 6),
                                                "max": round(max(ratio), 6), "min": round(min(ratio), 6)},
           "runs": {f"cg_budget_s={r['cg_budget_s']}": {k: v for k, v in r.items() if k != "evaluations"}
                    | {"objective_mean": round(statistics.fmean(x["objective"] for x in r["evaluations"]), 3),
                       "placed_min": min(x["placed"] for x in r["evaluations"]),
                       "violations": sum(x["violations"] for x in r["evaluations"])} for r in runs}}
    print(json.dumps(out, indent=1))
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data.setdefault("lp_deferral", {})[args.instance] = out
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
