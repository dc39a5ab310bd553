"""The incremental solves: warm equals cold, plans kept in force, column generation under a time budget,
re-decisions driven by the LP, and the pricing cache."""

from __future__ import annotations

from dataclasses import replace

import pytest

from schemas.market import OfferQuote
from solvers import PortfolioEngine, evaluate
from tests.solvers.helpers import NO_CONC, quote, spec


def warm_and_cold(e, offers, ws, changed):
    """Apply `changed` to engine `e` and re-solve it (warm); solve the same instance, with the plan that
    was in force, in a new engine (cold). Returns (the updated offers, warm result, cold result)."""
    before = [a for v in e.plan.values() for a in v]
    e.upsert_offers(changed)
    warm = e.solve()
    assert evaluate(e.instance(), warm.plan()).ok
    offers = [next((c for c in changed if c.key == o.key), o) for o in offers]
    cold_e = PortfolioEngine()
    cold_e.upsert_offers(offers)
    for w in ws:
        cold_e.upsert_workload(w)
    cold_e.set_current_plan(before)
    return offers, warm, cold_e.solve()


def test_incremental_equals_cold():
    import numpy as np
    rng = np.random.default_rng(3)
    models = ["L4", "A10G", "A100-80GB", "H100-80GB"]
    offers = [quote(provider=p, region=rg, model=m, gpus=g, spot=s, price=round(float(rng.uniform(0.5, 3)) * g, 3),
                    pi=0.02 if s else 0.0, cap=int(rng.integers(1, 6)) if rng.random() < 0.3 else None)
              for p in ("gcp", "aws") for rg in ("r1", "r2") for m in models for g in (1, 4) for s in (False, True)]
    ws = [spec(f"w{i}", models={m: float(rng.uniform(0.5, 2)) for m in rng.choice(models, 2, replace=False)},
               lo=int(rng.choice([1, 2, 4])), budget=200.0, spot_share=float(rng.choice([0.0, 0.5, 1.0])),
               priority=int(rng.integers(1, 4))) for i in range(12)]
    e = PortfolioEngine()
    e.upsert_offers(offers)
    for w in ws:
        e.upsert_workload(w)
    e.solve()
    for step in range(5):
        changed = [OfferQuote(o.offer, o.usd_per_hour * float(rng.uniform(0.6, 1.3)), None, True,
                              o.capacity_instances, o.interruption_probability_per_hour)
                   for o in rng.choice(np.array(offers, dtype=object), 4, replace=False)]
        offers, warm, cold = warm_and_cold(e, offers, ws, changed)
        assert warm.lower_bound == pytest.approx(cold.lower_bound, rel=1e-7), step
        assert warm.objective == pytest.approx(cold.objective, rel=1e-6), step


@pytest.mark.parametrize("seed", [5, 11, 17])
def test_incremental_equals_cold_with_inadmissible_and_unplaceable_workloads(seed):
    """The re-decision screen skips a workload only when a changed offer cannot give it a better plan.
    Here many single-offer plans are inadmissible (over budget, too many GPUs, spot not allowed), some
    workloads have no plan at all, and offers go away and come back: warm solves must still equal cold ones."""
    import numpy as np
    rng = np.random.default_rng(seed)
    models = ["L4", "A10G", "A100-80GB"]
    offers = [quote(provider=p, region=rg, model=m, gpus=g, spot=s, price=round(float(rng.uniform(0.5, 3)) * g, 3),
                    pi=0.05 if s else 0.0, it=f"{m}-{g}x-{k}")
              for p in ("gcp", "aws") for rg in ("r1", "r2") for m in models for g in (1, 2, 8) for s in (False, True)
              for k in range(2)]
    ws = [spec(f"w{i}", models={m: 1.0 for m in rng.choice(models, int(rng.integers(1, 3)), replace=False)},
               lo=(lo := int(rng.choice([1, 2, 4]))), hi=lo * int(rng.choice([1, 2])),
               budget=float(rng.uniform(0.4, 3.0)) * lo, spot_share=float(rng.choice([0.0, 0.5, 1.0])),
               priority=int(rng.integers(1, 4))) for i in range(30)]
    e = PortfolioEngine()
    e.upsert_offers(offers)
    for w in ws:
        e.upsert_workload(w)
    first = e.solve()
    assert first.infeasible, "the instance must have workloads without a plan"
    sig = {wid: sorted((a.offer.key, a.instances) for a in v) for wid, v in first.plan().items()}
    partial = 0
    for step in range(12):
        changed = []
        for o in rng.choice(np.array(offers, dtype=object), 10, replace=False):
            avail = bool(rng.random() > 0.15) if o.available else bool(rng.random() > 0.3)
            usd = round(o.usd_per_hour * float(rng.choice([0.6, 0.9, 0.98, 1.02, 1.1, 1.4])), 4)
            changed.append(OfferQuote(o.offer, usd, None, avail, o.capacity_instances,
                                      o.interruption_probability_per_hour))
        offers, warm, cold = warm_and_cold(e, offers, ws, changed)
        assert {r.workload_id for r in warm.infeasible} == {r.workload_id for r in cold.infeasible}, step
        assert warm.objective == pytest.approx(cold.objective, rel=1e-6), step
        # every placement that changed was re-decided (callers diff only those)
        now = {wid: sorted((a.offer.key, a.instances) for a in v) for wid, v in warm.plan().items()}
        moved = {wid for wid in set(sig) | set(now) if sig.get(wid) != now.get(wid)}
        assert warm.redecided is not None and moved <= warm.redecided, step
        partial += len(warm.redecided) < len(ws)
        sig = now
        # the screen's (workload, offer) codes, kept up to date incrementally, are those of every plan and runner-up
        c, n_offers = e._cache, e._inst.n_offers
        full = {w * n_offers + o for w, rows in c.rows.items() for o, _ in rows} | set(c.codes_runner.values())
        assert c.codes.tolist() == sorted(full), step
    assert partial, "the screen never skipped a workload"


def test_a_workload_without_a_plan_is_placed_when_a_price_drop_makes_a_split_affordable():
    """No single offer fits the budget, before or after; after the drop, one instance of each does."""
    a = quote(gpus=2, price=8.0, it="a")
    b = quote(gpus=2, price=3.0, cap=1, it="b")
    e = PortfolioEngine(**NO_CONC)
    e.upsert_offers([a, b])
    e.upsert_workload(spec("w", lo=4, hi=4, budget=10.0))
    assert [r.workload_id for r in e.solve().infeasible] == ["w"]
    e.upsert_offers([OfferQuote(a.offer, 6.0, None, True, None, 0.0)])
    r = e.solve()
    assert not r.infeasible
    assert sorted((x.offer.instance_type, x.instances) for x in r.plan()["w"]) == [("a", 1), ("b", 1)]


def test_a_past_move_is_not_charged_again_in_later_objectives():
    """The migration cost of a move counts in the solve that makes it. A workload moved in one solve and
    not re-decided in the next used to keep that cost in the engine's objective (the warm objective drifted
    4 % above a cold solve after 20 steps at 1,000 x 10,000 with identical plans)."""
    a, b, c = quote(provider="gcp", price=1.0), quote(provider="aws", price=2.0), quote(provider="azure", price=3.0)
    e = PortfolioEngine(**NO_CONC)
    e.upsert_offers([a, b, c])
    e.upsert_workload(spec("w"))
    e.upsert_workload(spec("v", models={"H100-80GB": 1.0}))
    e.solve()
    e.upsert_offers([OfferQuote(b.offer, 0.2)])          # w moves from gcp to aws: migration charged now
    moved = e.solve()
    assert moved.plan()["w"][0].offer.provider == "aws"
    e.upsert_offers([OfferQuote(c.offer, 3.5)])          # an unrelated change: w is not re-decided
    later = e.solve()
    assert later.plan()["w"][0].offer.provider == "aws"
    cold = PortfolioEngine(**NO_CONC)
    cold.upsert_offers([a, OfferQuote(b.offer, 0.2), OfferQuote(c.offer, 3.5)])
    cold.upsert_workload(spec("w"))
    cold.upsert_workload(spec("v", models={"H100-80GB": 1.0}))
    cold.set_current_plan([x for v in e.plan.values() for x in v])
    assert later.objective == pytest.approx(cold.solve().objective, rel=1e-9)
    assert moved.objective > later.objective  # the move's one-off cost was in the solve that made it


def test_a_stale_plan_kept_on_its_known_offers_becomes_the_plan_in_force():
    """A plan holding an offer that is no longer known is stale; re-decided onto its remaining known rows,
    it is the plan in force from then on: no migration charged again in later solves."""
    from schemas.events import Assignment

    a, gone, h = quote(provider="gcp", price=1.0), quote(provider="aws", price=1.0), \
        quote(provider="azure", model="H100-80GB", price=9.0)
    specs = [spec("w", lo=1, hi=2), spec("v", models={"H100-80GB": 1.0})]
    e = PortfolioEngine(**NO_CONC)
    e.upsert_offers([a, h])
    for s_ in specs:
        e.upsert_workload(s_)
    e.set_current_plan([Assignment(workload_id="w", offer=a.offer, instances=1, usd_per_hour=1.0),
                        Assignment(workload_id="w", offer=gone.offer, instances=1, usd_per_hour=1.0)])
    first = e.solve()
    assert [(x.offer.provider, x.instances) for x in first.plan()["w"]] == [("gcp", 1)]
    e.upsert_offers([OfferQuote(h.offer, 9.5)])   # an unrelated price change: w is not re-decided
    later = e.solve()
    cold = PortfolioEngine(**NO_CONC)
    cold.upsert_offers([a, OfferQuote(h.offer, 9.5)])
    for s_ in specs:
        cold.upsert_workload(s_)
    cold.set_current_plan([x for v in first.plan().values() for x in v])
    assert later.objective == pytest.approx(cold.solve().objective, rel=1e-9)


def test_a_solve_adopts_its_plan_in_settle_and_before_any_other_call():
    """The adoption of a result into the model is deferred past the solve (`settle`, called by the decision
    stage once it has replied); any later call settles first, so results never depend on the caller."""
    a, b = quote(provider="gcp", price=1.0), quote(provider="aws", price=2.0)
    e = PortfolioEngine(**NO_CONC)
    e.upsert_offers([a, b])
    e.upsert_workload(spec("w"))
    e.solve()
    e.upsert_offers([OfferQuote(b.offer, 0.2)])
    assert e.solve().plan()["w"][0].offer.provider == "aws"    # w moves
    on_aws = ((e._oidx[b.key], 1),)
    assert e._inst is not None and e._inst.current["w"] != on_aws  # not adopted yet
    e.settle()
    assert e._inst.current["w"] == on_aws and e._deferred is None
    e.upsert_offers([OfferQuote(b.offer, 0.3)])
    e.solve()
    assert e.instance().current["w"] == on_aws                  # instance() settles first


def test_sorted_member_is_isin_for_sorted_unique_codes():
    import numpy as np

    from solvers.portfolio import _sorted_member
    rng = np.random.default_rng(0)
    for size in (0, 1, 5, 300):
        codes = np.unique(rng.integers(0, 500, size))
        x = rng.integers(-5, 510, 1000)
        assert (_sorted_member(x, codes) == np.isin(x, codes)).all()


def _cg_instance(seed: int = 7):
    """Many interchangeable offers and a master that starts with one column per workload: re-solves after
    an event need several column-generation rounds."""
    import numpy as np
    rng = np.random.default_rng(seed)
    models = ["L4", "A10G", "A100-80GB"]
    offers = [quote(provider=p, region=rg, model=m, gpus=g, spot=s, price=round(float(rng.uniform(0.5, 3)) * g, 3),
                    pi=0.03 if s else 0.0, cap=int(rng.integers(1, 4)), it=f"{m}-{g}x-{k}")
              for p in ("gcp", "aws") for rg in ("r1", "r2") for m in models for g in (1, 4) for s in (False, True)
              for k in range(3)]
    ws = [spec(f"w{i}", models={m: float(rng.uniform(0.5, 2)) for m in rng.choice(models, 2, replace=False)},
               lo=int(rng.choice([1, 2, 4])), budget=200.0, spot_share=float(rng.choice([0.0, 0.5, 1.0])))
          for i in range(40)]
    return offers, ws


def _placed(offers, ws, **kw):
    """A PortfolioEngine with these offers and workloads, solved once and settled."""
    e = PortfolioEngine(**kw)
    e.upsert_offers(offers)
    for w in ws:
        e.upsert_workload(w)
    first = e.solve()
    e.settle()
    return e, first


def _lost_capacity(e, offers, n=3):
    """The n offers holding the most instances, now unavailable."""
    from collections import Counter
    held = Counter(a.offer.key for v in e.plan.values() for a in v)
    by_key = {o.key: o for o in offers}
    return [OfferQuote(by_key[k].offer, by_key[k].usd_per_hour, None, False, by_key[k].capacity_instances,
                       by_key[k].interruption_probability_per_hour) for k, _ in held.most_common(n)]


@pytest.mark.parametrize("budget_s", [10.0, 1e-9])
def test_a_column_generation_budget_decides_on_one_run_and_warm_completes_the_lp(budget_s):
    """With `cg_budget_s`, a warm re-solve decides after one simplex run, or (when the run cannot finish in
    time) on the last optimal LP solution: a valid plan either way, off the lost offers, with no LP bound
    claimed. `warm()` then brings the LP to the full optimum (no column prices out), and stops when asked."""
    import numpy as np
    offers, ws = _cg_instance()
    engines = []
    for budget in (None, budget_s):
        e, first = _placed(offers, ws, initial_columns_per_workload=1, cg_budget_s=budget)
        assert first.lower_bound is not None            # the cold solve converges whatever the budget
        engines.append(e)
    full, budgeted = engines
    lost = _lost_capacity(full, offers)
    full.upsert_offers(lost)
    r_full = full.solve()
    assert full.last_timings["cg_rounds"] > 1, "the event must need several rounds for this test to mean anything"
    budgeted.upsert_offers(lost)
    r = budgeted.solve()
    assert budgeted.last_timings["cg_rounds"] == 1
    assert evaluate(budgeted.instance(), r.plan()).ok
    assert not ({a.offer.key for a in r.assignments} & {q.key for q in lost})
    assert r.lower_bound is None and r_full.lower_bound is not None
    M = budgeted._master
    assert M is not None and not M.converged
    assert M.optimal == (budget_s > 1)     # the run finished in time, or the last optimal solution stood
    calls = []
    budgeted.warm(lambda: calls.append(1) is None and len(calls) > 1)   # one more round, then stop
    assert not M.converged
    budgeted.warm(lambda: False)
    assert M.converged
    rc = M.price()
    avail = budgeted.instance().available[budgeted._pairs.o]
    assert (rc[avail & ~M.in_master] >= -1e-6 * (1 + np.abs(M.cost[avail & ~M.in_master]))).all()
    # the next solve starts from the completed LP: with nothing changed, it runs no simplex at all
    solves = budgeted.stats["lp_solves"]
    budgeted.solve()
    assert budgeted.stats["lp_solves"] == solves and M.converged


def test_with_a_zero_budget_the_decision_rests_on_the_last_optimal_lp_and_warm_catches_up():
    """`cg_budget_s=0`: a warm re-solve runs no simplex. The integer phase decides on the last optimal LP
    solution with the current availability (off the lost offers, a valid plan), and claims no LP bound;
    `warm()` then re-solves the LP to its optimum. Once the model has held unseen changes for longer than
    MAX_STALE_LP_S, a solve runs the simplex itself: a decision never rests on an LP that falls behind."""
    import solvers.portfolio.engine as eng
    offers, ws = _cg_instance()
    e, _ = _placed(offers, ws, initial_columns_per_workload=1, cg_budget_s=0.0)
    e.warm(lambda: False)
    M = e._master
    assert M is not None and M.converged and e._behind_since is None
    x_before = M.x.copy()
    solves = e.stats["lp_solves"]
    lost = _lost_capacity(e, offers)
    e.upsert_offers(lost)
    r = e.solve()
    assert e.stats["lp_solves"] == solves and e.stats["lp_deferred"] == 1 and e.last_timings["cg_rounds"] == 0
    assert (M.x == x_before).all() and not M.converged and e._behind_since is not None
    assert evaluate(e.instance(), r.plan()).ok
    assert not ({a.offer.key for a in r.assignments} & {q.key for q in lost})
    assert r.lower_bound is None
    e.warm(lambda: False)
    assert M.converged and e._behind_since is None and e.stats["lp_solves"] == solves
    # behind for too long (no warm() in between): the next solve runs the simplex
    e.upsert_offers([replace(q, available=True) for q in lost])
    e.solve()
    assert e.stats["lp_deferred"] == 2 and e._behind_since is not None
    e._behind_since -= eng.MAX_STALE_LP_S + 0.1
    e.upsert_offers(lost)
    e.solve()
    assert e.stats["lp_solves"] == solves + 1 and e.stats["lp_deferred"] == 2
    assert M.optimal and e._behind_since is None


def test_a_run_asked_to_stop_does_not_stop_the_runs_after_it():
    """HiGHS keeps a callback's interrupt in the callback input for the next run: a master that did not clear
    it would end every later run with a `stop` (each warm-up) at its first iteration, and never converge."""
    offers, ws = _cg_instance()
    e, _ = _placed(offers, ws, initial_columns_per_workload=1, cg_budget_s=1e-9)
    e.upsert_offers(_lost_capacity(e, offers))
    e.solve()
    M = e._master
    assert M is not None and not M.optimal          # the 1e-9 s run did not finish: iterations are left to do
    M.run(stop=lambda: True)
    assert not M.optimal                            # asked to stop at once, it stopped
    M.run(stop=lambda: False)
    assert M.optimal
    e.warm(lambda: False)
    assert M.converged


def test_with_a_budget_the_lp_driven_re_decisions_are_spread_over_solves(monkeypatch):
    """With `cg_budget_s`, workloads re-decided only because their LP values moved (no event touches their
    plan) are capped per solve, less those an event forces; the others wait their turn and are re-decided by
    later solves. Workloads an event displaces are never deferred."""
    import solvers.portfolio.incremental as inc
    monkeypatch.setattr(inc, "LP_REDECIDE_PER_SOLVE", 2)
    monkeypatch.setattr(inc, "LP_REDECIDE_MIN", 1)
    offers, ws = _cg_instance(seed=3)
    e, _ = _placed(offers, ws, initial_columns_per_workload=1, cg_budget_s=10.0)
    lost = _lost_capacity(e, offers, n=4)
    e.upsert_offers(lost)
    r = e.solve()
    assert not ({a.offer.key for a in r.assignments} & {q.key for q in lost})   # the displaced moved now
    e.warm(lambda: False)                           # the LP converges: many workloads' LP values move
    # an event displaces workloads too: the LP-driven re-decisions that solve are cut to the minimum
    e.upsert_offers(_lost_capacity(e, offers, n=1))
    e.solve()
    e.settle()
    t = e.last_timings
    assert t["affected_forced"] >= 1 and t["affected_lp"] > 1 and t["affected_now"] - t["affected_forced"] == 1
    waiting = []
    for _ in range(len(ws)):
        r = e.solve()
        e.settle()
        assert evaluate(e.instance(), r.plan()).ok
        t = e.last_timings
        assert t["affected_now"] - t["affected_forced"] <= max(1, 2 - t["affected_forced"])
        waiting.append(len(e._cache.lp_dirty))
        if not waiting[-1]:
            break
    assert max(waiting) > 2, "the LP must move for more workloads than one solve re-decides"
    assert waiting[-1] == 0                          # every deferred workload had its turn


def test_the_lp_time_limit_is_per_run_not_over_the_models_lifetime():
    """HiGHS's run clock adds up over all runs of a model. A long-lived engine must not find every run cut
    short once the model has run for `lp_time_limit_s` in total (here: after its first solve)."""
    offers, ws = _cg_instance()
    e, _ = _placed(offers, ws, initial_columns_per_workload=1, lp_time_limit_s=0.5)
    M = e._master
    M.h.setOptionValue("time_limit", 1.0)
    while M.h.getRunTime() < 0.6:   # the model's clock past the limit, as after a long run of events
        M.h.run()
    for q in _lost_capacity(e, offers):
        e.upsert_offers([q])
        r = e.solve()
        e.settle()
        assert M.optimal and M.converged and r.lower_bound is not None


@pytest.mark.parametrize("seed", [5, 11])
def test_refreshing_a_runner_up_that_got_dearer_equals_re_deciding_the_workload(seed):
    """A workload whose runner-up got dearer or went (its plan untouched) keeps its decision and only has
    its runner-up found again: plans and explanations equal those of an engine that re-decides it. (With
    known capacities the runner-up may differ: a refresh sees the capacity everyone holds after the solve,
    a re-decision the capacity left at its turn.)"""
    import numpy as np
    rng = np.random.default_rng(seed)
    models = ["L4", "A10G"]
    offers = [quote(provider=p, region=rg, model=m, gpus=g, spot=s, price=round(float(rng.uniform(0.5, 3)) * g, 3),
                    pi=0.05 if s else 0.0, it=f"{m}-{g}x-{k}")
              for p in ("gcp", "aws") for rg in ("r1", "r2") for m in models for g in (1, 2) for s in (False, True)
              for k in range(2)]
    ws = [spec(f"w{i}", models={m: 1.0 for m in rng.choice(models, int(rng.integers(1, 3)), replace=False)},
               lo=(lo := int(rng.choice([1, 2]))), hi=lo, budget=20.0 * lo, spot_share=float(rng.choice([0.0, 1.0])))
          for i in range(20)]
    engines = []
    for refresh in (True, False):
        e, _ = _placed(offers, ws)
        e.refresh_runners = refresh     # (the first solve decides every workload anyway)
        engines.append(e)
    refreshed = 0
    for step in range(10):
        runners = [x.runner_up for x in engines[0]._cache.expl.values() if x.runner_up]
        keys = set(rng.choice(np.array(runners, dtype=object), min(3, len(runners)), replace=False))
        by_key = {o.key: o for o in offers}
        changed = [OfferQuote(by_key[k].offer, by_key[k].usd_per_hour * float(rng.choice([1.05, 1.3])), None,
                              bool(rng.random() > 0.3), by_key[k].capacity_instances,
                              by_key[k].interruption_probability_per_hour) for k in keys]
        refreshed += _step_alike(engines, changed, step, "runner_refreshed")
        offers = [next((c for c in changed if c.key == o.key), o) for o in offers]
    assert refreshed, "no runner-up was refreshed: the test exercised nothing"


def _step_alike(engines, changed, step, counter):
    """Apply `changed` to both engines and solve: the same plans, objectives, chosen offers and runners-up.
    Returns the first engine's `last_timings[counter]`."""
    results = []
    for e in engines:
        e.upsert_offers(changed)
        results.append(e.solve())
        e.settle()
    a, b = results
    assert a.plan() == b.plan(), step
    assert a.objective == pytest.approx(b.objective), step
    for wid, x in engines[1]._cache.expl.items():
        y = engines[0]._cache.expl[wid]
        assert (y.runner_up, y.chosen) == (x.runner_up, x.chosen), (step, wid)
        if x.runner_up_delta_usd_per_hour is not None:
            assert y.runner_up_delta_usd_per_hour == pytest.approx(x.runner_up_delta_usd_per_hour), (step, wid)
    return int(engines[0].last_timings.get(counter, 0))


@pytest.mark.parametrize("seed", [3, 4])
def test_a_plan_whose_offers_moved_in_market_price_only_is_repriced_like_a_re_decision(seed):
    """Offers priced for planning by a forecast in force: a market price move leaves every candidate's
    cost as it was, so a plan of several offers keeps its decision at the new prices (`reprice_plans`),
    with the plan, objective and explanation an engine that re-decides it finds; moves that cross a
    budget are re-decided."""
    import numpy as np
    rng = np.random.default_rng(seed)
    models = ["L4", "A10G"]
    offers = []
    for p in ("gcp", "aws"):
        for m in models:
            for k in range(4):
                price = round(float(rng.uniform(0.5, 2.0)), 3)
                offers.append(quote(provider=p, region="r1", model=m, gpus=1, price=price, forecast=price,
                                    cap=int(rng.integers(1, 3)), it=f"{m}-{k}"))
    ws = [spec(f"w{i}", models={m: 1.0 for m in rng.choice(models, 2, replace=False)},
               lo=(lo := int(rng.choice([2, 3]))), hi=lo, budget=float(rng.choice([3.0, 4.5, 9.0])))
          for i in range(6)]
    engines = []
    for reprice in (True, False):
        e, _ = _placed(offers, ws, joint_time_limit_s=0.0)   # (the equivalence is of the sequential pass)
        e.reprice_plans = reprice
        engines.append(e)
    repriced = 0
    for step in range(12):
        held = sorted({a.offer.key for v in engines[0].plan.values() if len(v) > 1 for a in v})
        if not held:
            break
        keys = set(rng.choice(np.array(held, dtype=object), min(2, len(held)), replace=False))
        changed = [OfferQuote(o.offer, round(o.usd_per_hour * float(rng.choice([0.8, 0.95, 1.05, 1.6])), 4),
                              o.forecast_usd_per_hour, o.available, o.capacity_instances,
                              o.interruption_probability_per_hour) for o in offers if o.key in keys]
        repriced += _step_alike(engines, changed, step, "repriced")
        assert evaluate(engines[0].instance(), engines[0].plan).ok, step
        for wid, x in engines[1]._cache.expl.items():
            y = engines[0]._cache.expl[wid]
            assert sorted(y.binding_constraints) == sorted(x.binding_constraints), (step, wid)
            assert y.usd_per_hour == pytest.approx(x.usd_per_hour), (step, wid)
        offers = [next((c for c in changed if c.key == o.key), o) for o in offers]
    assert repriced, "no plan was repriced: the test exercised nothing"


def test_a_one_offer_plan_is_re_decided_when_its_market_price_rises_over_the_budget():
    """The planning price (a forecast in force) is unchanged, but the budget is on market prices."""
    cheap = quote(region="a", price=1.0, forecast=1.0)
    other = quote(region="b", price=1.5)
    e, first = _placed([cheap, other], [spec("w", budget=2.0)])
    assert first.plan()["w"][0].offer.key == cheap.key
    e.upsert_offers([OfferQuote(cheap.offer, 2.5, 1.0, True, None, 0.0)])
    r = e.solve()
    assert r.plan()["w"][0].offer.key == other.key
    assert evaluate(e.instance(), e.plan).ok


def test_keep_columns_in_the_lp_hold_the_plans_in_force_as_workloads_move():
    """A moved workload's keep column is reused, rewriting only the coefficients that differ (`set_keeps`):
    after moves between offers of other groups, regions and capacity rows, each live keep column in HiGHS
    holds exactly the coefficients, cost and bounds of the plan in force, and tombstones are closed."""
    import numpy as np
    rng = np.random.default_rng(7)
    models = ["L4", "A10G", "H100-80GB"]
    offers = [quote(provider=p, region=rg, model=m, gpus=g, spot=s, price=round(float(rng.uniform(0.5, 3)) * g, 3),
                    cap=int(rng.integers(2, 6)) if rng.random() < 0.5 else None)
              for p in ("gcp", "aws") for rg in ("r1", "r2") for m in models for g in (1, 4) for s in (False, True)]
    ws = [spec(f"w{i}", models={m: 1.0 for m in rng.choice(models, 2, replace=False)}, lo=int(rng.choice([1, 2, 4])),
               spot_share=float(rng.choice([0.0, 0.5, 1.0]))) for i in range(10)]
    e = PortfolioEngine(migration_threshold_usd_per_hour=0.0, migration_threshold_fraction=0.0)
    e.upsert_offers(offers)
    for w in ws:
        e.upsert_workload(w)
    e.solve()
    moved = 0
    for _ in range(12):
        e.settle()
        inst, M = e._inst, e._master
        assert inst is not None and M is not None
        for w, wid in enumerate(inst.ids):
            col = int(M.keep_col[w])
            rows = inst.current.get(wid)
            if col < 0:
                continue
            assert M.keep_rows[w] == rows
            _, cost, lo, up, _ = M.h.getCol(col)
            _, idx, val = M.h.getColEntries(col)
            want = {}
            for o, n in rows:
                g = float(inst.gpus[o]) * n
                for r, v in ((M.r_min[w], g), (M.r_max[w], g), (M.r_bud[w], n * float(inst.price[o])),
                             (M.r_spot[w], (float(inst.spot[o]) - float(inst.spot_share[w])) * g),
                             (M.r_cap[o], n), (M.r_grp[inst.group[o]], g), (M.r_tot, g)):
                    if r >= 0:
                        want[int(r)] = want.get(int(r), 0.0) + v
            assert {int(i): v for i, v in zip(idx, val, strict=True) if v != 0.0} == \
                pytest.approx({r: v for r, v in want.items() if v != 0.0})
            assert (cost, lo, up) == pytest.approx((inst.rows_cost(w, rows), 0.0, 1.0))
        live = {int(c) for c in M.keep_col if c >= 0}
        for col, _ in M.keep_slot.values():
            if col not in live:
                assert M.h.getCol(col)[3] == 0.0          # a tombstone: upper bound 0
        # the cheapest offers in use lose capacity or get dearer: their workloads move
        held = sorted({o for rows in inst.current.values() for o, _ in rows})
        hit = [inst.keys[o] for o in rng.choice(held, min(2, len(held)), replace=False)]
        before = dict(inst.current)
        e.upsert_offers([OfferQuote(q.offer, q.usd_per_hour * 3, None, bool(rng.random() < 0.5),
                                    q.capacity_instances, 0.0) for q in offers if q.key in hit])
        e.upsert_offers([OfferQuote(q.offer, q.usd_per_hour, None, True, q.capacity_instances, 0.0)
                         for q in offers if q.key not in hit and rng.random() < 0.2])
        e.solve()
        e.settle()
        moved += sum(e._inst.current.get(wid) != rows for wid, rows in before.items())
    assert moved >= 10


@pytest.mark.parametrize("change, redecided", [
    ("rise", False), ("fall_within_budget", True), ("back_in_stock", True), ("more_capacity", True)])
def test_a_workload_without_a_plan_is_re_decided_only_when_an_offer_got_better_for_it(change, redecided):
    """No plan fits w (over budget, out of stock, full): a price rise of a matching offer, even one within its
    budget, cannot give it one, so it is not re-decided (nor diagnosed) again; a fall, a return to stock or
    new capacity can."""
    # (a is over w's budget, but the LP relaxation places w on it in part; it leaves d, dearer still, alone)
    offers = [quote(region="a", price=3.0), quote(region="b", price=1.0, available=False),
              quote(region="c", price=1.0, cap=1), quote(region="d", price=4.0)]
    e, first = _placed(offers, [spec("hog", lo=1, budget=5.0, priority=3), spec("w", lo=1, budget=2.0)])
    assert "w" not in first.plan() and "w" in {r.workload_id for r in first.infeasible}
    _, b, c, a = offers
    new = {"rise": OfferQuote(c.offer, 1.2, capacity_instances=1), "fall_within_budget": OfferQuote(a.offer, 1.5),
           "back_in_stock": OfferQuote(b.offer, 1.0), "more_capacity": OfferQuote(c.offer, 1.0, capacity_instances=2)}
    e.upsert_offers([new[change]])
    r = e.solve()
    assert r.redecided is not None and ("w" in r.redecided) == redecided
    assert ("w" in r.plan()) == redecided
    assert evaluate(e.instance(), e.plan).ok


def test_the_lp_support_per_workload_is_what_each_workloads_pairs_hold_in_the_lp():
    """`_Master.lp_support` (computed once per LP solution) equals, per workload, the pairs whose master
    column has a positive value in it, with those values; it follows each new solution."""
    import numpy as np
    rng = np.random.default_rng(5)
    offers = [quote(provider=p, region=rg, model=m, gpus=g, price=round(float(rng.uniform(0.5, 3)) * g, 3),
                    cap=int(rng.integers(1, 4)) if rng.random() < 0.5 else None)
              for p in ("gcp", "aws") for rg in ("r1", "r2") for m in ("L4", "A10G") for g in (1, 4)]
    ws = [spec(f"w{i}", models={"L4": 1.0, "A10G": float(rng.uniform(0.5, 2))}, lo=int(rng.choice([1, 2, 4, 8])))
          for i in range(8)]
    e, _ = _placed(offers, ws)
    for _ in range(3):
        M, P = e._master, e._pairs
        sup, val, ptr = M.lp_support()
        for w in range(len(ws)):
            s, t = int(P.ptr[w]), int(P.ptr[w + 1])
            pc = M.pair_col[s:t]
            x = np.array([M.x[c] if 0 <= c < M.x.size else 0.0 for c in pc])
            assert sup[ptr[w]:ptr[w + 1]].tolist() == (s + np.flatnonzero(x > 1e-7)).tolist()
            assert val[ptr[w]:ptr[w + 1]].tolist() == x[x > 1e-7].tolist()
        e.upsert_offers([OfferQuote(q.offer, q.usd_per_hour * float(rng.uniform(0.5, 1.5)), None, True,
                                    q.capacity_instances, 0.0) for q in offers])
        e.solve()
        e.settle()   # (the next round checks the support against the new solution)


@pytest.mark.parametrize("chunk", [3, 7])
def test_a_pricing_interrupted_part_way_leaves_the_cache_consistent(monkeypatch, chunk):
    """`_Master.price(stop)` re-prices in chunks and gives up when `stop()` turns true; the pairs re-priced
    so far are marked dirty, so the next pricing still equals reduced costs computed afresh, however the
    duals moved in between (also back to the cached ones)."""
    import numpy as np

    import solvers.portfolio.pricing as pricing
    monkeypatch.setattr(pricing, "PRICE_CHUNK", chunk)
    rng = np.random.default_rng(2)
    offers = [quote(provider=p, region=rg, model=m, gpus=g, price=round(float(rng.uniform(0.5, 3)) * g, 3))
              for p in ("gcp", "aws") for rg in ("r1", "r2", "r3") for m in ("L4", "A10G") for g in (1, 4)]
    ws = [spec(f"w{i}", models={"L4": 1.0, "A10G": 1.5}, lo=int(rng.choice([1, 2, 4, 8]))) for i in range(12)]
    e, _ = _placed(offers, ws)
    M = e._master
    M.price()
    y0 = M.y.copy()
    stopped = 0
    for k in range(40):
        # duals move in a few rows and some pairs' costs change; a pricing is cut short; then the duals
        # move again, or back to those the cache was priced at (every 5th time, from no cache: a full pricing)
        cached = M._y_rc.copy()
        if k % 5 == 4:
            M._rc = None
        M.y = cached.copy()
        M.y[rng.choice(y0.size, 2, replace=False)] += rng.normal(0, 0.1, 2)
        pidx = rng.choice(M.pairs.size, 5, replace=False)
        M.cost[pidx] *= rng.uniform(0.9, 1.1, 5)
        M.mark_dirty(pidx)
        calls = iter(range(int(rng.integers(1, 4))))
        if M.price(stop=lambda calls=calls: next(calls, None) is None) is None:
            stopped += 1
        if rng.random() < 0.5:
            M.y = cached.copy()
        assert np.allclose(M.price(), M.reduced_costs(), rtol=0, atol=1e-12)
    assert stopped >= 5


def test_an_offer_over_capacity_indicts_only_the_plans_on_it():
    # w2 holds both instances of x; x's capacity drops to 1 (w2 is not re-decided), then w1 is placed on y
    x, y = quote(model="L4", it="x", cap=2), quote(model="T4", it="y")
    e = PortfolioEngine(**NO_CONC)
    e.upsert_offers([x, y])
    e.upsert_workload(spec("w2", {"L4": 1.0}, lo=2))
    assert [a.offer.instance_type for a in e.solve().plan()["w2"]] == ["x"]
    e.upsert_offers([OfferQuote(x.offer, x.usd_per_hour, capacity_instances=1)])
    e.upsert_workload(spec("w1", {"T4": 1.0}))
    r = e.solve({"w1"})
    assert [a.offer.instance_type for a in r.plan()["w1"]] == ["y"] and not r.infeasible
