"""GCP: Cloud Billing Catalog SKUs composed into machine prices; preemptions from Pub/Sub.

Prices (GCP_API_KEY, sent as the X-goog-api-key header, never as ?key=): GET
https://cloudbilling.googleapis.com/v1/services/6F81-5844-456A/skus (Compute Engine), paged with
pageToken/nextPageToken. A GPU machine's hourly price is composed from its SKUs: vCPUs x
"<FAMILY> Instance Core" + RAM GiB x "<FAMILY> Instance Ram" + GPUs x "Nvidia <GPU> GPU", each
"running in <region group>" with `serviceRegions`; on-demand SKUs have usageType OnDemand, spot SKUs
"Spot Preemptible ..." usageType Preemptible. Commitment SKUs are ignored. quoted_at = the newest
effectiveTime of the three. A machine is emitted in a region only where its GPU SKU is offered; a missing
core or RAM SKU there is rejected (`incomplete_sku_set`). The Cloud Billing API quota (per project,
some hundreds of requests a minute) is far above one paged listing every 45 s.

Preemptions (GCP_PREEMPTION_SUBSCRIPTION = projects/P/subscriptions/S): a Cloud Logging sink with filter
protoPayload.methodName="compute.instances.preempted" routed to a Pub/Sub topic. Each message is a
LogEntry; the instance's machine type is looked up (Compute API instances.get, or an injected
`instance_lookup`) and mapped to its GPU; -> InterruptionObserved(kind=preempted). Messages are
acknowledged after conversion (a rejected one is counted and acknowledged, so it cannot loop).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import httpx

from connectors.base import MarketEvent, Reject, Source, SourceError, TransientError, parse_time
from connectors.gpu_names import gcp_sku_gpu
from schemas.events import InterruptionKind
from schemas.offers import Market

log = logging.getLogger(__name__)

COMPUTE_SERVICE = "services/6F81-5844-456A"
# machine type -> (family SKU prefix, GPU SKU name, GPUs, vCPUs, RAM GiB) (shapes as in the GCP docs)
MACHINES: dict[str, tuple[str, str, int, int, float]] = {
    "a2-highgpu-1g": ("A2", "tesla a100", 1, 12, 85), "a2-highgpu-2g": ("A2", "tesla a100", 2, 24, 170),
    "a2-highgpu-4g": ("A2", "tesla a100", 4, 48, 340), "a2-highgpu-8g": ("A2", "tesla a100", 8, 96, 680),
    "a2-megagpu-16g": ("A2", "tesla a100", 16, 96, 1360),
    "a2-ultragpu-1g": ("A2", "a100 80gb", 1, 12, 170), "a2-ultragpu-2g": ("A2", "a100 80gb", 2, 24, 340),
    "a2-ultragpu-4g": ("A2", "a100 80gb", 4, 48, 680), "a2-ultragpu-8g": ("A2", "a100 80gb", 8, 96, 1360),
    "a3-highgpu-1g": ("A3", "h100 80gb", 1, 26, 234), "a3-highgpu-2g": ("A3", "h100 80gb", 2, 52, 468),
    "a3-highgpu-4g": ("A3", "h100 80gb", 4, 104, 936), "a3-highgpu-8g": ("A3", "h100 80gb", 8, 208, 1872),
    "a3-megagpu-8g": ("A3", "h100 80gb mega", 8, 208, 1872),
    "g2-standard-4": ("G2", "l4", 1, 4, 16), "g2-standard-8": ("G2", "l4", 1, 8, 32),
    "g2-standard-12": ("G2", "l4", 1, 12, 48), "g2-standard-16": ("G2", "l4", 1, 16, 64),
    "g2-standard-24": ("G2", "l4", 2, 24, 96), "g2-standard-32": ("G2", "l4", 1, 32, 128),
    "g2-standard-48": ("G2", "l4", 4, 48, 192), "g2-standard-96": ("G2", "l4", 8, 96, 384),
}
REGIONS = frozenset(
    ["us-central1", "us-east1", "us-east4", "us-east5", "us-south1", "us-west1", "us-west2", "us-west3", "us-west4",
     "northamerica-northeast1", "northamerica-northeast2", "northamerica-south1", "southamerica-east1",
     "southamerica-west1", "europe-west1", "europe-west2", "europe-west3", "europe-west4", "europe-west6",
     "europe-west8", "europe-west9", "europe-west10", "europe-west12", "europe-north1", "europe-north2",
     "europe-central2", "europe-southwest1", "me-west1", "me-central1", "me-central2", "africa-south1", "asia-east1",
     "asia-east2", "asia-northeast1", "asia-northeast2", "asia-northeast3", "asia-south1", "asia-south2",
     "asia-southeast1", "asia-southeast2", "australia-southeast1", "australia-southeast2"])
_SKU = re.compile(r"^(?P<spot>Spot Preemptible )?(?:(?P<fam>[A-Z]\d) Instance (?P<kind>Core|Ram)"
                  r"|Nvidia (?P<gpu>.+?) GPU) running in (?P<where>.+)$")
SOURCE_PRICE = "gcp:billing-catalog SKUs composed vCPU+RAM+GPU ({market}), quoted_at=newest effectiveTime"
SOURCE_PREEMPT = "gcp:pubsub logging sink compute.instances.preempted"


def sku_unit_price(sku: Mapping[str, Any]) -> float | None:
    """USD per usage unit of the SKU's current pricing (the last tier, i.e. the list rate)."""
    try:
        rates = sku["pricingInfo"][0]["pricingExpression"]["tieredRates"]
        up = rates[-1]["unitPrice"]
        return int(up.get("units") or 0) + int(up.get("nanos") or 0) / 1e9
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None


class GcpPricesSource(Source):
    name = "gcp-prices"
    provider = "gcp"
    poll_interval_s = 45.0
    rate_per_s = 5.0
    known_regions = REGIONS
    max_pages = 100

    def __init__(self, *, client: httpx.Client | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.url = self.env.get("GCP_BILLING_URL", f"https://cloudbilling.googleapis.com/v1/{COMPUTE_SERVICE}/skus")
        self.client = client or httpx.Client(timeout=60.0)

    @classmethod
    def missing_credentials(cls, env: Mapping[str, str]) -> str | None:
        return None if env.get("GCP_API_KEY") else "GCP_API_KEY is not set (Cloud Billing Catalog API key)"

    def skus(self) -> Iterable[dict[str, Any]]:
        token = ""
        # the key travels as a header, never in the URL (URLs end up in logs: httpx logs each one at INFO)
        headers = {"X-goog-api-key": self.env.get("GCP_API_KEY", "")}
        for _ in range(self.max_pages):
            params = {"currencyCode": "USD", "pageSize": "5000"}
            if token:
                params["pageToken"] = token
            body = self.http_json(self.client, "GET", self.url, params=params, headers=headers)
            skus = body.get("skus") if isinstance(body, dict) else None
            if not isinstance(skus, list):
                self.reject("malformed_response", "no 'skus' list")
                raise SourceError("gcp: response has no 'skus' list")
            yield from (s for s in skus if isinstance(s, dict))
            token = body.get("nextPageToken") or ""
            if not token:
                return
        raise SourceError(f"gcp: more than {self.max_pages} pages")

    def fetch(self) -> Iterable[MarketEvent | Reject]:
        # (spot?, component, region) -> (unit price, effective time); component = "A2 Core" | "A2 Ram" | "gpu:<name>"
        table: dict[tuple[bool, str, str], tuple[float, datetime | None]] = {}
        for sku in self.skus():
            desc = sku.get("description")
            cat = sku.get("category")
            usage = cat.get("usageType") if isinstance(cat, dict) else None
            if not isinstance(desc, str) or usage not in ("OnDemand", "Preemptible"):
                continue
            m = _SKU.match(desc)
            if m is None:
                continue
            spot = bool(m.group("spot")) or usage == "Preemptible"
            if m.group("fam"):
                comp = f"{m.group('fam')} {m.group('kind')}"
            else:
                comp = "gpu:" + " ".join(m.group("gpu").lower().split())
            price = sku_unit_price(sku)
            if price is None or not price > 0:
                yield Reject("bad_price", f"{desc}: no positive unit price")
                continue
            pi = sku.get("pricingInfo")
            eff = parse_time(pi[0].get("effectiveTime")) if isinstance(pi, list) and pi and isinstance(pi[0], dict) \
                else None
            regions = sku.get("serviceRegions")
            if not isinstance(regions, list):
                yield Reject("missing_field", f"{desc}: serviceRegions")
                continue
            for region in regions:
                if not isinstance(region, str):
                    yield Reject("missing_field", f"{desc}: region {region!r}")
                    continue
                table[(spot, comp, region)] = (price, eff)
        gpu_regions = sorted({(spot, comp[4:], region) for spot, comp, region in table if comp.startswith("gpu:")})
        for machine, (fam, gpu_sku, n, vcpus, ram) in sorted(MACHINES.items()):
            for spot, gname, region in gpu_regions:
                if gname != gpu_sku:
                    continue
                core, mem = table.get((spot, f"{fam} Core", region)), table.get((spot, f"{fam} Ram", region))
                gpu = table[(spot, f"gpu:{gname}", region)]
                market = Market.SPOT if spot else Market.ON_DEMAND
                if core is None or mem is None:
                    yield Reject("incomplete_sku_set", f"{machine} {market.value} {region}: no {fam} core/ram SKU")
                    continue
                total = round(vcpus * core[0] + ram * mem[0] + n * gpu[0], 6)
                times = [t for t in (core[1], mem[1], gpu[1]) if t is not None]
                offer = self.offer(region=region, instance_type=machine, gpu_model=gcp_sku_gpu(gname), gpus=n,
                                   market=market, raw_gpu=gname)
                yield self.price(offer, total, max(times) if times else None, SOURCE_PRICE.format(market=market.value))
        for (_, comp, _) in table:
            if comp.startswith("gpu:") and gcp_sku_gpu(comp[4:]) is None:
                self.reject("unknown_gpu", f"GPU SKU {comp[4:]!r}")


InstanceLookup = Callable[[str, str, str], "str | None"]  # (project, zone, instance) -> machine type


def compute_api_lookup(project: str, zone: str, instance: str) -> str | None:
    """Machine type of an instance via the Compute API (Application Default Credentials)."""
    import google.auth
    import google.auth.transport.requests

    creds, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/compute.readonly"])
    creds.refresh(google.auth.transport.requests.Request())
    r = httpx.get(f"https://compute.googleapis.com/compute/v1/projects/{project}/zones/{zone}/instances/{instance}",
                  headers={"Authorization": f"Bearer {creds.token}"}, timeout=20.0)
    if r.status_code != 200:
        return None
    mt = r.json().get("machineType")
    return mt.rsplit("/", 1)[-1] if isinstance(mt, str) else None


def _pull(sub: Any, subscription: str, timeout_s: float) -> Any:
    from google.api_core import exceptions as gexc

    try:
        return sub.pull(request={"subscription": subscription, "max_messages": 100}, timeout=timeout_s)
    except gexc.DeadlineExceeded:
        return None  # nothing to pull within the timeout
    except (gexc.ServiceUnavailable, gexc.TooManyRequests, gexc.InternalServerError) as exc:
        raise TransientError(str(exc)[:200]) from exc


class GcpPreemptionSource(Source):
    name = "gcp-preemptions"
    provider = "gcp"
    poll_interval_s = 2.0
    rate_per_s = 5.0
    known_regions = REGIONS

    def __init__(self, *, subscriber: Any = None, instance_lookup: InstanceLookup | None = None,
                 timeout_s: float = 10.0, **kw: Any) -> None:
        super().__init__(**kw)
        self._subscriber = subscriber
        self.subscription = self.env.get("GCP_PREEMPTION_SUBSCRIPTION", "")
        self.lookup = instance_lookup or compute_api_lookup
        self.timeout_s = timeout_s

    @classmethod
    def missing_credentials(cls, env: Mapping[str, str]) -> str | None:
        if not env.get("GCP_PREEMPTION_SUBSCRIPTION"):
            return "GCP_PREEMPTION_SUBSCRIPTION is not set (no Pub/Sub preemption events)"
        adc = os.path.expanduser("~/.config/gcloud/application_default_credentials.json")
        if env.get("GOOGLE_APPLICATION_CREDENTIALS") or env.get("PUBSUB_EMULATOR_HOST") or os.path.exists(adc):
            return None
        return "no Google credentials (GOOGLE_APPLICATION_CREDENTIALS or application default credentials)"

    def subscriber(self) -> Any:
        if self._subscriber is None:
            from google.cloud import pubsub_v1

            self._subscriber = pubsub_v1.SubscriberClient()
        return self._subscriber

    def convert(self, data: bytes) -> MarketEvent | Reject:
        try:
            entry = json.loads(data)
        except ValueError as exc:
            return Reject("malformed_json", str(exc)[:80])
        pp = entry.get("protoPayload") if isinstance(entry, dict) else None
        if not isinstance(pp, dict) or pp.get("methodName") != "compute.instances.preempted":
            return Reject("not_a_preemption", str(pp.get("methodName") if isinstance(pp, dict) else entry)[:80])
        t = parse_time(entry.get("timestamp"))
        m = re.match(r"^projects/([^/]+)/zones/([^/]+)/instances/([^/]+)$", str(pp.get("resourceName", "")))
        if t is None or m is None:
            return Reject("missing_field", "timestamp/protoPayload.resourceName")
        project, zone, instance = m.groups()
        region = zone.rsplit("-", 1)[0]
        try:
            machine = self.lookup(project, zone, instance)
        except Exception as exc:
            return Reject("unresolved_instance", f"{instance}: {exc}"[:120])
        spec = MACHINES.get(machine or "")
        if spec is None:
            return Reject("unknown_gpu", f"machine type {machine!r} of {instance}")
        offer = self.offer(region=region, zone=zone, instance_type=str(machine), gpu_model=gcp_sku_gpu(spec[1]),
                           gpus=spec[2], market=Market.SPOT, raw_gpu=spec[1])
        res = entry.get("resource")
        labels = res.get("labels") if isinstance(res, dict) else None
        iid = str((labels.get("instance_id") if isinstance(labels, dict) else None) or instance)
        return self.interruption(offer, InterruptionKind.PREEMPTED, t, SOURCE_PREEMPT, instance_id=iid[:128],
                                 id_parts=(entry.get("insertId", ""),))

    def fetch(self) -> Iterable[MarketEvent | Reject]:
        sub = self.subscriber()
        resp = self.call(lambda: _pull(sub, self.subscription, self.timeout_s))
        if resp is None:
            return
        ack: list[str] = []
        for rm in resp.received_messages:
            yield self.convert(rm.message.data)
            ack.append(rm.ack_id)
        if ack:
            self.call(lambda: sub.acknowledge(request={"subscription": self.subscription, "ack_ids": ack}))

    def close(self) -> None:
        super().close()
        if self._subscriber is not None:
            self._subscriber.close()
