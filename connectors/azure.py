"""Azure: Retail Prices API (public, no key) and spot evictions from Event Hubs.

Prices: GET https://prices.azure.com/api/retail/prices?$filter=... following `NextPageLink` until null.
Items: {"armSkuName", "armRegionName", "skuName" ("NC24ads A100 v4 Spot" / "... Low Priority"),
"productName" ("Virtual Machines NCads A100 v4 Series" / "... Windows"), "type" ("Consumption" / "Reservation"
/ "DevTestConsumption"), "unitOfMeasure" ("1 Hour"), "retailPrice", "effectiveStartDate", ...}.
Kept: Consumption, per hour, Linux. "Spot" -> spot market; "Low Priority" (the older Batch/VMSS
preemptible tier) is not the spot market and is skipped (counted as `low_priority`); Windows is skipped.
quoted_at = effectiveStartDate. The catalogue changes rarely; a 45 s poll of the GPU SKUs (a few pages
of up to 1000 items) stays far inside the API's (unpublished) throttling.

Evictions: an Event Hub fed by Activity Log diagnostic settings (or any router) carrying records whose
operationName is Microsoft.Compute/virtualMachines/evictSpotVM/action (or a Scheduled Events 'Preempt').
A record must let us name the offer: `properties.vmSize` (armSkuName) and `location` (region) or a
`vm_lookup(resourceId) -> (vmSize, region)` supplied by the deployment; otherwise it is rejected with
that reason. Each record becomes InterruptionObserved(kind=preempted). The consumer runs
EventHubConsumerClient.receive_batch in a background thread and checkpoints after converting a batch.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx

from connectors.base import MarketEvent, Reject, Source, SourceError, parse_time
from connectors.gpu_names import AZURE_SKUS, azure_sku
from schemas.events import InterruptionKind
from schemas.offers import Market

log = logging.getLogger(__name__)

REGIONS = frozenset(
    ["eastus", "eastus2", "centralus", "northcentralus", "southcentralus", "westcentralus", "westus", "westus2",
     "westus3", "canadacentral", "canadaeast", "brazilsouth", "brazilsoutheast", "mexicocentral", "northeurope",
     "westeurope", "uksouth", "ukwest", "francecentral", "francesouth", "germanywestcentral", "germanynorth",
     "switzerlandnorth", "switzerlandwest", "norwayeast", "norwaywest", "swedencentral", "swedensouth",
     "polandcentral", "italynorth", "spaincentral", "austriaeast", "belgiumcentral", "eastasia", "southeastasia",
     "japaneast", "japanwest", "koreacentral", "koreasouth", "australiaeast", "australiasoutheast",
     "australiacentral", "australiacentral2", "centralindia", "southindia", "westindia", "jioindiawest",
     "jioindiacentral", "uaenorth", "uaecentral", "qatarcentral", "israelcentral", "southafricanorth",
     "southafricawest", "newzealandnorth", "indonesiacentral", "malaysiawest", "chilecentral", "taiwannorth",
     "usgovvirginia", "usgovarizona", "usgovtexas"])
SOURCE_PRICE = "azure:retail-prices retailPrice (Consumption, Linux), quoted_at=effectiveStartDate"
SOURCE_EVICT = "azure:eventhub activity-log evictSpotVM"
EVICT_OPS = ("microsoft.compute/virtualmachines/evictspotvm/action", "preempt")


def price_filter(skus: Iterable[str]) -> str:
    ors = " or ".join(f"armSkuName eq '{s}'" for s in sorted(skus))
    return f"serviceName eq 'Virtual Machines' and priceType eq 'Consumption' and ({ors})"


class AzurePricesSource(Source):
    name = "azure-prices"
    provider = "azure"
    poll_interval_s = 45.0
    rate_per_s = 2.0
    known_regions = REGIONS
    max_pages = 200

    def __init__(self, *, client: httpx.Client | None = None, skus: Iterable[str] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.url = self.env.get("AZURE_RETAIL_PRICES_URL", "https://prices.azure.com/api/retail/prices")
        self.client = client or httpx.Client(timeout=30.0)
        self.skus = sorted(skus or AZURE_SKUS)

    def fetch(self) -> Iterable[MarketEvent | Reject]:
        url: str | None = self.url
        params: dict[str, str] | None = {"api-version": "2023-01-01-preview", "$filter": price_filter(self.skus)}
        for _ in range(self.max_pages):
            if url is None:
                return
            body = self.http_json(self.client, "GET", url, params=params)
            items = body.get("Items") if isinstance(body, dict) else None
            if not isinstance(items, list):
                self.reject("malformed_response", "no 'Items' list")
                raise SourceError("azure: response has no 'Items' list")
            for it in items:
                yield self._item(it)
            nxt = body.get("NextPageLink")
            url, params = (nxt if isinstance(nxt, str) and nxt else None), None  # the link carries the query
        raise SourceError(f"azure: more than {self.max_pages} pages")

    def _item(self, it: Any) -> MarketEvent | Reject:
        if not isinstance(it, dict):
            return Reject("missing_field", "item is not an object")
        sku, region, sku_name = it.get("armSkuName"), it.get("armRegionName"), it.get("skuName")
        if not all(isinstance(x, str) for x in (sku, region, sku_name)):
            return Reject("missing_field", f"armSkuName/armRegionName/skuName in {str(it)[:120]}")
        assert isinstance(sku, str) and isinstance(region, str) and isinstance(sku_name, str)
        if it.get("type") != "Consumption" or it.get("unitOfMeasure") != "1 Hour":
            return Reject("not_hourly_consumption", f"{sku} {it.get('type')} {it.get('unitOfMeasure')}")
        if "windows" in str(it.get("productName", "")).lower():
            return Reject("windows", sku)
        if sku_name.endswith("Low Priority"):
            return Reject("low_priority", sku)
        market = Market.SPOT if sku_name.endswith("Spot") else Market.ON_DEMAND
        m = azure_sku(sku)
        offer = self.offer(region=region, instance_type=sku, gpu_model=m[0] if m else None,
                           gpus=m[1] if m else None, market=market, raw_gpu=sku)
        return self.price(offer, it.get("retailPrice"), parse_time(it.get("effectiveStartDate")), SOURCE_PRICE)


VmLookup = Callable[[str], "tuple[str, str] | None"]


class AzureEvictionSource(Source):
    """Spot evictions from an Event Hub (AZURE_EVENTHUB_CONNECTION_STRING, AZURE_EVENTHUB_NAME)."""

    name = "azure-evictions"
    provider = "azure"
    poll_interval_s = 5.0
    rate_per_s = 5.0
    known_regions = REGIONS

    def __init__(self, *, consumer: Any = None, vm_lookup: VmLookup | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self._consumer = consumer
        self.vm_lookup = vm_lookup
        self._queue: queue.Queue[MarketEvent | Reject] = queue.Queue()
        self._thread: threading.Thread | None = None

    @classmethod
    def missing_credentials(cls, env: Mapping[str, str]) -> str | None:
        if env.get("AZURE_EVENTHUB_CONNECTION_STRING") and env.get("AZURE_EVENTHUB_NAME"):
            return None
        return "AZURE_EVENTHUB_CONNECTION_STRING / AZURE_EVENTHUB_NAME are not set (no eviction events)"

    def consumer(self) -> Any:
        if self._consumer is None:
            from azure.eventhub import EventHubConsumerClient

            self._consumer = EventHubConsumerClient.from_connection_string(
                self.env["AZURE_EVENTHUB_CONNECTION_STRING"], consumer_group=self.env.get(
                    "AZURE_EVENTHUB_CONSUMER_GROUP", "$Default"), eventhub_name=self.env["AZURE_EVENTHUB_NAME"])
        return self._consumer

    def records(self, body: Any) -> list[Any]:
        """The records in one Event Hubs message body (Activity Log exports wrap them in {"records": [...]})."""
        if isinstance(body, dict) and isinstance(body.get("records"), list):
            return list(body["records"])
        return [body]

    def convert(self, rec: Any) -> MarketEvent | Reject:
        if not isinstance(rec, dict):
            return Reject("malformed_record", str(rec)[:100])
        op = str(rec.get("operationName") or rec.get("EventType") or "").lower()
        if op not in EVICT_OPS:
            return Reject("not_an_eviction", op[:80])
        t = parse_time(rec.get("time") or rec.get("NotBefore"))
        rid = rec.get("resourceId") or rec.get("resourceUri")
        if t is None or not isinstance(rid, str):
            return Reject("missing_field", "time/resourceId")
        props_raw = rec.get("properties")
        props: dict[str, Any] = props_raw if isinstance(props_raw, dict) else {}
        size, region = props.get("vmSize"), rec.get("location")
        if (not isinstance(size, str) or not isinstance(region, str)) and self.vm_lookup is not None:
            found = self.vm_lookup(rid)
            if found:
                size, region = found
        if not isinstance(size, str) or not isinstance(region, str):
            return Reject("unresolved_vm", f"{rid}: no vmSize/location in the record and no vm_lookup")
        m = azure_sku(size)
        offer = self.offer(region=region.lower(), instance_type=size, gpu_model=m[0] if m else None,
                           gpus=m[1] if m else None, market=Market.SPOT, raw_gpu=size)
        vm = rid.rstrip("/").rsplit("/", 1)[-1][:128]
        return self.interruption(offer, InterruptionKind.PREEMPTED, t, SOURCE_EVICT, instance_id=vm,
                                 id_parts=(rec.get("correlationId") or rec.get("EventId") or "",))

    def on_event_batch(self, partition_context: Any, events: list[Any]) -> None:
        """EventHubConsumerClient.receive_batch callback: convert, enqueue, then checkpoint."""
        for ev in events:
            try:
                body = json.loads(ev.body_as_str(encoding="UTF-8"))
            except (ValueError, TypeError) as exc:
                self._queue.put(Reject("malformed_json", str(exc)[:100]))
                continue
            for rec in self.records(body):
                self._queue.put(self.convert(rec))
        if events:
            partition_context.update_checkpoint(events[-1])

    def _receive(self) -> None:
        try:
            self.consumer().receive_batch(on_event_batch=self.on_event_batch, max_batch_size=100,
                                          max_wait_time=5, starting_position="-1")
        except Exception as exc:
            log.warning("%s: receiver stopped: %s", self.name, exc)

    def fetch(self) -> Iterable[MarketEvent | Reject]:
        if self._thread is not None and not self._thread.is_alive() and self._queue.empty():
            self._thread = None  # restarted on the next poll (the breaker spaces the attempts)
            raise SourceError("azure-evictions: the Event Hubs receiver stopped")
        if self._thread is None:
            self._thread = threading.Thread(target=self._receive, daemon=True, name="azure-eventhub")
            self._thread.start()
        while True:
            try:
                yield self._queue.get_nowait()
            except queue.Empty:
                return

    def close(self) -> None:
        super().close()
        if self._consumer is not None:
            self._consumer.close()
