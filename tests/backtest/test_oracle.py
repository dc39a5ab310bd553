"""The hindsight oracle: its shortest path equals brute force over every sequence of places on small random
markets, and no fixed schedule of admissible placements is cheaper (it is a lower bound)."""

from __future__ import annotations

import itertools
import math
import random

from backtest.oracle import Oracle, gang_plans
from schemas.events import WorkloadSpec
from schemas.market import OfferQuote
from schemas.offers import Market, OfferKey

SPEC = WorkloadSpec(workload_id="w", gpu_throughput={"H100-80GB": 1.0}, min_gpus=16, max_gpus=16,
                    budget_usd_per_hour=500.0, restart_overhead_h=0.5, state_gb=100.0, max_spot_share=0.5)


def quote(provider: str, region: str, usd: float, market: Market = Market.ON_DEMAND, up: bool = True) -> OfferQuote:
    o = OfferKey(provider=provider, region=region, instance_type="p5.48xlarge", gpu_model="H100-80GB",
                 gpus_per_instance=8, market=market)
    return OfferQuote(o, usd, available=up)


def market(rng: random.Random) -> list[OfferQuote]:
    out = []
    for p, r in (("aws", "us-east-1"), ("gcp", "us-central1"), ("azure", "eastus")):
        out.append(quote(p, r, rng.uniform(20, 60), up=rng.random() > 0.2))
        out.append(quote(p, r, rng.uniform(5, 30), Market.SPOT, up=rng.random() > 0.4))
    return out


def brute_force(steps: list[list[OfferQuote]], hours: list[float]) -> float:
    """Every sequence of (place or unplaced) per instant; among those that run whenever possible, the cheapest
    with moves charged restart + egress; its cost with the egress only (the bound the oracle reports)."""
    plans = [gang_plans(SPEC, qs) for qs in steps]
    choices = [[*p.keys()] or [""] for p in plans]
    best, best_usd = math.inf, math.inf
    egress = {"aws": 0.09, "gcp": 0.12, "azure": 0.087}
    for seq in itertools.product(*choices):
        obj, usd, prev = 0.0, 0.0, None
        for i, s in enumerate(seq):
            if s:
                rate = plans[i][s][0]
                if prev and s != prev:
                    obj += SPEC.restart_overhead_h * rate
                    if plans[i - 1][prev][2] != plans[i][s][2]:
                        usd += SPEC.state_gb * egress[plans[i - 1][prev][2]]
                        obj += SPEC.state_gb * egress[plans[i - 1][prev][2]]
                elif prev is None and i > 0 and any(plans[:i]):
                    obj += SPEC.restart_overhead_h * rate
                usd += rate * hours[i]
                obj += rate * hours[i]
            prev = s or None
        if obj < best:
            best, best_usd = obj, usd
    return best_usd


def test_the_oracle_is_the_shortest_path_over_places() -> None:
    rng = random.Random(5)
    for _ in range(40):
        n = rng.randint(1, 4)
        steps = [market(rng) for _ in range(n)]
        hours = [rng.choice([0.5, 1.0, 3.0]) for _ in range(n)]
        o = Oracle()
        t = 0.0
        for qs, h in zip(steps, hours, strict=True):
            o.observe(t, qs, [SPEC])
            t += h * 3600
        got = o.finish(t)["w"]
        assert abs(got["usd"] - brute_force(steps, hours)) < 1e-6
        runnable = sum(h for qs, h in zip(steps, hours, strict=True) if gang_plans(SPEC, qs))
        assert abs(got["gpu_hours"] - 16 * runnable) < 1e-6   # it runs whenever some place can host it


def test_a_gang_plan_is_one_place_within_the_spot_share() -> None:
    plans = gang_plans(SPEC, [quote("aws", "us-east-1", 40.0), quote("aws", "us-east-1", 10.0, Market.SPOT),
                              quote("gcp", "us-central1", 10.0, Market.SPOT)])
    # aws: one spot + one on-demand instance (spot share 0.5); gcp: spot only would exceed the share
    assert plans == {"aws|us-east-1||p5.48xlarge|H100-80GB": (50.0, 16, "aws")}


def test_skipping_workloads_whose_offers_did_not_change_gives_the_same_bound() -> None:
    rng = random.Random(8)
    for _ in range(20):
        steps = [market(rng) for _ in range(rng.randint(2, 6))]
        for i in range(1, len(steps)):   # most offers keep their quote from one instant to the next
            steps[i] = [q if rng.random() < 0.7 else p for p, q in zip(steps[i - 1], steps[i], strict=True)]
        full, lazy = Oracle(), Oracle()
        prev: dict[str, OfferQuote] = {}
        for i, qs in enumerate(steps):
            by_key = {q.key: q for q in qs}
            changed = {k for k, q in by_key.items() if prev.get(k) != q}
            full.observe(i * 3600.0, qs, [SPEC])
            lazy.observe(i * 3600.0, by_key, [SPEC], changed)
            prev = by_key
        assert full.finish(len(steps) * 3600.0) == lazy.finish(len(steps) * 3600.0)


def test_the_backtest_report_has_the_oracle_and_every_strategys_regret() -> None:
    from pathlib import Path

    from backtest.portfolio import load_portfolio
    from backtest.report import build_report
    from backtest.sim import BacktestConfig, run_backtest

    root = Path(__file__).resolve().parents[2]
    r = run_backtest(BacktestConfig(data_dir=root / "data" / "sample", progress=False),
                     load_portfolio(root / "examples" / "portfolios" / "inference-fleet.yaml"))
    rep = build_report(r)
    o = rep["oracle"]
    assert o["total_cost_usd"] > 0 and o["cost_per_delivered_gpu_hour"] > 0
    for name, st in rep["strategies"].items():
        assert st["regret_pct_vs_oracle"] is not None, name
        # it runs every workload whenever some place could host it: no strategy delivers more
        assert o["delivered_share"] >= st["delivered_share"] - 1e-6, name
