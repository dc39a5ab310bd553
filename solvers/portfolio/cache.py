"""The integer phase's decision cache: what the last decisions were and what they were made against.

The integer phase re-decides only the workloads whose inputs moved (solvers/portfolio/incremental.py). To
tell, it keeps per workload its plan (`rows`, instances per offer), the metric of its chosen plan without the
migration term (`chosen`) and of its runner-up single-offer plan (`runner`), its hysteresis threshold
(`thr`), its explanation, objective term or infeasibility report; and, for the whole portfolio, the inputs
those decisions read: the LP values per master pair column (`xv`) and of keep columns not representable by
pair columns (`kv`), the concentration prices per group (`conc`), the per-pair metric (`metric`), the offers'
availability and capacity (`avail`, `cap`), the instances every plan holds per offer (`usage`), and the sorted
(workload, offer) codes of every plan and runner-up (`codes`: code = w * n_offers + o) for the screen of
changed offers. Workloads whose inputs moved in a solve that did not ask for them wait in `dirty`; those
whose LP values alone moved, deferred by the per-solve cap, wait in `lp_dirty` (insertion order: longest
waiting first).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from schemas.events import Assignment, WorkloadExplanation
from schemas.market import InfeasibilityReport
from solvers.instance import F64, I64, Instance
from solvers.portfolio.pairs import Rows


@dataclass
class DecisionCache:
    """Per-workload decisions (indexed by workload index w, or by workload id where the result is keyed so)
    and the inputs they were made against. See the module docstring."""

    rows: dict[int, Rows]                 # w -> its plan (whole instances per offer)
    usage: F64                            # per offer: instances all cached plans hold
    runner: F64                           # per w: metric of the runner-up single-offer plan (inf: none)
    chosen: F64                           # per w: metric of the chosen plan, without the migration term
    thr: F64                              # per w: hysteresis threshold of the chosen plan
    obj: dict[str, float]                 # workload id -> objective term of its plan
    avail: npt.NDArray[np.bool_] = field(repr=False)   # per offer: available when these decisions were made
    cap: F64 = field(repr=False)          # per offer: capacity when these decisions were made
    fresh: bool = True                    # nothing decided yet: the next phase decides every asked workload
    reports: dict[int, InfeasibilityReport] = field(default_factory=dict)   # w -> why it has no plan
    expl: dict[str, WorkloadExplanation] = field(default_factory=dict)      # workload id -> explanation
    codes: I64 | None = None              # sorted (workload, offer) codes of every plan and runner-up
    codes_runner: dict[int, int] = field(default_factory=dict)              # w -> its runner-up's code
    metric: F64 | None = None             # per pair: unit cost + concentration price (the decision metric)
    xv: F64 | None = None                 # LP value per master pair column (keep columns folded in)
    kv: F64 | None = None                 # per w: keep-column value not representable by pair columns
    conc: F64 | None = None               # per group: the LP's concentration price
    dirty: set[int] = field(default_factory=set)          # inputs moved, not asked for yet
    lp_dirty: dict[int, None] = field(default_factory=dict)   # LP values moved, deferred (ordered set)


def new_cache(inst: Instance, plan: Mapping[str, Sequence[Assignment]], oidx: Mapping[str, int],
              widx: Mapping[str, int]) -> DecisionCache:
    """A cache holding only the plan in force (`plan`, by workload id): nothing decided yet."""
    usage = np.zeros(inst.n_offers)
    rows: dict[int, Rows] = {}
    for wid, assigns in plan.items():
        if wid not in widx:
            continue
        r: dict[int, int] = {}
        for a in assigns:
            o = oidx.get(a.offer.key)
            if o is not None:
                r[o] = r.get(o, 0) + a.instances
                usage[o] += a.instances
        rows[widx[wid]] = tuple(sorted(r.items()))
    obj = {inst.ids[w]: inst.rows_cost(w, rr) for w, rr in rows.items()}
    return DecisionCache(rows=rows, usage=usage, runner=np.full(inst.n_workloads, math.inf),
                         chosen=np.full(inst.n_workloads, -math.inf), thr=np.zeros(inst.n_workloads), obj=obj,
                         avail=inst.available.copy(), cap=inst.capacity.copy())
