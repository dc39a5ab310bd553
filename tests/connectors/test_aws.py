"""AWS: botocore Stubber for realistic paged series (moto's spot price history is a stub), moto for
describe_instance_types GpuInfo, SQS (EventBridge interruption warnings) and describe_instances."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import httpx
import pytest
import respx
from botocore.stub import Stubber
from moto import mock_aws

from connectors.aws import (
    AwsCapacitySource,
    AwsInterruptionSource,
    AwsOnDemandSource,
    AwsSpotAdvisorSource,
    AwsSpotSource,
    band_probability_per_hour,
    gpu_specs,
)
from schemas.events import InterruptionKind, InterruptionObserved, PriceObserved
from tests.connectors.conftest import NOW

FAST: dict[str, Any] = {"retry_wait_min_s": 0.001, "retry_wait_max_s": 0.01, "rate_per_s": 1000.0}
CREDS = {"AWS_ACCESS_KEY_ID": "testing"}


def client(service: str, region: str = "us-east-1") -> Any:
    return boto3.client(service, region_name=region, aws_access_key_id="x", aws_secret_access_key="x")


INSTANCE_TYPES = {"InstanceTypes": [
    {"InstanceType": "p3.2xlarge", "GpuInfo": {"Gpus": [{"Name": "V100", "Manufacturer": "NVIDIA", "Count": 1,
                                                         "MemoryInfo": {"SizeInMiB": 16384}}],
                                               "TotalGpuMemoryInMiB": 16384}},
    {"InstanceType": "g5.xlarge", "GpuInfo": {"Gpus": [{"Name": "A10G", "Manufacturer": "NVIDIA", "Count": 1,
                                                        "MemoryInfo": {"SizeInMiB": 22888}}],
                                              "TotalGpuMemoryInMiB": 22888}},
    {"InstanceType": "g4ad.xlarge", "GpuInfo": {"Gpus": [{"Name": "Radeon Pro V520", "Manufacturer": "AMD", "Count": 1,
                                                          "MemoryInfo": {"SizeInMiB": 8192}}]}},
]}


def spot(az: str, itype: str, price: str, minutes_ago: int) -> dict[str, Any]:
    return {"AvailabilityZone": az, "InstanceType": itype, "ProductDescription": "Linux/UNIX", "SpotPrice": price,
            "Timestamp": NOW - timedelta(minutes=minutes_ago)}


def test_spot_price_history_paged_newest_per_zone_and_bad_values() -> None:
    types = ["p3.2xlarge", "g5.xlarge", "g4ad.xlarge"]
    ec2 = client("ec2")
    with Stubber(ec2) as stub:
        stub.add_response("describe_spot_price_history", {"SpotPriceHistory": [
            spot("us-east-1a", "p3.2xlarge", "0.918000", 5), spot("us-east-1a", "p3.2xlarge", "0.950000", 65),
            spot("us-east-1b", "p3.2xlarge", "NaN", 3)], "NextToken": "t2"})
        stub.add_response("describe_spot_price_history", {"SpotPriceHistory": [
            spot("us-east-1c", "g5.xlarge", "0.401200", 10), spot("us-east-1d", "g4ad.xlarge", "0.1", 10),
            spot("us-east-1f", "p3.2xlarge", "-0.5", 10)]})
        stub.add_response("describe_instance_types", INSTANCE_TYPES)
        src = AwsSpotSource(env=CREDS, clients={("ec2", "us-east-1"): ec2}, regions=["us-east-1"],
                            instance_types=types, clock=lambda: NOW, **FAST)
        events = src.poll()
        stub.assert_no_pending_responses()
    got = {e.offer.key: e for e in events}
    p3 = got["aws|us-east-1|us-east-1a|p3.2xlarge|V100-16GB|1|spot"]
    assert p3.usd_per_hour == 0.918 and p3.quoted_at == NOW - timedelta(minutes=5) and p3.observed_at == NOW
    assert got["aws|us-east-1|us-east-1c|g5.xlarge|A10G|1|spot"].usd_per_hour == 0.4012  # GpuInfo 22888 MiB A10G
    assert len(got) == 2
    r = src.stats.rejected
    assert r["nan_price"] == 1 and r["non_positive_price"] == 1 and r["unknown_gpu"] == 1  # AMD V520


def test_throttling_is_retried_and_counted() -> None:
    ec2 = client("ec2")
    with Stubber(ec2) as stub:
        stub.add_client_error("describe_spot_price_history", "RequestLimitExceeded", http_status_code=503)
        stub.add_client_error("describe_spot_price_history", "Throttling", http_status_code=400)
        stub.add_response("describe_spot_price_history", {"SpotPriceHistory": [spot("us-east-1a", "p3.2xlarge",
                                                                                     "0.9", 1)]})
        src = AwsSpotSource(env=CREDS, clients={("ec2", "us-east-1"): ec2}, regions=["us-east-1"],
                            instance_types=["p3.2xlarge"], clock=lambda: NOW, **FAST)
        src._specs = {}  # static table
        assert len(src.poll()) == 1
    assert src.stats.retries == 2


def price_list_item(itype: str, usd: str, region: str = "us-east-1") -> str:
    return json.dumps({
        "product": {"productFamily": "Compute Instance", "attributes": {
            "instanceType": itype, "regionCode": region, "operatingSystem": "Linux", "tenancy": "Shared",
            "preInstalledSw": "NA", "capacitystatus": "Used", "gpu": "1"}, "sku": "ABC"},
        "serviceCode": "AmazonEC2",
        "terms": {"OnDemand": {"ABC.JRTCKXETXF": {
            "offerTermCode": "JRTCKXETXF", "sku": "ABC", "effectiveDate": "2025-06-01T00:00:00Z",
            "priceDimensions": {"ABC.JRTCKXETXF.6YS6EN2CT7": {
                "unit": "Hrs", "endRange": "Inf", "beginRange": "0", "description": f"${usd} per On Demand Linux",
                "pricePerUnit": {"USD": usd}}}}}},
        "version": "20250601000000", "publicationDate": "2025-06-01T00:00:00Z"})


def test_price_list_get_products_paged() -> None:
    pricing = client("pricing")
    with Stubber(pricing) as stub:
        stub.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": [
            price_list_item("p3.2xlarge", "3.0600000000"), "{broken"], "NextToken": "n2"})
        stub.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": [
            price_list_item("g5.xlarge", "1.0060000000"), price_list_item("m5.large", "0.096")]})
        src = AwsOnDemandSource(env=CREDS, clients={("pricing", "us-east-1"): pricing}, regions=["us-east-1"],
                                instance_types=["p3.2xlarge", "g5.xlarge"], clock=lambda: NOW, **FAST)
        src._specs = {}
        got = {e.offer.key: e for e in src.poll()}
    assert got["aws|us-east-1||p3.2xlarge|V100-16GB|1|on_demand"].usd_per_hour == 3.06
    assert got["aws|us-east-1||g5.xlarge|A10G|1|on_demand"].quoted_at == datetime(2025, 6, 1, tzinfo=UTC)
    assert len(got) == 2 and src.stats.rejected["malformed_product"] == 1


def test_spot_placement_scores_paged() -> None:
    ec2 = client("ec2")
    with Stubber(ec2) as stub:
        stub.add_response("get_spot_placement_scores", {"SpotPlacementScores": [
            {"Region": "us-east-1", "Score": 9}], "NextToken": "x"})
        stub.add_response("get_spot_placement_scores", {"SpotPlacementScores": [
            {"Region": "us-west-2", "Score": 2}, {"Region": "us-west-2", "Score": 0}]})
        src = AwsCapacitySource(env=CREDS, clients={("ec2", "us-east-1"): ec2}, regions=["us-east-1", "us-west-2"],
                                instance_types=["p3.2xlarge"], clock=lambda: NOW, **FAST)
        src._specs = {}
        got = {e.offer.region: e for e in src.poll()}
    assert got["us-east-1"].available and got["us-east-1"].capacity_score == 0.9
    assert not got["us-west-2"].available and got["us-west-2"].capacity_score == 0.2
    assert src.stats.rejected["bad_score"] == 1


def test_gpu_specs_from_describe_instance_types_in_moto() -> None:
    with mock_aws():
        specs = gpu_specs(client("ec2"), ["p5.48xlarge", "g6e.xlarge", "p3dn.24xlarge", "m5.large"])
    assert specs["p5.48xlarge"][:2] == ("H100-80GB", 8)
    assert specs["g6e.xlarge"][:2] == ("L40S", 1)
    assert specs["p3dn.24xlarge"][:2] == ("V100-32GB", 8)
    assert "m5.large" not in specs


@respx.mock
def test_spot_advisor_frequency_and_derived_price() -> None:
    data = {"ranges": [], "spot_advisor": {"us-east-1": {"Linux": {"p3.2xlarge": {"s": 70, "r": 3},
                                                                   "m5.large": {"s": 50, "r": 0},
                                                                   "g5.xlarge": {"s": 60, "r": 9}},
                                                         "Windows": {"p3.2xlarge": {"s": 60, "r": 1}}}}}
    respx.get("https://spot-bid-advisor.s3.amazonaws.com/spot-advisor-data.json").mock(
        return_value=httpx.Response(200, json=data))
    src = AwsSpotAdvisorSource(env={}, regions=["us-east-1"], clock=lambda: NOW, **FAST)
    out = src.poll()
    freq = [e for e in out if isinstance(e, InterruptionObserved)]
    assert len(freq) == 1 and freq[0].kind == InterruptionKind.FREQUENCY and freq[0].frequency_band == 3
    assert freq[0].interruption_probability_per_hour == pytest.approx(band_probability_per_hour(3))
    price = next(e for e in out if isinstance(e, PriceObserved))
    assert price.usd_per_hour == pytest.approx(3.06 * 0.3) and "DERIVED" in price.source
    assert src.stats.rejected["bad_band"] == 1


def test_interruption_warning_from_eventbridge_via_sqs() -> None:
    with mock_aws():
        ec2, sqs = client("ec2"), client("sqs")
        ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        inst = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType="g5.xlarge",
                                 Placement={"AvailabilityZone": "us-east-1b"})["Instances"][0]
        url = sqs.create_queue(QueueName="spot-interruptions")["QueueUrl"]
        warning = {"version": "0", "id": "7e3f1c2a-0000", "detail-type": "EC2 Spot Instance Interruption Warning",
                   "source": "aws.ec2", "account": "123456789012", "time": "2025-07-01T11:58:00Z",
                   "region": "us-east-1", "resources": [f"arn:aws:ec2:us-east-1b:instance/{inst['InstanceId']}"],
                   "detail": {"instance-id": inst["InstanceId"], "instance-action": "terminate"}}
        rebalance = {**warning, "id": "x", "detail-type": "EC2 Instance Rebalance Recommendation"}
        for body in (json.dumps(warning), json.dumps(rebalance), "not json"):
            sqs.send_message(QueueUrl=url, MessageBody=body)
        env = {**CREDS, "AWS_SPOT_INTERRUPTION_QUEUE_URL": url}
        src = AwsInterruptionSource(env=env, clients={("ec2", "us-east-1"): ec2, ("sqs", "us-east-1"): sqs},
                                    clock=lambda: NOW, **FAST)
        src.wait_time_s = 0
        src._specs = {}
        out = src.poll()
        assert int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"]["ApproximateNumberOfMessages"]) == 0  # all consumed and deleted
    assert len(out) == 1
    e = out[0]
    assert isinstance(e, InterruptionObserved) and e.kind == InterruptionKind.WARNING
    assert e.offer.key == "aws|us-east-1|us-east-1b|g5.xlarge|A10G|1|spot"
    assert e.instance_id == inst["InstanceId"] and e.occurred_at == datetime(2025, 7, 1, 11, 58, tzinfo=UTC)
    assert src.stats.rejected["not_an_interruption"] == 1 and src.stats.rejected["malformed_json"] == 1


def test_credentials_from_environment_only() -> None:
    assert AwsSpotSource.missing_credentials({"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}) is not None
    assert AwsSpotSource.missing_credentials({"AWS_PROFILE": "p"}) is None
    assert "QUEUE_URL" in (AwsInterruptionSource.missing_credentials(CREDS) or "")
