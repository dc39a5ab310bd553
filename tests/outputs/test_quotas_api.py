"""GPU quotas through the API: POST publishes a QuotasSet (operator or admin), a bad quota is a 422 naming
the field and publishes nothing, GET reads back the set in force as the sink stored it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from outputs.api import ApiConfig, create_app
from schemas.events import Event, QuotasSet, utcnow
from schemas.placement import GpuQuota

ADMIN = "admin-test-key-0123456789"
QUOTAS = [{"provider": "gcp", "region": "us-central1", "gpu": "H100", "gpus": 16},
          {"provider": "aws", "region": "*", "gpu": "A100-80GB", "gpus": 32}]


@pytest.fixture
def api(loaded_db: tuple[Any, str, list[Event]]) -> Any:
    client, db, _ = loaded_db
    published: list[Event] = []
    app = create_app(client, ApiConfig(db=db, admin_key=ADMIN, rate_per_s=1000, burst=1000, refresh_s=0.2),
                     publish=published.append)
    with TestClient(app) as tc:
        tc.published = published  # type: ignore[attr-defined]
        tc.db = (client, db)  # type: ignore[attr-defined]
        yield tc


def H(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def key(api: TestClient, role: str) -> str:
    r = api.post("/v1/api-keys", json={"role": role}, headers=H(ADMIN))
    assert r.status_code == 201
    return str(r.json()["api_key"])


def test_post_publishes_the_quota_set_for_operators(api: TestClient) -> None:
    viewer, operator = key(api, "viewer"), key(api, "operator")
    assert api.post("/v1/quotas", json={"quotas": QUOTAS}).status_code == 401
    assert api.post("/v1/quotas", json={"quotas": QUOTAS}, headers=H(viewer)).status_code == 403
    r = api.post("/v1/quotas", json={"quotas": QUOTAS}, headers=H(operator))
    assert r.status_code == 202, r.text
    (e,) = api.published  # type: ignore[attr-defined]
    assert isinstance(e, QuotasSet) and r.json() == {"event_id": e.event_id, "n_quotas": 2, "status": "submitted"}
    assert [q.model_dump() for q in e.quotas] == QUOTAS
    assert abs((utcnow() - e.set_at).total_seconds()) < 60
    # admin too; an empty set lifts every quota
    assert api.post("/v1/quotas", json={"quotas": []}, headers=H(ADMIN)).status_code == 202
    assert api.published[-1].quotas == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(("quota", "field"), [
    ({"provider": "gcp", "region": "us-central1", "gpu": "H9000", "gpus": 8}, "gpu"),
    ({"provider": "moon-cloud", "region": "us-central1", "gpu": "H100", "gpus": 8}, "provider"),
    ({"provider": "gcp", "region": "us-central1", "gpu": "H100", "gpus": "8"}, "gpus"),      # strict
    ({"provider": "gcp", "region": "us-central1", "gpu": "H100", "gpus": -1}, "gpus"),
    ({"provider": "gcp", "region": "us-central1", "gpu": "H100", "gpus": 8, "zone": "a"}, "zone"),
])
def test_a_bad_quota_is_a_422_naming_the_field_and_publishes_nothing(api: TestClient, quota: dict[str, Any],
                                                                       field: str) -> None:
    r = api.post("/v1/quotas", json={"quotas": [QUOTAS[0], quota]}, headers=H(ADMIN))
    assert r.status_code == 422
    locs = [e["loc"] for e in r.json()["detail"]]
    assert ["body", "quotas", 1, field] in locs, locs
    assert api.published == []  # type: ignore[attr-defined]


def test_a_set_that_is_not_a_set_is_refused(api: TestClient) -> None:
    twice = api.post("/v1/quotas", json={"quotas": [QUOTAS[0], {**QUOTAS[0], "gpus": 4}]}, headers=H(ADMIN))
    assert twice.status_code == 422 and "given twice" in twice.text
    assert api.post("/v1/quotas", json=QUOTAS, headers=H(ADMIN)).status_code == 422
    assert api.post("/v1/quotas", json={"quotas": QUOTAS, "extra": 1}, headers=H(ADMIN)).status_code == 422
    assert api.published == []  # type: ignore[attr-defined]


def test_get_returns_the_latest_set_the_sink_wrote(api: TestClient) -> None:
    from outputs.sink import ClickHouseWriter

    viewer = key(api, "viewer")
    assert api.get("/v1/quotas").status_code == 401
    assert api.get("/v1/quotas", headers=H(viewer)).json() == {"event_id": None, "set_at": None, "quotas": []}
    client, db = api.db  # type: ignore[attr-defined]
    now = utcnow()
    old = QuotasSet(event_id="q-old", quotas=[GpuQuota(provider="gcp", region="*", gpu="H100", gpus=1)],
                    set_at=now - timedelta(hours=1))
    new = QuotasSet(event_id="q-new", quotas=[GpuQuota.model_validate(q) for q in QUOTAS], set_at=now)
    ClickHouseWriter(client, db).write([new, old])
    got = api.get("/v1/quotas", headers=H(viewer)).json()
    assert got["event_id"] == "q-new" and got["quotas"] == QUOTAS
    assert got["set_at"].startswith(now.strftime("%Y-%m-%dT%H:%M:%S"))


# --- the quota file (`cloudarb quotas set --file`), validated as the API validates a POST -------------------

def test_the_example_quota_file_is_valid_and_every_quota_covers_offers_of_the_sample_data(tmp_path: Path) -> None:
    from cloudarb.quotas import load_quotas, quotas_event, quotas_yaml
    from connectors.replay import replay_events

    root = Path(__file__).resolve().parents[2]
    quotas = load_quotas(root / "examples" / "quotas.yaml")
    assert len(quotas) >= 10
    offers = {e.offer for e in replay_events(root / "data" / "sample") if hasattr(e, "offer")}
    for q in quotas:
        assert any(q.covers(o) for o in offers), q.key
    f = tmp_path / "shown.yaml"   # `quotas show` prints a file `quotas set` reads back
    f.write_text(quotas_yaml(quotas_event(quotas)))
    assert load_quotas(f) == quotas


def test_a_bad_quota_file_names_the_field(tmp_path: Path) -> None:
    from cloudarb.quotas import QuotaFileError, load_quotas

    f = tmp_path / "q.json"
    f.write_text('[{"provider": "gcp", "region": "us-central1", "gpu": "H100", "gpus": 8},'
                 ' {"provider": "gcp", "region": "us-central1", "gpu": "H100", "gpus": "many"}]')
    with pytest.raises(QuotaFileError, match=r"quotas\.1\.gpus"):
        load_quotas(f)
    f.write_text("quotas: 3\n")
    with pytest.raises(QuotaFileError, match="quotas"):
        load_quotas(f)
    with pytest.raises(QuotaFileError):
        load_quotas(tmp_path / "missing.yaml")
