"""Lambda Cloud: GET /api/v1/instance-types (API key from LAMBDA_API_KEY).

Response shape: {"data": {NAME: {"instance_type": {"name", "gpu_description", "price_cents_per_hour",
"specs": {"vcpus", "memory_gib", "storage_gib", "gpus"}}, "regions_with_capacity_available": [{"name",
"description"}]}}}. One on-demand price per instance type (the same in every region), so we emit it for each
region the type has been seen in, plus a CapacityObserved per (type, region) when capacity turns on or off.
The API has no paging and no quote time: quoted_at is the observation time (said in `source`).
Rate limit: Lambda documents 1 request/second for its API; one request per poll at a 20 s interval keeps a
price change's poll-to-topic lag under 60 s with a wide margin.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from connectors.base import MarketEvent, Reject, Source, SourceError
from connectors.gpu_names import lambda_gpu, lambda_gpu_count
from schemas.offers import Market

REGIONS = frozenset({
    "us-east-1", "us-east-2", "us-east-3", "us-west-1", "us-west-2", "us-west-3", "us-south-1", "us-south-2",
    "us-south-3", "us-midwest-1", "us-midwest-2", "europe-central-1", "europe-west-1", "asia-northeast-1",
    "asia-northeast-2", "asia-south-1", "me-west-1", "australia-east-1",
})
SOURCE_PRICE = "lambda:/instance-types price_cents_per_hour/100 (quote time = observation time)"
SOURCE_CAP = "lambda:/instance-types regions_with_capacity_available"


class LambdaSource(Source):
    name = "lambda"
    provider = "lambda"
    poll_interval_s = 20.0
    rate_per_s = 1.0
    known_regions = REGIONS

    def __init__(self, *, client: httpx.Client | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.base_url = self.env.get("LAMBDA_API_URL", "https://cloud.lambda.ai/api/v1").rstrip("/")
        self.client = client or httpx.Client(timeout=20.0)
        self._regions: dict[str, set[str]] = {}  # instance type -> regions ever seen

    @classmethod
    def missing_credentials(cls, env: Mapping[str, str]) -> str | None:
        return None if env.get("LAMBDA_API_KEY") else "LAMBDA_API_KEY is not set"

    def fetch(self) -> Iterable[MarketEvent | Reject]:
        body = self.http_json(self.client, "GET", f"{self.base_url}/instance-types",
                              headers={"Authorization": f"Bearer {self.env.get('LAMBDA_API_KEY', '')}"})
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            self.reject("malformed_response", "no 'data' object")
            raise SourceError("lambda: response has no 'data' object")
        for name in sorted(data):
            yield from self._one(name, data[name])

    def _one(self, name: str, entry: Any) -> Iterable[MarketEvent | Reject]:
        it = entry.get("instance_type") if isinstance(entry, dict) else None
        if not isinstance(it, dict):
            yield Reject("missing_field", f"{name}: instance_type")
            return
        desc = it.get("gpu_description")
        if not isinstance(desc, str):
            yield Reject("missing_field", f"{name}: gpu_description")
            return
        gpu = lambda_gpu(desc)
        specs_raw = it.get("specs")
        specs: dict[str, Any] = specs_raw if isinstance(specs_raw, dict) else {}
        n = specs.get("gpus") if isinstance(specs.get("gpus"), int) else lambda_gpu_count(name)
        cents = it.get("price_cents_per_hour")
        regions_raw = entry.get("regions_with_capacity_available")
        if not isinstance(regions_raw, list):
            yield Reject("missing_field", f"{name}: regions_with_capacity_available")
            return
        now_avail: set[str] = set()
        for r in regions_raw:
            rn = r.get("name") if isinstance(r, dict) else None
            if not isinstance(rn, str):
                yield Reject("missing_field", f"{name}: region name")
                continue
            if rn not in REGIONS:
                yield Reject("unknown_region", repr(rn))
                continue
            now_avail.add(rn)
        seen = self._regions.setdefault(name, set())
        seen |= now_avail
        price = cents / 100 if isinstance(cents, int | float) and not isinstance(cents, bool) else cents
        for region in sorted(seen):
            offer = self.offer(region=region, instance_type=name, gpu_model=gpu, gpus=n, market=Market.ON_DEMAND,
                               raw_gpu=desc)
            yield self.price(offer, price, None, SOURCE_PRICE)
            yield self.capacity(offer, region in now_avail, None, SOURCE_CAP)
        if not seen and gpu is None:
            yield Reject("unknown_gpu", repr(desc))
