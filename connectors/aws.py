"""AWS (boto3; credentials from the standard chain: env, profile, web identity, container/instance role).

Sources (one API each, so one slow API never holds back another):
- `AwsOnDemandSource`: Price List API `pricing.get_products` (paginated, NextToken), Linux / shared tenancy /
  no pre-installed software / capacitystatus Used; quoted_at = the OnDemand term's effectiveDate.
- `AwsSpotSource`: `ec2.describe_spot_price_history` per region (paginated), newest price per zone and type;
  quoted_at = the record's Timestamp.
- `AwsCapacitySource`: `ec2.get_spot_placement_scores` per instance type (paginated), per region,
  capacity_score = score / 10, available = score >= 3 (documented threshold: 1-2 mean "unlikely").
- `AwsSpotAdvisorSource`: the public Spot Advisor JSON (interruption-frequency band per region and type);
  shared with the replay (`advisor_events`).
- `AwsInterruptionSource`: EC2 Spot Instance Interruption Warnings routed by EventBridge to an SQS queue
  (AWS_SPOT_INTERRUPTION_QUEUE_URL); the instance's type and zone come from `describe_instances`.
GPU specs come from `describe_instance_types` GpuInfo (`gpu_specs`), falling back to the static table in
connectors/gpu_names.py for instance types the API did not describe.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx

from connectors.base import MarketEvent, Reject, Source, SourceError, TransientError, parse_time
from connectors.gpu_names import AWS_INSTANCES, aws_gpu_info, aws_instance
from schemas.events import InterruptionKind
from schemas.offers import Market

log = logging.getLogger(__name__)

REGIONS = frozenset(
    ["us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "ca-west-1", "mx-central-1", "sa-east-1",
     "eu-west-1", "eu-west-2", "eu-west-3", "eu-central-1", "eu-central-2", "eu-north-1", "eu-south-1", "eu-south-2",
     "il-central-1", "me-south-1", "me-central-1", "af-south-1", "ap-east-1", "ap-east-2", "ap-south-1",
     "ap-south-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-southeast-1", "ap-southeast-2",
     "ap-southeast-3", "ap-southeast-4", "ap-southeast-5", "ap-southeast-7"])
DEFAULT_REGIONS = ("us-east-1", "us-east-2", "us-west-2")
DEFAULT_TYPES = tuple(sorted(t for t in AWS_INSTANCES if not t.startswith("p2.")))
SPOT_ADVISOR_URL = "https://spot-bid-advisor.s3.amazonaws.com/spot-advisor-data.json"

# Spot Advisor band -> share of instances interrupted over the trailing month (band midpoint; >20 % taken
# as 25 %) -> per-hour probability assuming a constant hazard over 730 h.
BAND_MONTHLY = {0: 0.025, 1: 0.075, 2: 0.125, 3: 0.175, 4: 0.25}


def band_probability_per_hour(band: int) -> float:
    return 1 - math.pow(1 - BAND_MONTHLY[band], 1 / 730)


# Reference on-demand list prices (USD/h, Linux, us-east-1; equal in us-east-2 and us-west-2 for these types)
# as published on aws.amazon.com/ec2/pricing/on-demand (2024-2025). Reference values only: used to derive
# spot prices from the Spot Advisor's savings where no Price List data is at hand. P4/P5 are omitted: their
# list prices were cut in June 2025, around the advisor snapshot, so no reliable reference exists.
REFERENCE_ON_DEMAND: dict[str, float] = {
    "p2.xlarge": 0.90, "p2.8xlarge": 7.20, "p2.16xlarge": 14.40,
    "p3.2xlarge": 3.06, "p3.8xlarge": 12.24, "p3.16xlarge": 24.48,
    "g4dn.xlarge": 0.526, "g4dn.2xlarge": 0.752, "g4dn.4xlarge": 1.204, "g4dn.8xlarge": 2.176,
    "g4dn.12xlarge": 3.912, "g4dn.16xlarge": 4.352, "g4dn.metal": 7.824,
    "g5.xlarge": 1.006, "g5.2xlarge": 1.212, "g5.4xlarge": 1.624, "g5.8xlarge": 2.448, "g5.12xlarge": 5.672,
    "g5.16xlarge": 4.096, "g5.24xlarge": 8.144, "g5.48xlarge": 16.288,
    "g6.xlarge": 0.8048, "g6.2xlarge": 0.9776, "g6.4xlarge": 1.3232, "g6.8xlarge": 2.0144,
    "g6.12xlarge": 4.6016, "g6.16xlarge": 3.3968, "g6.24xlarge": 6.6758, "g6.48xlarge": 13.3504,
    "g6e.xlarge": 1.861, "g6e.2xlarge": 2.24208, "g6e.4xlarge": 3.00424, "g6e.8xlarge": 4.52856,
    "g6e.12xlarge": 10.49264, "g6e.16xlarge": 7.57719, "g6e.24xlarge": 15.06559, "g6e.48xlarge": 30.13118,
}
REFERENCE_REGIONS = frozenset({"us-east-1", "us-east-2", "us-west-2"})


def _have_credentials(env: Mapping[str, str]) -> bool:
    keys = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
    if any(env.get(k) for k in keys):
        return True
    path = env.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.expanduser("~/.aws/credentials")
    return os.path.exists(path)


def _boto_call(fn: Any, **kw: Any) -> Any:
    """A boto3 call with throttling / 5xx mapped to TransientError (botocore's own retries run first)."""
    from botocore.exceptions import ClientError, EndpointConnectionError

    try:
        return fn(**kw)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in ("Throttling", "ThrottlingException", "RequestLimitExceeded", "ServiceUnavailable",
                    "InternalError") or status == 429 or status >= 500:
            raise TransientError(f"{code or status}") from exc
        raise SourceError(f"{code}: {exc}") from exc
    except EndpointConnectionError as exc:
        raise TransientError(str(exc)) from exc


def gpu_specs(ec2: Any, types: Iterable[str]) -> dict[str, tuple[str | None, int, str]]:
    """instance type -> (canonical GPU or None, GPUs per instance, raw name) from describe_instance_types."""
    out: dict[str, tuple[str | None, int, str]] = {}
    paginator = ec2.get_paginator("describe_instance_types")
    # a filter (not InstanceTypes=) so a type the region does not offer is simply absent, not an error
    for page in paginator.paginate(Filters=[{"Name": "instance-type", "Values": sorted(types)}]):
        for it in page.get("InstanceTypes", []):
            gpus = (it.get("GpuInfo") or {}).get("Gpus") or []
            if not gpus:
                continue
            g = gpus[0]
            raw = f"{g.get('Manufacturer', '')} {g.get('Name', '')} {g.get('MemoryInfo', {}).get('SizeInMiB')} MiB"
            out[it["InstanceType"]] = (aws_gpu_info(g.get("Name", ""), g.get("MemoryInfo", {}).get("SizeInMiB", 0)),
                                       sum(int(x.get("Count", 0)) for x in gpus), raw.strip())
    return out


class _AwsBase(Source):
    provider = "aws"
    known_regions = REGIONS

    def __init__(self, *, session: Any = None, clients: Mapping[tuple[str, str], Any] | None = None,
                 regions: Iterable[str] | None = None, instance_types: Iterable[str] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self._session = session
        self._clients: dict[tuple[str, str], Any] = dict(clients or {})
        env_regions = [r for r in self.env.get("CLOUDARB_AWS_REGIONS", "").split(",") if r]
        self.regions = list(regions or env_regions or DEFAULT_REGIONS)
        self.instance_types = list(instance_types or DEFAULT_TYPES)
        self._specs: dict[str, tuple[str | None, int, str]] | None = None

    @classmethod
    def missing_credentials(cls, env: Mapping[str, str]) -> str | None:
        return None if _have_credentials(env) else "no AWS credentials (AWS_ACCESS_KEY_ID / AWS_PROFILE / role)"

    def client(self, service: str, region: str) -> Any:
        if (service, region) not in self._clients:
            import boto3

            session = self._session or boto3.session.Session()
            self._clients[(service, region)] = session.client(service, region_name=region)
        return self._clients[(service, region)]

    def specs(self) -> dict[str, tuple[str | None, int, str]]:
        if self._specs is None:
            try:
                self._specs = self.call(lambda: gpu_specs(self.client("ec2", self.regions[0]), self.instance_types))
            except SourceError as exc:
                log.warning("%s: describe_instance_types failed (%s); using the static table", self.name, exc)
                self._specs = {}
        return self._specs

    def gpu_of(self, instance_type: str) -> tuple[str | None, int | None, str]:
        s = self.specs().get(instance_type)
        if s is not None:
            return s
        st = aws_instance(instance_type)
        return (st[0], st[1], instance_type) if st else (None, None, instance_type)

    def offer_for(self, region: str, instance_type: str, market: Market, zone: str = "") -> Any:
        gpu, n, raw = self.gpu_of(instance_type)
        return self.offer(region=region, zone=zone, instance_type=instance_type, gpu_model=gpu, gpus=n,
                          market=market, raw_gpu=raw)


class AwsOnDemandSource(_AwsBase):
    name = "aws-ondemand"
    poll_interval_s = 45.0  # a few GetProducts pages per region a poll: far below the Price List API throttle
    rate_per_s = 5.0

    def fetch(self) -> Iterable[MarketEvent | Reject]:
        pricing = self.client("pricing", "us-east-1")
        for region in self.regions:
            filters = [{"Type": "TERM_MATCH", "Field": f, "Value": v} for f, v in (
                ("regionCode", region), ("operatingSystem", "Linux"), ("tenancy", "Shared"),
                ("preInstalledSw", "NA"), ("capacitystatus", "Used"))]
            token: str | None = None
            while True:
                kw: dict[str, Any] = {"ServiceCode": "AmazonEC2", "Filters": filters, "MaxResults": 100}
                if token:
                    kw["NextToken"] = token
                page = self.call(functools.partial(_boto_call, pricing.get_products, **kw))
                for raw in page.get("PriceList", []):
                    yield from self._product(raw, region)
                token = page.get("NextToken")
                if not token:
                    break

    def _product(self, raw: Any, region: str) -> Iterable[MarketEvent | Reject]:
        try:
            doc = json.loads(raw) if isinstance(raw, str) else raw
            attrs = doc["product"]["attributes"]
            itype = attrs["instanceType"]
            terms = doc["terms"]["OnDemand"]
        except (ValueError, KeyError, TypeError) as exc:
            yield Reject("malformed_product", f"{type(exc).__name__}: {str(exc)[:80]}")
            return
        if itype not in self.instance_types:
            return
        for term in terms.values():
            for dim in term.get("priceDimensions", {}).values():
                if dim.get("unit") != "Hrs":
                    continue
                offer = self.offer_for(attrs.get("regionCode", region), itype, Market.ON_DEMAND)
                yield self.price(offer, dim.get("pricePerUnit", {}).get("USD"), parse_time(term.get("effectiveDate")),
                                 "aws:pricing.get_products OnDemand Linux shared, quoted_at=effectiveDate")


class AwsSpotSource(_AwsBase):
    name = "aws-spot"
    poll_interval_s = 30.0  # EC2 API token bucket (non-mutating: 100 burst, 20/s refill) allows far more
    rate_per_s = 5.0
    lookback = timedelta(hours=3)

    def fetch(self) -> Iterable[MarketEvent | Reject]:
        start = self.now() - self.lookback
        for region in self.regions:
            ec2 = self.client("ec2", region)
            newest: dict[tuple[str, str], dict[str, Any]] = {}
            token: str | None = None
            while True:
                kw: dict[str, Any] = {"InstanceTypes": self.instance_types, "ProductDescriptions": ["Linux/UNIX"],
                                      "StartTime": start, "MaxResults": 1000}
                if token:
                    kw["NextToken"] = token
                page = self.call(functools.partial(_boto_call, ec2.describe_spot_price_history, **kw))
                for rec in page.get("SpotPriceHistory", []):
                    az, it, ts = rec.get("AvailabilityZone"), rec.get("InstanceType"), parse_time(rec.get("Timestamp"))
                    if not isinstance(az, str) or not isinstance(it, str) or ts is None:
                        yield Reject("missing_field", str(rec)[:120])
                        continue
                    cur = newest.get((az, it))
                    if cur is None or ts > cur["_t"]:
                        newest[(az, it)] = {**rec, "_t": ts}
                token = page.get("NextToken")
                if not token:
                    break
            for (az, it), rec in sorted(newest.items()):
                if not az.startswith(region):
                    yield Reject("unknown_region", f"zone {az} outside {region}")
                    continue
                offer = self.offer_for(region, it, Market.SPOT, zone=az)
                yield self.price(offer, rec.get("SpotPrice"), rec["_t"],
                                 "aws:describe_spot_price_history Linux/UNIX, newest per zone")


class AwsCapacitySource(_AwsBase):
    name = "aws-capacity"
    poll_interval_s = 300.0  # placement scores have a tight per-account quota; a capacity signal, not a price
    rate_per_s = 1.0
    min_score_available = 3

    def fetch(self) -> Iterable[MarketEvent | Reject]:
        ec2 = self.client("ec2", self.regions[0])
        for it in self.instance_types:
            token: str | None = None
            while True:
                kw: dict[str, Any] = {"InstanceTypes": [it], "TargetCapacity": 1, "TargetCapacityUnitType": "units",
                                      "SingleAvailabilityZone": False, "RegionNames": self.regions, "MaxResults": 10}
                if token:
                    kw["NextToken"] = token
                page = self.call(functools.partial(_boto_call, ec2.get_spot_placement_scores, **kw))
                for s in page.get("SpotPlacementScores", []):
                    region, score = s.get("Region"), s.get("Score")
                    if not isinstance(region, str) or not isinstance(score, int) or not 1 <= score <= 10:
                        yield Reject("bad_score", str(s)[:100])
                        continue
                    offer = self.offer_for(region, it, Market.SPOT)
                    yield self.capacity(offer, score >= self.min_score_available, None,
                                        "aws:get_spot_placement_scores (score/10; available = score >= 3)",
                                        capacity_score=score / 10)
                token = page.get("NextToken")
                if not token:
                    break


def advisor_events(src: Source, data: Any, at: datetime, source: str,
                   od_prices: Mapping[tuple[str, str], float] | None = None,
                   regions: Iterable[str] | None = None) -> Iterable[MarketEvent | Reject]:
    """Spot Advisor JSON -> InterruptionObserved(frequency) per (region, GPU type), and a spot price derived
    as on-demand x (1 - savings%) where an on-demand price for (region, type) is given."""
    adv = data.get("spot_advisor") if isinstance(data, dict) else None
    if not isinstance(adv, dict):
        yield Reject("malformed_response", "no spot_advisor object")
        return
    wanted = set(regions) if regions is not None else None
    for region in sorted(adv):
        if wanted is not None and region not in wanted:
            continue
        reg = adv[region]
        linux = reg.get("Linux") if isinstance(reg, dict) else None
        if not isinstance(linux, dict):
            yield Reject("malformed_record", f"{region}: no Linux map")
            continue
        for it in sorted(linux):
            if it not in AWS_INSTANCES:
                continue  # not a GPU type we map (the advisor lists every EC2 type)
            rec = linux[it]
            if not isinstance(rec, dict):
                yield Reject("malformed_record", f"{region} {it}")
                continue
            band, savings = rec.get("r"), rec.get("s")
            if not isinstance(band, int) or band not in BAND_MONTHLY:
                yield Reject("bad_band", f"{region} {it}: {band!r}")
                continue
            gpu, n = AWS_INSTANCES[it]
            offer = src.offer(region=region, instance_type=it, gpu_model=gpu, gpus=n, market=Market.SPOT)
            yield src.interruption(
                offer, InterruptionKind.FREQUENCY, at,
                f"{source} band {band} ({BAND_MONTHLY[band]:.1%}/month midpoint) -> p/h=1-(1-m)^(1/730)",
                band=band, probability=band_probability_per_hour(band))
            od = (od_prices or {}).get((region, it))
            if od is not None and isinstance(savings, int | float) and 0 <= savings < 100:
                yield src.price(offer, round(od * (1 - savings / 100), 4), at,
                                f"{source} DERIVED spot = reference on-demand {od} x (1 - {savings}% savings)")


class AwsSpotAdvisorSource(_AwsBase):
    name = "aws-spot-advisor"
    poll_interval_s = 900.0  # a band (monthly statistic), not a price; the file changes a few times a day
    rate_per_s = 1.0

    def __init__(self, *, client: httpx.Client | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.http = client or httpx.Client(timeout=30.0)
        self.url = self.env.get("AWS_SPOT_ADVISOR_URL", SPOT_ADVISOR_URL)

    @classmethod
    def missing_credentials(cls, env: Mapping[str, str]) -> str | None:
        return None  # public file

    def fetch(self) -> Iterable[MarketEvent | Reject]:
        data = self.http_json(self.http, "GET", self.url)
        od = {(r, t): p for r in REFERENCE_REGIONS for t, p in REFERENCE_ON_DEMAND.items()}
        yield from advisor_events(self, data, self.now().replace(second=0, microsecond=0), "aws:spot-advisor",
                                  od_prices=od, regions=self.regions)


class AwsInterruptionSource(_AwsBase):
    name = "aws-interruptions"
    poll_interval_s = 1.0  # long polling (WaitTimeSeconds) keeps the 2-minute warning's lag to ~1 s
    rate_per_s = 5.0
    wait_time_s = 10

    @classmethod
    def missing_credentials(cls, env: Mapping[str, str]) -> str | None:
        if not env.get("AWS_SPOT_INTERRUPTION_QUEUE_URL"):
            return "AWS_SPOT_INTERRUPTION_QUEUE_URL is not set (no EventBridge -> SQS interruption warnings)"
        return super().missing_credentials(env)

    def fetch(self) -> Iterable[MarketEvent | Reject]:
        url = self.env["AWS_SPOT_INTERRUPTION_QUEUE_URL"]
        region = self.env.get("AWS_SPOT_INTERRUPTION_QUEUE_REGION") or (
            url.split(".")[1] if "://sqs." in url else self.regions[0])
        sqs = self.client("sqs", region)
        resp = self.call(lambda: _boto_call(sqs.receive_message, QueueUrl=url, MaxNumberOfMessages=10,
                                            WaitTimeSeconds=self.wait_time_s))
        for m in resp.get("Messages", []):
            yield self.convert(m.get("Body", ""))
            self.call(functools.partial(_boto_call, sqs.delete_message, QueueUrl=url,
                                        ReceiptHandle=m["ReceiptHandle"]))

    def convert(self, body: str) -> MarketEvent | Reject:
        try:
            ev = json.loads(body)
        except ValueError as exc:
            return Reject("malformed_json", str(exc)[:80])
        if not isinstance(ev, dict) or ev.get("detail-type") != "EC2 Spot Instance Interruption Warning":
            return Reject("not_an_interruption", str(ev.get("detail-type") if isinstance(ev, dict) else ev)[:80])
        detail = ev.get("detail")
        iid = detail.get("instance-id") if isinstance(detail, dict) else None
        t, region = parse_time(ev.get("time")), ev.get("region")
        if not isinstance(iid, str) or t is None or not isinstance(region, str):
            return Reject("missing_field", "detail.instance-id/time/region")
        if region not in REGIONS:
            return Reject("unknown_region", repr(region)[:60])
        try:
            r = _boto_call(self.client("ec2", region).describe_instances, InstanceIds=[iid])
            inst = r["Reservations"][0]["Instances"][0]
            itype, az = inst["InstanceType"], inst["Placement"]["AvailabilityZone"]
        except Exception as exc:  # any lookup failure (gone, throttled, invalid id) rejects this message only
            return Reject("unresolved_instance", f"{iid}: {exc}"[:120])
        offer = self.offer_for(region, itype, Market.SPOT, zone=az)
        return self.interruption(offer, InterruptionKind.WARNING, t,
                                 "aws:eventbridge->sqs EC2 Spot Instance Interruption Warning", instance_id=iid,
                                 id_parts=(ev.get("id", ""),))
