"""The integer placement as a CP-SAT model over candidate plans: one plan (or none) per workload, under
shared offer capacity and GPU quotas, at least cost. Pure: data in (a frozen `PlacementProblem`), a
`Placement` out, checked against the data by `check`.

Why candidate plans: a plan a job can run in (a gang in one place, replicas of the right size, the
interconnect it needs) is a combinatorial object; the engine generates a few admissible ones per workload
(its LP rounding, the best single places, the plan in force) and CP-SAT chooses among them jointly, which
a workload-by-workload pass cannot do when workloads compete for the same capacity or quota.

Model (all costs in USD/h of the planning objective, scaled to integer micro-dollars for CP-SAT):

    sets      W workloads; K_w candidate plans of w, each a multiset of (offer o, instances n_wko);
              O offers; Q quotas, q covering offers O_q with g_o GPUs per instance
    data      c_wk   cost of plan k of w per hour (price, risk and the move from the plan in force included)
              p_w    cost of leaving w unplaced (the engine's unplaced penalty)
              cap_o  instances of offer o left (None = unbounded);  L_q  GPUs quota q allows
    vars      x_wk in {0,1}  (w runs plan k);  u_w in {0,1}  (w is unplaced)
    min       sum_wk c_wk x_wk + sum_w p_w u_w
    s.t.      sum_k x_wk + u_w = 1                              for every w        (one plan or none)
              sum_wk n_wko x_wk <= cap_o                         for every bounded o (capacity)
              sum_wk sum_{o in O_q} g_o n_wko x_wk <= L_q        for every q        (quota)

Hinted with a starting choice (the plan in force, or the engine's own integer plan), solved under a time
limit; CP-SAT's best objective bound is a lower bound over these candidates (the LP relaxation's bound
covers every plan: report the gap against the better-founded one).

>>> p = PlacementProblem(options=(((((0, 2),), 10.0), (((1, 1),), 12.0)), ((((0, 1),), 4.0),)),
...                      unplaced_usd=(100.0, 100.0), capacity=(2, None))
>>> s = solve(p, time_limit_s=2.0)
>>> s.choice, round(s.objective, 6), check(p, s.choice)
((1, 0), 16.0, [])
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Rows = tuple[tuple[int, int], ...]   # ((offer index, instances), ...)
SCALE = 1_000_000                    # USD/h -> integer micro-dollars per hour


@dataclass(frozen=True)
class PlacementProblem:
    """Frozen data: `options[w]` = ((rows, cost USD/h), ...) candidate plans of workload w."""

    options: tuple[tuple[tuple[Rows, float], ...], ...]
    unplaced_usd: tuple[float, ...]
    capacity: tuple[int | None, ...]                           # per offer, instances left (None: unbounded)
    gpus_per_instance: tuple[int, ...] = ()                     # per offer (quotas only)
    quotas: tuple[tuple[int, frozenset[int]], ...] = ()         # (GPU limit, offers it covers)
    names: tuple[str, ...] = ()                                 # quota names, for reports

    def cost(self, choice: Sequence[int | None]) -> float:
        return sum(self.options[w][k][1] if k is not None else self.unplaced_usd[w] for w, k in enumerate(choice))


@dataclass(frozen=True)
class Placement:
    choice: tuple[int | None, ...]   # per workload: the index of its plan, None = unplaced
    objective: float
    bound: float                     # CP-SAT's best bound over these candidates
    status: str                      # OPTIMAL | FEASIBLE | (the hint, when CP-SAT found nothing)
    wall_s: float

    @property
    def gap(self) -> float:
        return (self.objective - self.bound) / max(abs(self.objective), 1e-9)


def check(p: PlacementProblem, choice: Sequence[int | None]) -> list[str]:
    """Every constraint of the model, re-checked from the data: the violated ones, named."""
    problems: list[str] = []
    if len(choice) != len(p.options):
        return [f"{len(choice)} choices for {len(p.options)} workloads"]
    used: dict[int, int] = {}
    for w, k in enumerate(choice):
        if k is None:
            continue
        if not 0 <= k < len(p.options[w]):
            problems.append(f"workload {w}: no plan {k}")
            continue
        for o, n in p.options[w][k][0]:
            used[o] = used.get(o, 0) + n
    for o, n in sorted(used.items()):
        cap = p.capacity[o]
        if cap is not None and n > cap:
            problems.append(f"offer {o}: {n} instances > capacity {cap}")
    for i, (limit, offers) in enumerate(p.quotas):
        g = sum(n * p.gpus_per_instance[o] for o, n in used.items() if o in offers)
        if g > limit:
            problems.append(f"quota {p.names[i] if i < len(p.names) else i}: {g} GPUs > {limit}")
    return problems


def solve(p: PlacementProblem, time_limit_s: float = 1.0, hint: Sequence[int | None] | None = None,
          workers: int = 1, stop: Callable[[], bool] | None = None) -> Placement:
    """The least-cost choice of one plan (or none) per workload within capacity and quotas. With `stop`, the
    search runs in a thread (CP-SAT releases the GIL) and ends within ~2 ms of `stop()` turning true, with
    the best choice found so far."""
    from ortools.sat.python import cp_model

    m = cp_model.CpModel()
    x = [[m.new_bool_var(f"x{w}_{k}") for k in range(len(opts))] for w, opts in enumerate(p.options)]
    u = [m.new_bool_var(f"u{w}") for w in range(len(p.options))]
    for w in range(len(p.options)):
        m.add_exactly_one([*x[w], u[w]])
    terms: dict[int, list[tuple[int, cp_model.IntVar]]] = {}
    for w, opts in enumerate(p.options):
        for k, (rows, _) in enumerate(opts):
            for o, n in rows:
                terms.setdefault(o, []).append((n, x[w][k]))
    for o, ts in terms.items():
        cap = p.capacity[o]
        if cap is not None and sum(n for n, _ in ts) > cap:
            m.add(cp_model.LinearExpr.weighted_sum([v for _, v in ts], [n for n, _ in ts]) <= cap)
    for limit, offers in p.quotas:
        ts = [(n * p.gpus_per_instance[o], v) for o in offers for n, v in terms.get(o, [])]
        if ts and sum(g for g, _ in ts) > limit:
            m.add(cp_model.LinearExpr.weighted_sum([v for _, v in ts], [g for g, _ in ts]) <= limit)
    xs = [v for row in x for v in row] + u
    coef = [round(c * SCALE) for opts in p.options for _, c in opts] + [round(c * SCALE) for c in p.unplaced_usd]
    m.minimize(cp_model.LinearExpr.weighted_sum(xs, coef))
    if hint is not None:
        for w, want in enumerate(hint):
            for kk, v in enumerate(x[w]):
                m.add_hint(v, kk == want)
            m.add_hint(u[w], want is None)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.01, time_limit_s)
    solver.parameters.num_workers = workers
    if stop is None:
        status = solver.solve(m)
    else:
        out: list[Any] = []
        th = threading.Thread(target=lambda: out.append(solver.solve(m)), daemon=True)
        th.start()
        while th.is_alive():
            if stop():
                solver.stop_search()
                break
            time.sleep(0.002)
        th.join()
        status = out[0]
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        start = tuple(hint) if hint is not None else tuple(None for _ in p.options)
        return Placement(start, p.cost(start), -math.inf, solver.status_name(status), solver.wall_time)
    choice = tuple(next((k for k, v in enumerate(x[w]) if solver.value(v)), None) for w in range(len(p.options)))
    return Placement(choice, p.cost(choice), solver.best_objective_bound / SCALE, solver.status_name(status),
                     solver.wall_time)
