from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import AwareDatetime, Field, TypeAdapter, ValidationError

from schemas import (
    GPU_CATALOGUE,
    TOPICS,
    AllocationDecided,
    Market,
    OfferKey,
    PriceObserved,
    WorkloadRequested,
    WorkloadSpec,
    decode_event,
    topic,
)

T = datetime(2025, 6, 1, 12, tzinfo=UTC)
T0, T1 = datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
OFFER = OfferKey(provider="gcp", region="us-central1", instance_type="a2-highgpu-1g", gpu_model="A100-40GB",
                 gpus_per_instance=1, market=Market.SPOT)


def price(**kw: object) -> PriceObserved:
    base = dict(event_id="e1", offer=OFFER, usd_per_hour=1.5, quoted_at=T, observed_at=T, source="test")
    base.update(kw)
    return PriceObserved(**base)  # type: ignore[arg-type]


def test_roundtrip_and_frozen() -> None:
    e = price()
    assert decode_event(e.model_dump_json()) == e
    with pytest.raises(ValidationError):
        e.usd_per_hour = 2.0  # type: ignore[misc]


def test_datetimes_become_utc_and_naive_is_rejected() -> None:
    cet = timezone(timedelta(hours=2))
    e = price(quoted_at=datetime(2025, 6, 1, 14, tzinfo=cet))
    assert e.quoted_at == T and e.quoted_at.tzinfo is UTC and e.observed_at.tzinfo is UTC
    with pytest.raises(ValidationError, match="timezone"):
        price(quoted_at=datetime(2025, 6, 1, 12))
    # read from JSON alike ('Z' or an offset), in UTC itself; the range [1970, 2100) is of the instant
    js = price().model_dump_json()
    for written, instant in (("2025-06-01T14:00:00+02:00", T), ("2100-01-01T01:00:00+02:00",
                                                                  datetime(2099, 12, 31, 23, tzinfo=UTC))):
        e = decode_event(js.replace("2025-06-01T12:00:00Z", written, 1))
        assert isinstance(e, PriceObserved) and e.quoted_at == instant and e.quoted_at.tzinfo is UTC
        assert e.observed_at.tzinfo is UTC
    for outside in ("2100-01-01T00:00:00Z", "1970-01-01T01:00:00+02:00"):
        with pytest.raises(ValidationError, match="quoted_at"):
            decode_event(js.replace("2025-06-01T12:00:00Z", outside, 1))



@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1969, 12, 31), max_value=datetime(2100, 1, 2)),
       st.sampled_from(["seconds", "milliseconds", "microseconds", "minutes"]))
def test_a_z_time_reads_as_pydantic_strict_reads_it(t: datetime, spec: str) -> None:
    """The fast path for '...Z' times (datetime.fromisoformat) gives what pydantic-core's strict parse gives,
    and refuses what it refuses (the [1970, 2100) range included)."""
    written = t.isoformat(timespec=spec) + "Z"
    js = price().model_dump_json().replace("2025-06-01T12:00:00Z", written, 1)
    try:
        want = TypeAdapter(Annotated[AwareDatetime, Field(ge=T0, lt=T1)]).validate_json(json.dumps(written),
                                                                                      strict=True)
    except ValidationError:
        with pytest.raises(ValidationError, match="quoted_at"):
            decode_event(js)
        return
    got = decode_event(js)
    assert isinstance(got, PriceObserved) and got.quoted_at == want and got.quoted_at.tzinfo is UTC

@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), 1e9])
def test_bad_prices_rejected(bad: float) -> None:
    with pytest.raises(ValidationError):
        price(usd_per_hour=bad)


def test_offer_key_roundtrip_and_unknown_gpu() -> None:
    assert OfferKey.from_key(OFFER.key) == OFFER
    assert price().usd_per_gpu_hour == 1.5
    with pytest.raises(ValidationError, match="unknown GPU model"):
        OfferKey(provider="gcp", region="r", instance_type="x", gpu_model="A100", gpus_per_instance=1,
                 market=Market.SPOT)
    with pytest.raises(ValidationError):
        OfferKey(provider="gcp", region="r", instance_type="x|y", gpu_model="L4", gpus_per_instance=1,
                 market=Market.SPOT)


def test_workload_spec_validation() -> None:
    w = WorkloadSpec(workload_id="w1", gpu_throughput={"H100-80GB": 1.7}, min_gpus=8, max_gpus=8,
                     budget_usd_per_hour=40)
    ev = WorkloadRequested(event_id="x", spec=w, requested_at=T)
    assert decode_event(ev.model_dump_json()) == ev
    with pytest.raises(ValidationError, match="max_gpus"):
        WorkloadSpec(workload_id="w1", gpu_throughput={"L4": 1}, min_gpus=8, max_gpus=4, budget_usd_per_hour=1)
    with pytest.raises(ValidationError, match="unknown GPU"):
        WorkloadSpec(workload_id="w1", gpu_throughput={"TPU": 1}, min_gpus=1, max_gpus=1, budget_usd_per_hour=1)


def test_decode_event_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        decode_event(b"\xff{")
    with pytest.raises(ValueError, match="JSON object"):
        decode_event(b"[1]")
    with pytest.raises(ValueError, match="unknown event_type"):
        decode_event(json.dumps({"event_type": "PriceSeen"}))
    with pytest.raises(ValueError, match="not allowed"):
        decode_event(price().model_dump_json(), expected=(AllocationDecided,))


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    d = json.loads(price().model_dump_json())
    d["added_in_a_later_minor"] = 1
    assert decode_event(json.dumps(d)) == price()


def test_topics_are_versioned_and_cover_every_event() -> None:
    from schemas.events import EVENT_TYPES

    assert all(name.endswith(".v1") and name.startswith("cloudarb.") for name in TOPICS)
    carried = {ev for spec in TOPICS.values() for ev in spec.events}
    assert carried == set(EVENT_TYPES.values())
    assert topic("cloudarb.prices.v1").partitions == 6
    with pytest.raises(KeyError, match="known"):
        topic("cloudarb.prices.v2")


def test_catalogue_has_the_common_gpus() -> None:
    for m in ["H100-80GB", "H200", "B200", "A100-80GB", "A100-40GB", "L40S", "L4", "A10G", "A10", "T4",
              "V100-16GB", "V100-32GB", "RTX-4090", "RTX-PRO-6000", "GH200"]:
        assert m in GPU_CATALOGUE


def test_topology_fields_are_validated_naming_the_field() -> None:
    from pydantic import ValidationError

    from schemas.placement import GpuQuota, Topology

    base = {"workload_id": "w", "gpu_throughput": {"L4": 1.0}, "min_gpus": 8, "max_gpus": 8,
            "budget_usd_per_hour": 10.0}
    assert WorkloadSpec.model_validate(base).topology is Topology.GANG   # the default
    ok = WorkloadSpec.model_validate({**base, "topology": "replicas", "gpus_per_replica": 4,
                                      "max_share_per_provider": 0.5, "state_gb": 12.5})
    assert ok.gpus_per_replica == 4
    bad = [({"topology": "mesh"}, "topology"),
           ({"topology": "replicas", "gpus_per_replica": 3}, "gpus_per_replica 3 must divide"),
           ({"state_gb": -1}, "state_gb"),
           ({"max_share_per_region": 0.5}, "needs topology 'replicas'"),
           ({"interconnect": "pcie"}, "interconnect")]
    for extra, words in bad:
        with pytest.raises(ValidationError) as exc:
            WorkloadSpec.model_validate({**base, **extra})
        assert words in str(exc.value), extra
    for q, words in [({"gpu": "TPUv5"}, "unknown GPU model or family"), ({"provider": "evil"}, "unknown provider"),
                     ({"gpus": -1}, "gpus")]:
        with pytest.raises(ValidationError) as exc:
            GpuQuota.model_validate({"provider": "gcp", "region": "us-central1", "gpu": "H100", "gpus": 16, **q})
        assert words in str(exc.value), q
