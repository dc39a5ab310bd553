"""RunPod: GraphQL `gpuTypes` with `lowestPrice` (API key from RUNPOD_API_KEY).

Per GPU type we emit 1-GPU offers in region 'global' (the query is not per data centre):
on-demand `securePrice` (instance type '<id> secure') and `communityPrice` ('<id> community'), spot
`lowestPrice.minimumBidPrice` (the interruptible bid floor), and capacity from `lowestPrice.stockStatus`
(High/Medium/Low -> available with score 1.0/0.6/0.3; missing/None -> unavailable). No paging (the query
returns all GPU types in one response); no quote time (quoted_at = observation time).
Rate limit: RunPod's GraphQL API is rate limited per key (not published as a number); one request per
30 s poll keeps poll-to-topic lag under 60 s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from connectors.base import MarketEvent, Reject, Source, SourceError
from connectors.gpu_names import runpod_gpu
from schemas.offers import Market

QUERY = """query GpuTypes {
  gpuTypes {
    id displayName memoryInGb secureCloud communityCloud securePrice communityPrice
    secureSpotPrice communitySpotPrice
    lowestPrice(input: {gpuCount: 1}) { minimumBidPrice uninterruptablePrice stockStatus }
  }
}"""
STOCK_SCORE = {"high": 1.0, "medium": 0.6, "low": 0.3}
SOURCE = "runpod:graphql gpuTypes {field} (1 GPU; quote time = observation time)"


class RunPodSource(Source):
    name = "runpod"
    provider = "runpod"
    poll_interval_s = 30.0
    rate_per_s = 1.0
    known_regions = frozenset({"global"})

    def __init__(self, *, client: httpx.Client | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.url = self.env.get("RUNPOD_GRAPHQL_URL", "https://api.runpod.io/graphql")
        self.client = client or httpx.Client(timeout=20.0)

    @classmethod
    def missing_credentials(cls, env: Mapping[str, str]) -> str | None:
        return None if env.get("RUNPOD_API_KEY") else "RUNPOD_API_KEY is not set"

    def fetch(self) -> Iterable[MarketEvent | Reject]:
        body = self.http_json(self.client, "POST", self.url, json={"query": QUERY},
                              headers={"Authorization": f"Bearer {self.env.get('RUNPOD_API_KEY', '')}"})
        if isinstance(body, dict) and body.get("errors"):
            raise SourceError(f"runpod: GraphQL errors {str(body['errors'])[:200]}")
        data = body.get("data") if isinstance(body, dict) else None
        types = data.get("gpuTypes") if isinstance(data, dict) else None
        if not isinstance(types, list):
            self.reject("malformed_response", "no data.gpuTypes list")
            raise SourceError("runpod: no data.gpuTypes list")
        for t in types:
            yield from self._one(t)

    def _one(self, t: Any) -> Iterable[MarketEvent | Reject]:
        if not isinstance(t, dict) or not isinstance(t.get("id"), str):
            yield Reject("missing_field", "gpuType without id")
            return
        gid = t["id"]
        gpu = runpod_gpu(gid)
        if gpu is None:
            yield Reject("unknown_gpu", repr(gid))
            return
        lp_raw = t.get("lowestPrice")
        lp: dict[str, Any] = lp_raw if isinstance(lp_raw, dict) else {}
        for field, cloud, market, value in (
                ("securePrice", "secure", Market.ON_DEMAND, t.get("securePrice")),
                ("communityPrice", "community", Market.ON_DEMAND, t.get("communityPrice")),
                ("lowestPrice.minimumBidPrice", "spot", Market.SPOT, lp.get("minimumBidPrice"))):
            if value is None or (cloud == "secure" and t.get("secureCloud") is False) \
                    or (cloud == "community" and t.get("communityCloud") is False):
                continue  # not offered in that cloud
            offer = self.offer(region="global", instance_type=f"{gid} {cloud}", gpu_model=gpu, gpus=1, market=market)
            yield self.price(offer, value, None, SOURCE.format(field=field))
        stock = lp.get("stockStatus")
        score = STOCK_SCORE.get(str(stock).lower()) if stock is not None else None
        offer = self.offer(region="global", instance_type=f"{gid} secure", gpu_model=gpu, gpus=1,
                           market=Market.ON_DEMAND)
        yield self.capacity(offer, score is not None, None, SOURCE.format(field="lowestPrice.stockStatus"),
                            capacity_score=score)
