"""Hostile vendor input: recorded responses with random fields replaced by arbitrary JSON. Every poll either
returns valid events or fails with SourceError (counted by the runner); nothing else is raised and every
emitted event is valid and positive-priced."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import httpx
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.azure import AzurePricesSource
from connectors.base import SourceError
from connectors.gcp import GcpPricesSource
from connectors.lambda_cloud import LambdaSource
from connectors.runpod import RunPodSource
from connectors.vastai import VastSource
from schemas.events import InterruptionObserved, PriceObserved, decode_event
from tests.connectors.conftest import NOW, load

FAST: dict[str, Any] = {"retry_wait_min_s": 0.0001, "retry_wait_max_s": 0.001, "rate_per_s": 100000.0}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6)


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, (*prefix, i))
    return out


def mutate(doc: Any, data: st.DataObject, n: int = 3) -> Any:
    doc = copy.deepcopy(doc)
    for _ in range(n):
        ps = [p for p in paths(doc) if p]
        if not ps:
            break
        p = data.draw(st.sampled_from(ps))
        parent = doc
        for k in p[:-1]:
            parent = parent[k]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[p[-1]]
        else:
            parent[p[-1]] = data.draw(json_values)
    return doc


CASES = [
    (lambda: LambdaSource(env={"LAMBDA_API_KEY": "k"}, clock=lambda: NOW, **FAST),
     "GET", "https://cloud.lambda.ai/api/v1/instance-types", ["lambda_instance_types.json"]),
    (lambda: RunPodSource(env={"RUNPOD_API_KEY": "k"}, clock=lambda: NOW, **FAST),
     "POST", "https://api.runpod.io/graphql", ["runpod_gpu_types.json"]),
    (lambda: VastSource(env={}, clock=lambda: NOW, **FAST),
     "GET", "https://console.vast.ai/api/v0/bundles/", ["vast_page1.json"]),
    (lambda: AzurePricesSource(env={}, clock=lambda: NOW, **FAST),
     "GET", "https://prices.azure.com/api/retail/prices", ["azure_prices_page2.json"]),
    (lambda: GcpPricesSource(env={"GCP_API_KEY": "k"}, clock=lambda: NOW, **FAST),
     "GET", "https://cloudbilling.googleapis.com/v1/services/6F81-5844-456A/skus", ["gcp_skus_page2.json"]),
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(range(len(CASES))), data=st.data())
def test_mutated_responses_never_crash_and_never_emit_bogus_events(case: int, data: st.DataObject) -> None:
    make, method, url, files = CASES[case]
    body = mutate(load(files[0]), data)
    raw = json.dumps(body, allow_nan=True).encode()
    with respx.mock:
        respx.route(method=method, url__startswith=url).mock(return_value=httpx.Response(200, content=raw))
        src = make()
        if isinstance(src, VastSource):
            src.page_size = 10
        try:
            events = src.poll()
        except SourceError:
            return
    for e in events:
        again = decode_event(e.model_dump_json().encode())
        assert again == e
        if isinstance(e, PriceObserved):
            assert math.isfinite(e.usd_per_hour) and 0 < e.usd_per_hour < 10_000


class _NoEc2:
    def describe_instances(self, **_: Any) -> Any:
        return {"Reservations": [{"Instances": [{"InstanceType": "g5.xlarge",
                                                 "Placement": {"AvailabilityZone": "us-east-1a"}}]}]}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_interruption_messages_and_advisor_never_crash(data: st.DataObject) -> None:
    from connectors.aws import AwsInterruptionSource, AwsSpotAdvisorSource, advisor_events
    from connectors.azure import AzureEvictionSource
    from connectors.base import Reject
    from connectors.gcp import GcpPreemptionSource
    from tests.connectors.test_azure_eventhub import activity
    from tests.connectors.test_gcp_pubsub import LOG_ENTRY

    az = AzureEvictionSource(env={}, consumer=object(), clock=lambda: NOW, **FAST)
    rec = mutate({"records": [activity("Microsoft.Compute/virtualMachines/evictSpotVM/action",
                                       properties={"vmSize": "Standard_NC24ads_A100_v4"})]}, data)
    for r in az.records(rec):
        assert isinstance(az.convert(r), Reject | InterruptionObserved)
    gcp = GcpPreemptionSource(env={}, subscriber=object(), instance_lookup=lambda *a: "g2-standard-4",
                              clock=lambda: NOW, **FAST)
    gcp.convert(json.dumps(mutate(LOG_ENTRY, data)).encode())
    warning = {"version": "0", "id": "x", "detail-type": "EC2 Spot Instance Interruption Warning",
               "time": "2025-07-01T11:58:00Z", "region": "us-east-1", "detail": {"instance-id": "i-1"}}
    aws = AwsInterruptionSource(env={"AWS_ACCESS_KEY_ID": "x"}, clients={("ec2", "us-east-1"): _NoEc2()},
                                clock=lambda: NOW, **FAST)
    aws._specs = {}
    aws.convert(json.dumps(mutate(warning, data)))
    adv = {"spot_advisor": {"us-east-1": {"Linux": {"g5.xlarge": {"s": 60, "r": 1}, "p3.2xlarge": {"s": 70, "r": 3}}}}}
    src = AwsSpotAdvisorSource(env={}, clock=lambda: NOW, **FAST)
    for item in advisor_events(src, mutate(adv, data), NOW, "t", {("us-east-1", "g5.xlarge"): 1.0}):
        assert item is not None
