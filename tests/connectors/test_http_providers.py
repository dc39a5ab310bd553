"""Lambda, RunPod, Vast.ai, Azure Retail Prices and the GCP Billing Catalog against respx doubles fed with
recorded real-shaped responses (including each API's paging), plus the bad-input paths."""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import httpx
import pytest
import respx

from connectors.azure import AzurePricesSource
from connectors.base import HTTP_LOGGERS, SourceError, install_log_redaction, redact_secrets
from connectors.gcp import GcpPricesSource
from connectors.lambda_cloud import LambdaSource
from connectors.runpod import RunPodSource
from connectors.vastai import VastSource
from schemas.events import CapacityObserved, PriceObserved
from tests.connectors.conftest import NOW, load

FAST: dict[str, Any] = {"retry_wait_min_s": 0.001, "retry_wait_max_s": 0.01, "rate_per_s": 1000.0}


def by_key(events: list[Any]) -> dict[tuple[str, str], Any]:
    return {(e.event_type, e.offer.key): e for e in events}


# --- Lambda -------------------------------------------------------------------------------------

LAMBDA_URL = "https://cloud.lambda.ai/api/v1/instance-types"


@respx.mock
def test_lambda_prices_capacity_and_changes_only(clock: Any) -> None:
    body = load("lambda_instance_types.json")
    route = respx.get(LAMBDA_URL).mock(return_value=httpx.Response(200, json=body))
    src = LambdaSource(env={"LAMBDA_API_KEY": "k"}, clock=clock, **FAST)
    ev = by_key(src.poll())
    assert route.calls[0].request.headers["authorization"] == "Bearer k"
    p = ev[("PriceObserved", "lambda|us-south-2||gpu_8x_h100_sxm5|H100-80GB|8|on_demand")]
    assert p.usd_per_hour == 23.92 and p.observed_at == NOW and p.quoted_at == NOW
    assert ev[("CapacityObserved", "lambda|us-east-1||gpu_1x_a10|A10|1|on_demand")].available is True
    assert src.stats.rejected["unknown_gpu"] >= 1  # RTX 6000 is not in the catalogue: reported, not guessed
    assert not any("rtx6000" in k for _, k in ev)
    # same response: nothing new; capacity gone in us-west-1 and price change: exactly those two events
    assert src.poll() == []
    body2 = copy.deepcopy(body)
    body2["data"]["gpu_1x_a10"]["regions_with_capacity_available"] = [{"name": "us-east-1", "description": "x"}]
    body2["data"]["gpu_8x_h100_sxm5"]["instance_type"]["price_cents_per_hour"] = 2192
    route.mock(return_value=httpx.Response(200, json=body2))
    out = src.poll()
    kinds = sorted((e.event_type, e.offer.region) for e in out)
    assert kinds == [("CapacityObserved", "us-west-1"), ("PriceObserved", "us-south-2")]
    assert next(e for e in out if isinstance(e, CapacityObserved)).available is False


def test_lambda_without_key_is_skipped() -> None:
    assert LambdaSource.missing_credentials({}) == "LAMBDA_API_KEY is not set"


@respx.mock
def test_retries_429_and_5xx_with_backoff_and_counts(clock: Any) -> None:
    route = respx.get(LAMBDA_URL).mock(side_effect=[
        httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(503), httpx.ConnectError("boom"),
        httpx.Response(200, json=load("lambda_instance_types.json"))])
    src = LambdaSource(env={"LAMBDA_API_KEY": "k"}, clock=clock, **FAST)
    assert src.poll()
    assert route.call_count == 4 and src.stats.retries == 3


@respx.mock
def test_gives_up_after_max_attempts(clock: Any) -> None:
    respx.get(LAMBDA_URL).mock(return_value=httpx.Response(500))
    src = LambdaSource(env={"LAMBDA_API_KEY": "k"}, clock=clock, **FAST)
    with pytest.raises(Exception, match="HTTP 500"):
        src.poll()
    assert src.stats.retries == src.max_attempts - 1


@respx.mock
def test_malformed_json_and_401_are_not_retried(clock: Any) -> None:
    route = respx.get(LAMBDA_URL).mock(return_value=httpx.Response(200, content=b"{not json"))
    src = LambdaSource(env={"LAMBDA_API_KEY": "k"}, clock=clock, **FAST)
    with pytest.raises(SourceError, match="malformed JSON"):
        src.poll()
    assert src.stats.rejected["malformed_json"] == 1 and route.call_count == 1
    route.mock(return_value=httpx.Response(401, json={"error": "unauthorized"}))
    with pytest.raises(SourceError, match="HTTP 401"):
        src.poll()
    assert src.stats.retries == 0


@respx.mock
@pytest.mark.parametrize("bad, reason", [(-75, "non_positive_price"), (0, "non_positive_price"),
                                         (float("nan"), "nan_price"), ("abc", "bad_price"), (None, "missing_price")])
def test_bad_prices_rejected_with_reason(clock: Any, bad: Any, reason: str) -> None:
    body = load("lambda_instance_types.json")
    body["data"]["gpu_1x_a10"]["instance_type"]["price_cents_per_hour"] = bad
    respx.get(LAMBDA_URL).mock(return_value=httpx.Response(200, content=json.dumps(body).encode()))
    src = LambdaSource(env={"LAMBDA_API_KEY": "k"}, clock=clock, **FAST)
    out = src.poll()
    assert not any(isinstance(e, PriceObserved) and e.offer.instance_type == "gpu_1x_a10" for e in out)
    assert src.stats.rejected[reason] >= 1
    assert any(isinstance(e, PriceObserved) for e in out)  # the good records still flow


@respx.mock
def test_price_100x_the_last_is_rejected_and_missing_fields_counted(clock: Any) -> None:
    body = load("lambda_instance_types.json")
    route = respx.get(LAMBDA_URL).mock(return_value=httpx.Response(200, json=body))
    src = LambdaSource(env={"LAMBDA_API_KEY": "k"}, clock=clock, **FAST)
    src.poll()
    body2 = copy.deepcopy(body)
    body2["data"]["gpu_1x_a10"]["instance_type"]["price_cents_per_hour"] = 75 * 150
    del body2["data"]["gpu_1x_gh200"]["instance_type"]["gpu_description"]
    body2["data"]["gpu_8x_h100_sxm5"]["regions_with_capacity_available"] = [{"name": "moon-1"}]
    route.mock(return_value=httpx.Response(200, json=body2))
    out = src.poll()
    assert not any(isinstance(e, PriceObserved) and e.offer.instance_type == "gpu_1x_a10" for e in out)
    assert src.stats.rejected["price_jump"] == 2  # both regions of gpu_1x_a10
    assert src.stats.rejected["missing_field"] == 1
    assert src.stats.rejected["unknown_region"] == 1


# --- RunPod -------------------------------------------------------------------------------------

@respx.mock
def test_runpod_graphql(clock: Any) -> None:
    route = respx.post("https://api.runpod.io/graphql").mock(
        return_value=httpx.Response(200, json=load("runpod_gpu_types.json")))
    src = RunPodSource(env={"RUNPOD_API_KEY": "k"}, clock=clock, **FAST)
    ev = by_key(src.poll())
    assert "gpuTypes" in json.loads(route.calls[0].request.content)["query"]
    h100 = "NVIDIA H100 80GB HBM3"
    assert ev[("PriceObserved", f"runpod|global||{h100} secure|H100-80GB|1|on_demand")].usd_per_hour == 2.99
    assert ev[("PriceObserved", f"runpod|global||{h100} community|H100-80GB|1|on_demand")].usd_per_hour == 2.69
    assert ev[("PriceObserved", f"runpod|global||{h100} spot|H100-80GB|1|spot")].usd_per_hour == 1.55
    cap = ev[("CapacityObserved", f"runpod|global||{h100} secure|H100-80GB|1|on_demand")]
    assert cap.available and cap.capacity_score == 1.0
    a100 = ev[("CapacityObserved", "runpod|global||NVIDIA A100-SXM4-80GB secure|A100-80GB|1|on_demand")]
    assert a100.available is False  # stockStatus null
    assert not any("community" in k and "A100-SXM4" in k for _, k in ev)  # communityCloud false
    mi300x = "runpod|global||AMD Instinct MI300X OAM secure|MI300X|1|on_demand"
    assert ev[("PriceObserved", mi300x)].usd_per_hour == 2.49
    assert not src.stats.rejected["unknown_gpu"]


@respx.mock
def test_runpod_graphql_errors_fail_the_poll(clock: Any) -> None:
    respx.post("https://api.runpod.io/graphql").mock(
        return_value=httpx.Response(200, json={"errors": [{"message": "Unauthorized"}]}))
    with pytest.raises(SourceError, match="GraphQL errors"):
        RunPodSource(env={"RUNPOD_API_KEY": "k"}, **FAST).poll()


# --- Vast.ai ------------------------------------------------------------------------------------

@respx.mock
def test_vast_paging_and_aggregation(clock: Any) -> None:
    route = respx.get(url__startswith="https://console.vast.ai/api/v0/bundles/").mock(side_effect=[
        httpx.Response(200, json=load("vast_page1.json")), httpx.Response(200, json=load("vast_page2.json"))])
    src = VastSource(env={}, clock=clock, **FAST)
    src.page_size = 3
    ev = by_key(src.poll())
    qs = [json.loads(c.request.url.params["q"]) for c in route.calls]
    assert [q["id"]["gt"] for q in qs] == [0, 1003]  # keyset paging on id
    se = ev[("PriceObserved", "vastai|se||RTX-4090-1x|RTX-4090|1|on_demand")]
    assert se.usd_per_hour == 0.31  # min(0.35/1, 0.62/2)
    assert ev[("PriceObserved", "vastai|se||RTX-4090-1x|RTX-4090|1|spot")].usd_per_hour == 0.18
    assert ev[("PriceObserved", "vastai|us||H100-80GB-1x|H100-80GB|1|on_demand")].usd_per_hour == 2.2
    assert ev[("CapacityObserved", "vastai|se||RTX-4090-1x|RTX-4090|1|on_demand")].available_instances == 2
    assert ("PriceObserved", "vastai|us||A100-80GB-1x|A100-80GB|1|on_demand") in ev
    assert src.stats.rejected["unknown_gpu"] == 1  # RTX 3090


# --- Azure Retail Prices ------------------------------------------------------------------------

@respx.mock
def test_azure_next_page_link_spot_vs_low_priority_no_windows(clock: Any) -> None:
    p1, p2 = load("azure_prices_page1.json"), load("azure_prices_page2.json")
    route = respx.get(url__startswith="https://prices.azure.com/api/retail/prices").mock(
        side_effect=[httpx.Response(200, json=p1), httpx.Response(200, json=p2)])
    src = AzurePricesSource(env={}, clock=clock, **FAST)
    ev = by_key(src.poll())
    assert route.call_count == 2 and "skip=3" in str(route.calls[1].request.url)
    od = ev[("PriceObserved", "azure|eastus||Standard_NC24ads_A100_v4|A100-PCIE-80GB|1|on_demand")]
    assert od.usd_per_hour == 3.673 and od.quoted_at.isoformat() == "2022-07-01T00:00:00+00:00"
    assert ev[("PriceObserved", "azure|eastus||Standard_NC24ads_A100_v4|A100-PCIE-80GB|1|spot")].usd_per_hour == 0.7346
    assert ev[("PriceObserved", "azure|westus3||Standard_ND96isr_H100_v5|H100-80GB|8|on_demand")]
    assert len(ev) == 4
    r = src.stats.rejected
    assert r["low_priority"] == 1 and r["windows"] == 1 and r["not_hourly_consumption"] == 1
    assert r["unknown_region"] == 1 and not r["unknown_gpu"]  # marsnorth
    nvl = "azure|southcentralus||Standard_NC40ads_H100_v5|H100-NVL|1|on_demand"
    assert ev[("PriceObserved", nvl)].usd_per_hour == 6.98


# --- GCP Billing Catalog ------------------------------------------------------------------------

@respx.mock
def test_gcp_skus_composed_into_machine_prices(clock: Any) -> None:
    route = respx.get(url__startswith="https://cloudbilling.googleapis.com/v1/services/6F81-5844-456A/skus").mock(
        side_effect=[httpx.Response(200, json=load("gcp_skus_page1.json")),
                     httpx.Response(200, json=load("gcp_skus_page2.json"))])
    src = GcpPricesSource(env={"GCP_API_KEY": "k"}, clock=clock, **FAST)
    ev = by_key(src.poll())
    assert route.calls[1].request.url.params["pageToken"] == "page-2-token"
    g4 = ev[("PriceObserved", "gcp|us-central1||g2-standard-4|L4|1|on_demand")]
    # 4 vCPU x 0.024988 + 16 GiB x 0.002929 + 1 L4 x 0.56004 (the published g2-standard-4 price is 0.7068)
    assert g4.usd_per_hour == pytest.approx(4 * 0.024988 + 16 * 0.002929 + 0.56004)
    assert g4.usd_per_hour == pytest.approx(0.70686, abs=1e-4)
    assert g4.quoted_at.isoformat().startswith("2025-06-02T08:00")
    assert ("PriceObserved", "gcp|us-east1||g2-standard-96|L4|8|on_demand") in ev
    # spot: a core and GPU SKU but no spot RAM SKU in the response -> rejected as incomplete, never guessed
    assert not any(k[1].endswith("|spot") for k in ev)
    assert src.stats.rejected["incomplete_sku_set"] == 8  # the 8 g2 shapes in us-central1
    assert src.stats.rejected["unknown_gpu"] == 1  # Tesla P100 SKU


GCP_KEY = "AIzaSy-test-secret-0123456789"


@respx.mock
def test_gcp_key_sent_as_header_and_never_logged(clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    route = respx.get(url__startswith="https://cloudbilling.googleapis.com/v1/services/6F81-5844-456A/skus").mock(
        side_effect=[httpx.Response(200, json=load("gcp_skus_page1.json")),
                     httpx.Response(503), httpx.Response(200, json=load("gcp_skus_page2.json"))])
    caplog.set_level(logging.DEBUG)  # httpx logs every request URL at INFO, httpcore the exchange at DEBUG
    src = GcpPricesSource(env={"GCP_API_KEY": GCP_KEY}, clock=clock, **FAST)
    assert src.poll()
    assert len(route.calls) == 3  # two pages, one retried 503: each request logged
    for call in route.calls:
        assert call.request.headers["x-goog-api-key"] == GCP_KEY
        assert GCP_KEY not in str(call.request.url) and "key" not in call.request.url.params
    assert any("HTTP Request" in r.getMessage() for r in caplog.records)  # the httpx lines were captured ...
    for r in caplog.records:  # ... and no record carries the key
        assert GCP_KEY not in r.getMessage() and GCP_KEY not in (r.exc_text or ""), r.getMessage()


@pytest.fixture
def redaction() -> Any:
    f = install_log_redaction()
    yield f
    for name in HTTP_LOGGERS:
        logging.getLogger(name).removeFilter(f)
    for h in logging.getLogger().handlers:
        h.removeFilter(f)


@respx.mock
def test_log_redaction_filter_rewrites_secret_parameters_and_headers(redaction: Any,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A connector that (still) puts a secret in a URL: the filter on the httpx logger rewrites the line before
    any handler (here caplog's) sees it."""
    respx.get(url__startswith="https://api.example.com/v1/prices").mock(return_value=httpx.Response(200, json={}))
    caplog.set_level(logging.DEBUG)
    httpx.get("https://api.example.com/v1/prices", params={"api_key": "s3cret-a", "X-Amz-Signature": "s3cret-b",
                                                           "token": "s3cret-c", "region": "us-east-1"})
    logging.getLogger("httpx").info("retry with %s", {"Authorization": "Bearer s3cret-d",
                                                      "X-goog-api-key": "s3cret-e"})
    logging.getLogger("httpcore.http11").debug("send headers=[(b'authorization', b'Basic s3cret-f')]")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "s3cret" not in text, text
    assert "api_key=***" in text and "region=us-east-1" in text and "Bearer ***" in text


def test_redact_secrets_leaves_ordinary_text_alone() -> None:
    for s in ("token budget exhausted", "the key=value pairs", "pageToken=abc&pageSize=5000",
              "GET https://x.test/v1/skus?currencyCode=USD"):
        assert redact_secrets(s) == s
    assert redact_secrets("https://user:pw@host.test/x?secret=1&password=2") == \
        "https://user:***@host.test/x?secret=***&password=***"
