"""An engine for the poison-pill tests: the greedy engine, except that it raises on any workload whose id
starts with "poison" (a stand-in for a workload that hits a bug in the engine). Importable by the
decider's child process: `cloudarb worker --engine tests.integration.poison_engine:make`."""

from __future__ import annotations

from schemas.events import WorkloadSpec
from solvers import GreedyEngine


class PoisonedEngine(GreedyEngine):
    def upsert_workload(self, spec: WorkloadSpec) -> None:
        if spec.workload_id.startswith("poison"):
            raise RuntimeError(f"engine bug triggered by {spec.workload_id}")
        super().upsert_workload(spec)


def make() -> PoisonedEngine:
    return PoisonedEngine()
