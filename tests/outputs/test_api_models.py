"""GET /v1/models: the forecasters' champion per group and target, and the latest promotions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from outputs.api import ApiConfig, create_app
from outputs.sink import ClickHouseWriter
from schemas.events import Event, ModelPromoted

ADMIN = "admin-models-key-0123456789abcdef0123"
T0 = datetime(2025, 6, 1, tzinfo=UTC)


def promo(i: int, champion: str, previous: str, target: str = "price_3600s") -> ModelPromoted:
    return ModelPromoted(event_id=f"m{i}", group="test|B200|spot", target=target, champion=champion,
                         previous=previous, metric="mae" if target.startswith("price") else "logloss",
                         score_champion=0.1, score_previous=0.2, n_scored=30 + i,
                         promoted_at=T0 + timedelta(hours=i))


def test_models_lists_each_groups_champion_and_the_promotions(loaded_db: tuple[Any, str, list[Event]]) -> None:
    client, db, _ = loaded_db
    ClickHouseWriter(client, db).write([promo(1, "river-quantile-linreg x0.5", "naive"),
                                        promo(2, "naive", "river-quantile-linreg x0.5"),
                                        promo(3, "eb-hazard", "base-rate", "risk_1h")])
    app = create_app(client, ApiConfig(db=db, admin_key=ADMIN, rate_per_s=1000, burst=1000, refresh_s=0.2))
    with TestClient(app) as tc:
        assert tc.get("/v1/models").status_code == 401
        body = tc.get("/v1/models", params={"limit": 500}, headers={"X-API-Key": ADMIN}).json()
        champs = {(c["group"], c["target"]): c["champion"] for c in body["champions"]
                  if c["group"] == "test|B200|spot"}
        assert champs == {("test|B200|spot", "price_3600s"): "naive",
                          ("test|B200|spot", "risk_1h"): "eb-hazard"}
        mine = [p["event_id"] for p in body["promotions"] if p["group_key"] == "test|B200|spot"]
        assert mine == ["m3", "m2", "m1"]
        assert tc.get("/v1/models", params={"limit": "x"}, headers={"X-API-Key": ADMIN}).status_code == 422
