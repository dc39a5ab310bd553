"""The CP-SAT placement over candidate plans: optimal against brute force on small random instances,
never over capacity or quota (checked by `check`, which shares no code with the model)."""

from __future__ import annotations

import itertools
import random

from solvers.cpsat import PlacementProblem, check, solve


def random_problem(rng: random.Random) -> PlacementProblem:
    n_offers = rng.randint(2, 5)
    options = []
    for _ in range(rng.randint(1, 4)):
        opts = []
        for _ in range(rng.randint(1, 3)):
            rows = tuple(sorted({(rng.randrange(n_offers), rng.randint(1, 3)) for _ in range(rng.randint(1, 2))}))
            opts.append((rows, round(rng.uniform(1, 50), 2)))
        options.append(tuple(opts))
    gpi = tuple(rng.choice([1, 2, 8]) for _ in range(n_offers))
    quotas = tuple((rng.randint(0, 24), frozenset(rng.sample(range(n_offers), rng.randint(1, n_offers))))
                   for _ in range(rng.randint(0, 2)))
    return PlacementProblem(options=tuple(options), unplaced_usd=tuple(200.0 for _ in options),
                            capacity=tuple(rng.choice([None, 1, 2, 4]) for _ in range(n_offers)),
                            gpus_per_instance=gpi, quotas=quotas, names=tuple(f"q{i}" for i in range(len(quotas))))


def brute_force(p: PlacementProblem) -> float:
    best = float("inf")
    for choice in itertools.product(*[[None, *range(len(o))] for o in p.options]):
        if not check(p, choice):
            best = min(best, p.cost(choice))
    return best


def test_cp_sat_is_optimal_and_feasible_on_random_small_instances() -> None:
    rng = random.Random(11)
    for _ in range(60):
        p = random_problem(rng)
        s = solve(p, time_limit_s=5.0)
        assert s.status == "OPTIMAL"
        assert check(p, s.choice) == []
        assert abs(s.objective - brute_force(p)) < 1e-6
        assert s.bound <= s.objective + 1e-6


def test_a_joint_choice_beats_placing_workloads_one_at_a_time() -> None:
    """Workload 0 alone prefers offer 0; workload 1 can only use offer 0, which has room for one of them."""
    p = PlacementProblem(options=(((((0, 1),), 10.0), (((1, 1),), 11.0)), ((((0, 1),), 10.0),)),
                         unplaced_usd=(500.0, 500.0), capacity=(1, None))
    sequential = (0, None)   # what a workload-by-workload pass in this order gets
    assert p.cost(sequential) == 510.0 and check(p, sequential) == []
    s = solve(p, time_limit_s=2.0, hint=sequential)
    assert s.choice == (1, 0) and s.objective == 21.0


def test_a_quota_binds_across_workloads() -> None:
    p = PlacementProblem(options=(((((0, 2),), 10.0),), ((((1, 2),), 10.0), (((2, 1),), 30.0))),
                         unplaced_usd=(500.0, 500.0), capacity=(None, None, None), gpus_per_instance=(8, 8, 8),
                         quotas=((16, frozenset({0, 1})),), names=("gcp/us-central1/H100",))
    s = solve(p, time_limit_s=2.0)
    assert s.choice == (0, 1) and check(p, s.choice) == []
    assert check(p, (0, 0)) == ["quota gcp/us-central1/H100: 32 GPUs > 16"]
