"""Settings from the environment, as the worker reads them, and the engine the wiring point builds from them."""

from __future__ import annotations

import pytest

from cloudarb.app import engine_factory
from cloudarb.settings import Settings


@pytest.mark.parametrize(("env", "budget"), [(None, 0.0), ("0.1", 0.1), ("none", None)])
def test_the_cg_budget_reaches_the_worker_engine(monkeypatch: pytest.MonkeyPatch, env: str | None,
                                                 budget: float | None) -> None:
    if env is None:
        monkeypatch.delenv("CLOUDARB_CG_BUDGET_S", raising=False)
    else:
        monkeypatch.setenv("CLOUDARB_CG_BUDGET_S", env)
    s = Settings()
    assert s.cloudarb_cg_budget_s == budget
    engine = engine_factory("portfolio", s.cloudarb_cg_budget_s)()
    assert engine.cg_budget_s == budget  # type: ignore[attr-defined]


@pytest.mark.parametrize("env", ["fast", "-0.1"])
def test_a_bad_cg_budget_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, env: str) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("CLOUDARB_CG_BUDGET_S", env)
    with pytest.raises(ValidationError, match="cloudarb_cg_budget_s"):
        Settings()


@pytest.mark.parametrize(("env", "plain"), [(None, False), ("false", True), ("true", False)])
def test_kafka_transactions_choose_the_decision_stage_writer(monkeypatch: pytest.MonkeyPatch, env: str | None,
                                                             plain: bool) -> None:
    from cloudarb.app import create_streams_app
    from streams.runtime.txout import PlainStepWriter, StepWriter

    if env is None:
        monkeypatch.delenv("CLOUDARB_KAFKA_TRANSACTIONS", raising=False)
    else:
        monkeypatch.setenv("CLOUDARB_KAFKA_TRANSACTIONS", env)
    s = Settings()
    assert s.cloudarb_kafka_transactions is not plain
    w = create_streams_app("127.0.0.1:1", app_id="t-settings", transactions=s.cloudarb_kafka_transactions)
    assert isinstance(w.steps, PlainStepWriter if plain else StepWriter)


def test_executor_cap_flags_override_the_environment_only_when_given(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from cloudarb.cmd_outputs import _executors

    monkeypatch.setenv("CLOUDARB_EXEC_MAX_INSTANCES", "7")
    caps = _executors(argparse.Namespace(execute=None, max_instances=None, max_usd_per_hour=None))[2]
    assert caps.max_instances == 7
    caps = _executors(argparse.Namespace(execute=None, max_instances=3, max_usd_per_hour=50.0))[2]
    assert (caps.max_instances, caps.max_usd_per_hour) == (3, 50.0)


def test_a_plug_in_engine_is_imported_by_name_and_a_bad_one_is_a_clear_error() -> None:
    from tests.integration.poison_engine import make

    assert engine_factory("tests.integration.poison_engine:make") is make
    for bad in ("no.such.module:make", "tests.integration.poison_engine:nope", "simplex"):
        with pytest.raises(ValueError, match="engine"):
            engine_factory(bad)
