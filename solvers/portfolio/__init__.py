"""The portfolio allocation engine: column generation over a live HiGHS LP, then round/repair (and CP-SAT).

THE MODEL
=========
Data (solvers/instance.py): offers o with GPUs g_o, price now p_o, planning (forecast) price p^_o,
capacity cap_o (instances, maybe unknown = inf), interruption probability per hour pi_o, spot flag
s_o, group G(o) = (provider, region, market); workloads w with throughput per GPU t_wm of each
accepted GPU model m, best accepted t*_w, GPU bounds [L_w, U_w], budget B_w, max spot share S_w,
restart overhead rho_w hours, co-location flag, priority prio_w; the plan in force x^cur.

Variables: x_wo in Z+ instances of offer o for workload w (only pairs with an accepted GPU model,
an allowed provider and g_o <= U_w exist); u_w in [0,1] "not placed"; z_w in {0,1} "keep the
current plan" (a composite column: the whole current plan of w); e_G >= 0 GPUs of group G above
the concentration cap; T = total portfolio GPUs.

Unit cost (USD per hour of the workload's best GPU, i.e. cost per delivered throughput-hour,
risk-adjusted):
    c_wo = p^_o * (t*_w / t_w,m(o)) * (1 + lambda * pi_o * rho_w)        # expected interruption cost
         + lambda * mu_w * g_o                                           # migration (hysteresis)
    mu_w = theta_w / GPUs(x^cur_w),  theta_w = max(theta_abs, theta_rel * cost(x^cur_w))
  (the keep column z_w costs the current plan's c without the migration term)

    min  sum_wo c_wo x_wo + sum_w c^keep_w z_w + lambda * kappa_pen * sum_G e_G + sum_w M_w u_w
    s.t. sum_o g_o x_wo + g^cur_w z_w + L_w u_w >= L_w               (GPU floor, or unplaced)
         sum_o g_o x_wo + g^cur_w z_w + U_w u_w <= U_w               (GPU ceiling)
         sum_o p_o x_wo + p^cur_w z_w <= B_w                         (budget, at today's price)
         sum_o (s_o - S_w) g_o x_wo + (...)z_w <= 0                   (spot share, when S_w < 1)
         sum_w x_wo + sum_w n^cur_wo z_w <= cap_o                    (capacity, when known)
         sum_{o in G} g_o x_wo (+ keep) - kappa T - e_G <= 0          (concentration soft cap)
         sum_o g_o x_wo (+ keep) - T = 0
         co-location (all of w's instances in one region): enforced in the integer phase only
  M_w = prio_w * (unplaced_penalty + 100 B_w): placing is always preferred; higher priority wins
  contention. The LP relaxation (x, z continuous) is the lower bound we report.

Hysteresis, hard rule (integer phase): a workload whose current plan is still feasible moves only
if the new plan's objective (without migration term) saves at least theta_w.

Placement rules (solvers/placement.py; issue 21). Offers carry their place P(o) = (provider, region,
zone, instance type, GPU model), their provider's egress e_o (USD/GB) and interconnect facts; workloads
their topology, replica size r_w, interconnect need, shares sigma^prov_w / sigma^reg_w, state s_w (GB).
  * pairs: (w, o) exists only if the interconnect holds for one instance of o and, for replicas with r_w,
    g_o = r_w (never valid otherwise: no column, no LP mass on it);
  * gang: all of w's instances in one place: sum over places of [w uses the place] <= 1, spot and
    on-demand of the place mixed within S_w; the interconnect holds for the plan's total instance count
    (InfiniBand: a fabric between several nodes);
  * replicas: every row of offers with g_o = r_w; per provider p: sum_{o in p} g_o x_wo <= sigma^prov_w G_w,
    per (provider, region) likewise with sigma^reg_w;
  * quotas q (provider, region or all, GPU model or family; limit Q_q), portfolio-wide:
        sum_w sum_{o covered by q} g_o x_wo <= Q_q.
  The LP carries none of these rows (the pair filter aside): it stays the same live model with the same
  warm starts, and its optimum is still a valid lower bound (a relaxation of a more constrained problem),
  only a weaker one for gangs (the LP may split a gang over places), share-limited replicas and binding
  quotas. They are enforced in the integer phase: the LP rounding of a gang keeps only the place with the
  most LP mass (x_wo g_o) among w's support and fills only from that place; a gang's other candidates are
  single-offer plans (one place by construction) and, when the spot share is strictly between 0 and 1 (or
  no single offer fits), the cheapest place mixing its spot and on-demand offers (`placement.gang_plans`);
  share-limited replicas are filled from scratch across providers and regions (the cheapest offers of each);
  quota headroom is tracked like `cap_left` (what every workload not re-decided holds, then each decision in
  priority order), so no candidate exceeds a quota; the plan in force is kept only if it is still valid
  (rules and quotas included). `evaluate` re-checks all of it independently, quotas over the whole portfolio.

Moves (integer phase). Moving w from x^cur_w to x costs once
    C_move(w, x) = (rho_w + s_w * 8 / (3600 * bw)) * usd(x)                # restart + transfer hours
                   + s_w * max_{o in x^cur_w} e_o * [x uses a provider x^cur_w does not]   # egress
  (bw = move_bandwidth_gbps; transfer hours charged at the new plan's USD/h; no egress within a provider).
  A candidate move's metric adds lambda * (C_move - rho_w usd(x)) / H (the state's part, amortised over
  the payback horizon H = payback_horizon_h; the restart part is priced by theta_w and pi_o rho_w already),
  and the same share enters the objective (`evaluate`) for a workload that moves. Hard rule: a move whose
  saving per hour Delta (the hysteresis metric above) has Delta < theta_w or Delta * H < C_move(w, x) is not
  made (binding "payback"); a plan in force that is no longer valid moves regardless.

LAYOUT (each module has its part of the maths beside its code)
==============================================================
  engine.py       the facade `PortfolioEngine`: upsert/remove/settle/warm/solve, rebuild, in-place sync,
                  adoption of a result into the LP (`_adopt`); `solve_once`
  pairs.py        candidate pairs (w, o) as flat arrays (`Pairs`, `build_pairs`), their unit costs
                  (`pair_costs`), a plan's metric (`rows_metric`)
  master.py       the restricted master LP in highspy (`Master`), keep columns, column generation
  pricing.py      reduced costs, full and partial pricing (the `Pricing` half of `Master`)
  cache.py        the integer phase's typed decision cache (`DecisionCache`)
  incremental.py  which workloads a solve re-decides, and the in-place updates of decisions that stand
  candidates.py   one workload's candidate plans and choice against the plan in force (`decide`)
  integer.py      the integer phase, step by step (`integer_phase`), with the joint CP-SAT pass
                  (solvers/joint.py, solvers/cpsat.py)
  idle.py         CP-SAT in idle time (`PortfolioEngine.warm`): every workload's plans at once, hinted with
                  the plan in force; an improvement is a candidate of the next solve, never adopted by warm
  explain.py      explanations and `diagnose` (infeasibility reports)
  bounds.py       lower bounds: `integer_lower_bound` (Lagrangian, whole instances per workload)

SOLUTION METHOD (and why)
=========================
* Candidate pairs (w, o) are flat numpy arrays (CSR by workload, ~1-3M at 1,000 x 10,000); costs,
  coefficients and reduced costs are computed vectorised, never per element in Python.
* Column generation: the restricted master starts with the K cheapest columns per workload (and the
  current plan); each round prices every pair in numpy, rc = c - a^T y, and adds the most negative
  few per workload, until no rc < 0: the restricted LP is then optimal for the full LP. Dominated
  offers (same rows, higher cost) never price out before their dominator, so CG prunes them
  implicitly and no explicit dominance pass is kept in sync with price events.
* HiGHS (highspy) keeps the model and the simplex basis alive between calls. Price / risk /
  availability / capacity events change costs, coefficients and bounds in place (changeColsCost,
  changeCoeff, changeColsBounds, changeRowsBounds) and the next run is a warm dual/primal simplex.
  Chosen over OR-Tools: pywraplp re-extracts the whole model on every Solve() (measured in the
  earlier probe); MathOpt's incremental GLOP would also do, but highspy gives in-place updates with
  the basis kept, row duals and column reduced costs directly, and is the solver scipy's MILP
  baseline uses too. Exact MILP did not finish beyond toy sizes; CP-SAT chooses among candidate plans
  instead (the joint pass of competing workloads in a solve, and over every workload in idle time).
* Reduced-cost screen: when every changed column has x = 0 and still prices out non-negative
  against the current duals, the LP optimum is provably unchanged and the LP is not re-solved.
* Partial pricing: after a warm re-solve only pairs whose duals (workload rows, group rows,
  capacity rows) or costs moved are re-priced; the rest keep their exact previous reduced cost.
* Optional budget (`cg_budget_s`): a warm re-solve runs the simplex once, time-limited, and decides on
  the restricted master's optimum, or on the last optimal solution when the run is cut short;
  `warm(stop)` completes column generation between decisions (interruptible mid-run).
* Integer phase (per workload, priority order, capacity tracked): candidates are (a) the LP support
  rounded down and repaired greedily to whole instances, (b) the best single-offer plan, (c) the
  current plan (hysteresis); pick the cheapest under the LP's concentration prices. (b) makes the
  plan never worse than the cheapest-feasible greedy rule per workload. On large re-decisions
  (> 64 workloads, e.g. cold) a second pass that holds each workload's rounded-down LP capacity
  for it runs when the first pass broke such a holding; the cheaper pass wins. `evaluate`
  re-checks the re-decided workloads against the instance (and the capacity everyone else
  holds) before anything is returned.
* Incremental integer phase: decisions are cached per workload and only re-made where the LP
  support or its integer parts moved, where a changed offer is used, or could beat the chosen plan;
  an offer that only beats the runner-up updates the explanation in place.
* Structural changes (new offer keys, workload added/changed/removed) rebuild pairs and master;
  removed offers are tombstoned (made unavailable) until the next rebuild.
"""

from solvers.instance import EngineParams, concentration_penalty
from solvers.portfolio.bounds import integer_lower_bound
from solvers.portfolio.candidates import Decision
from solvers.portfolio.engine import MAX_STALE_LP_S, PortfolioEngine, solve_once
from solvers.portfolio.explain import diagnose
from solvers.portfolio.master import Master
from solvers.portfolio.pairs import Pairs, build_pairs, pair_costs, rows_metric, sorted_member

# the names these had in the single-module engine (tests and benchmarks import them)
_Pairs, _Master, _Decision, _sorted_member, _rows_metric = Pairs, Master, Decision, sorted_member, rows_metric

__all__ = ["MAX_STALE_LP_S", "Decision", "EngineParams", "Master", "Pairs", "PortfolioEngine", "build_pairs",
           "concentration_penalty", "diagnose", "integer_lower_bound", "pair_costs", "rows_metric", "solve_once",
           "sorted_member"]
