"""Vast.ai: the public offer search (GET /api/v0/bundles/?q=..., no key needed; VAST_API_KEY optional).

Offers are individual hosts: {"id", "gpu_name", "num_gpus", "gpu_ram" (MiB), "dph_total" (on-demand USD/h
for the whole offer), "min_bid" (interruptible floor, USD/h), "geolocation" ("City, CC" or "CC"), ...}.
We aggregate per (canonical GPU, country): the minimum per-GPU on-demand price (`dph_total/num_gpus`) and
the minimum per-GPU interruptible bid (`min_bid/num_gpus`), emitted as 1-GPU offers in region = the
lower-case ISO country code, plus capacity = the number of rentable offers there.
Paging: keyset on offer id (`id > last`, ordered by id, `limit` per page) until a short page.
Rate limit: not published; we send at most 1 request/s and poll every 30 s (lag <= 60 s).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from connectors.base import MarketEvent, Reject, Source, SourceError, to_price
from connectors.gpu_names import vast_gpu
from schemas.offers import Market

# ISO 3166-1 alpha-2 codes (the regions Vast.ai hosts can report)
COUNTRIES = frozenset(
    ["ad", "ae", "af", "ag", "al", "am", "ao", "ar", "at", "au", "az", "ba", "bb", "bd", "be", "bf", "bg", "bh",
     "bi", "bj", "bn", "bo", "br", "bs", "bt", "bw", "by", "bz", "ca", "cd", "cf", "cg", "ch", "ci", "cl", "cm",
     "cn", "co", "cr", "cu", "cv", "cy", "cz", "de", "dj", "dk", "dm", "do", "dz", "ec", "ee", "eg", "er", "es",
     "et", "fi", "fj", "fm", "fr", "ga", "gb", "gd", "ge", "gh", "gm", "gn", "gq", "gr", "gt", "gw", "gy", "hk",
     "hn", "hr", "ht", "hu", "id", "ie", "il", "in", "iq", "ir", "is", "it", "jm", "jo", "jp", "ke", "kg", "kh",
     "ki", "km", "kn", "kp", "kr", "kw", "kz", "la", "lb", "lc", "li", "lk", "lr", "ls", "lt", "lu", "lv", "ly",
     "ma", "mc", "md", "me", "mg", "mh", "mk", "ml", "mm", "mn", "mo", "mr", "mt", "mu", "mv", "mw", "mx", "my",
     "mz", "na", "ne", "ng", "ni", "nl", "no", "np", "nr", "nz", "om", "pa", "pe", "pg", "ph", "pk", "pl", "pr",
     "ps", "pt", "pw", "py", "qa", "ro", "rs", "ru", "rw", "sa", "sb", "sc", "sd", "se", "sg", "si", "sk", "sl",
     "sm", "sn", "so", "sr", "ss", "st", "sv", "sy", "sz", "td", "tg", "th", "tj", "tl", "tm", "tn", "to", "tr",
     "tt", "tv", "tw", "tz", "ua", "ug", "us", "uy", "uz", "va", "vc", "ve", "vn", "vu", "ws", "ye", "za", "zm",
     "zw"])
SOURCE_OD = "vastai:bundles min dph_total/num_gpus per GPU+country (quote time = observation time)"
SOURCE_BID = "vastai:bundles min min_bid/num_gpus per GPU+country, interruptible (quote time = observation)"
SOURCE_CAP = "vastai:bundles count of rentable offers per GPU+country"


def country(geolocation: Any) -> str | None:
    if not isinstance(geolocation, str) or not geolocation.strip():
        return None
    cc = geolocation.rsplit(",", 1)[-1].strip().lower()
    return cc if len(cc) == 2 else None


class VastSource(Source):
    name = "vastai"
    provider = "vastai"
    poll_interval_s = 30.0
    rate_per_s = 1.0
    known_regions = COUNTRIES
    page_size = 1000
    max_pages = 50

    def __init__(self, *, client: httpx.Client | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.url = self.env.get("VAST_API_URL", "https://console.vast.ai/api/v0/bundles/")
        self.client = client or httpx.Client(timeout=30.0)
        self._present: set[tuple[str, str]] = set()

    @classmethod
    def missing_credentials(cls, env: Mapping[str, str]) -> str | None:
        return None  # the offer search is public

    def _pages(self) -> Iterable[dict[str, Any]]:
        last_id = 0
        headers = {"Authorization": f"Bearer {self.env['VAST_API_KEY']}"} if self.env.get("VAST_API_KEY") else {}
        for _ in range(self.max_pages):
            q = {"rentable": {"eq": True}, "rented": {"eq": False}, "id": {"gt": last_id},
                 "order": [["id", "asc"]], "limit": self.page_size, "type": "bid"}
            body = self.http_json(self.client, "GET", self.url, params={"q": json.dumps(q)}, headers=headers)
            offers = body.get("offers") if isinstance(body, dict) else None
            if not isinstance(offers, list):
                self.reject("malformed_response", "no 'offers' list")
                raise SourceError("vastai: response has no 'offers' list")
            ids = [o["id"] for o in offers if isinstance(o, dict) and isinstance(o.get("id"), int)]
            yield from (o for o in offers if isinstance(o, dict))
            if len(offers) < self.page_size or not ids:
                return
            last_id = max(ids)

    def fetch(self) -> Iterable[MarketEvent | Reject]:
        best: dict[tuple[str, str], dict[str, float]] = {}
        count: dict[tuple[str, str], int] = {}
        for o in self._pages():
            name, n = o.get("gpu_name"), o.get("num_gpus")
            if not isinstance(name, str) or not isinstance(n, int) or n < 1:
                yield Reject("missing_field", f"offer {o.get('id')}: gpu_name/num_gpus")
                continue
            gpu = vast_gpu(name, o.get("gpu_ram") if isinstance(o.get("gpu_ram"), int | float) else None)
            if gpu is None:
                yield Reject("unknown_gpu", f"{name!r} ({o.get('gpu_ram')} MiB)")
                continue
            cc = country(o.get("geolocation"))
            if cc is None or cc not in COUNTRIES:
                yield Reject("unknown_region", repr(o.get("geolocation")))
                continue
            key = (gpu, cc)
            agg = best.setdefault(key, {})
            for field in ("dph_total", "min_bid"):
                p = to_price(o.get(field))
                if isinstance(p, Reject):
                    yield Reject(p.reason, f"offer {o.get('id')} {field}: {p.detail}")
                    continue
                per_gpu = p / n
                agg[field] = min(agg.get(field, per_gpu), per_gpu)
            count[key] = count.get(key, 0) + 1
        for (gpu, cc) in sorted(best):
            agg = best[(gpu, cc)]
            for field, market, src in (("dph_total", Market.ON_DEMAND, SOURCE_OD),
                                       ("min_bid", Market.SPOT, SOURCE_BID)):
                if field in agg:
                    offer = self.offer(region=cc, instance_type=f"{gpu}-1x", gpu_model=gpu, gpus=1, market=market)
                    yield self.price(offer, round(agg[field], 6), None, src)
            offer = self.offer(region=cc, instance_type=f"{gpu}-1x", gpu_model=gpu, gpus=1, market=Market.ON_DEMAND)
            yield self.capacity(offer, True, None, SOURCE_CAP, available_instances=count[(gpu, cc)])
        for gpu, cc in sorted(self._present - set(best)):  # listed before, no rentable offer now
            offer = self.offer(region=cc, instance_type=f"{gpu}-1x", gpu_model=gpu, gpus=1, market=Market.ON_DEMAND)
            yield self.capacity(offer, False, None, SOURCE_CAP, available_instances=0)
        self._present = set(best)
