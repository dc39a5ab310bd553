"""Runtime settings from the environment (pydantic-settings). The same variables drive the local
run, docker-compose and a user's own infrastructure."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False, env_parse_none_str="none")

    kafka_bootstrap_servers: str | None = Field(default=None, description="unset = start the local broker")
    clickhouse_url: str | None = Field(default=None, description="unset = embedded chdb")
    cloudarb_home: Path = Field(default=ROOT / "var", description="state: chdb, local broker data")
    cloudarb_app_id: str = "cloudarb"
    cloudarb_engine: str = Field(default="portfolio", description="portfolio (OR-Tools/HiGHS) | greedy")
    cloudarb_data_dir: Path = Field(default=ROOT / "data" / "sample")
    cloudarb_workloads_file: Path = Field(default=ROOT / "examples" / "workloads.yaml")
    cloudarb_quotas_file: Path | None = Field(
        default=None, description="default file of `cloudarb quotas set` (published only by that command)")
    clickhouse_db: str = "cloudarb"
    cloudarb_commit_interval_s: float = Field(default=2.8, description="offset commit interval (of both stages)")
    cloudarb_kafka_transactions: bool = Field(
        default=True, description="the decision stage writes each step as one Kafka transaction (fenced: a worker "
        "that lost the stage writes nothing more); false for a Kafka-compatible service without transactions")
    cloudarb_cg_budget_s: float | None = Field(
        default=0.0, ge=0.0, description="portfolio engine in the worker: simplex time per decision (one run, at "
        "most this long). 0: none, a decision rests on the last optimal LP solution and the LP is re-solved "
        "between decisions (a solve runs the simplex itself once the LP has been behind the market for 0.5 s); "
        "unset = always to the LP optimum")

    @property
    def chdb_path(self) -> Path:
        return self.cloudarb_home / "chdb"

    @property
    def kafka_data_dir(self) -> Path:
        return self.cloudarb_home / "kafka"
