"""Daily GPU rental prices across ~40 providers, 2026-02-11 .. 2026-05-31 (`gpu-price-tracker-2026/`,
evaluation use only: read in place, never copied into the repo).

CSV columns: date, provider, gpu_model, gpu_count, region, rental_type, price_min_usd, price_median_usd,
price_max_usd, n_offers, source_url, fetched_at (prices USD/h per instance of gpu_count GPUs).
A series is (provider, gpu_model, gpu_count, region, rental_type); its offer is
provider / region (lower-cased; 'global' where the source has none) / instance type '<gpu_model>-<count>x'
(the source's model name, so two source models mapped onto one catalogue GPU stay two offers) / market
(on_demand -> on-demand; interruptible, also spelled 'spot' in the file -> spot).

Emits, quoted at the row's fetched_at (the sample's real time, not the day's 00:00, to avoid look-ahead):
- a `PriceObserved` at the series' median price when it first appears or changes. Why the median: `min` is
  one cheapest listing (on vast.ai often a single host that is gone the next hour, or a broken listing) and
  `max` is the tail; the median is the price a buyer can typically get among n_offers listings, and for a
  single-listing series min = median = max anyway.
- a `CapacityObserved` as replay/gpu_tracker.py does for its providers: available=True (available_instances
  = n_offers) when a series appears (first sample, or back after an absence or n_offers = 0), and
  available=False (available_instances = 0) when its n_offers goes to 0 or it is missing from a day's
  sample (the tracker aggregates live listings: missing = no listing). The absence event is quoted at the
  day's last fetched_at (when the day's sample is complete). No capacity event while the count merely moves.

Edge rejection (counted per row, logged once per (reason, detail)): providers outside
schemas.offers.KNOWN_PROVIDERS after the spelling aliases below (`unknown_provider`), GPU models not in the
catalogue (`unknown_gpu`, via connectors.gpu_names.tracker2026_gpu), unknown rental types, prices <= 0.
Event ids: deterministic from (edge name, offer key, quoted_at, value).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from connectors.base import Reject
from connectors.gpu_names import tracker2026_gpu
from connectors.replay.aws_spot_daily import CountingEdge, Rejected, csv_rows, day_start
from schemas.events import CapacityObserved, PriceObserved
from schemas.offers import KNOWN_PROVIDERS, Market, OfferKey

log = logging.getLogger(__name__)
NAME = "gpu-price-tracker-2026"
SOURCE_PRICE = "replay:gpu-price-tracker-2026 price_median_usd (USD/instance-h for gpu_count GPUs, daily sample)"
SOURCE_CAP = "replay:gpu-price-tracker-2026 series present/absent (available_instances = n_offers)"

# Same provider, other spelling in this file (only exact respellings; anything else is rejected).
PROVIDER_ALIASES = {"vast.ai": "vastai", "massed compute": "massedcompute", "crusoe": "crusoecloud"}
MARKETS = {"on_demand": Market.ON_DEMAND, "interruptible": Market.SPOT, "spot": Market.SPOT}

Series = tuple[str, str, str, str, str]


@dataclass
class _State:
    offer: OfferKey
    present: bool = False
    price: float | None = None


def provider_name(raw: str) -> str:
    p = raw.strip().lower()
    return PROVIDER_ALIASES.get(p, p)


def _fetched(row: dict[str, str]) -> datetime:
    try:
        return datetime.fromisoformat(row["fetched_at"].replace("Z", "+00:00"))
    except ValueError:
        return day_start(row["date"])


def events(folder: Path, rejected: Rejected | None = None) -> Iterator[PriceObserved | CapacityObserved]:
    """Prices and capacity in event-time order (per day, ties by event id). `rejected` (optional) receives
    the reject tally per (reason, detail), e.g. ("unknown_provider", "koyeb") -> rows skipped."""
    counts: Rejected = Counter() if rejected is None else rejected
    gate = CountingEdge(f"replay-{NAME}", "neocloud", counts)
    edges: dict[str, CountingEdge] = {}
    by_day: dict[str, list[dict[str, str]]] = {}
    for row in csv_rows(folder):
        by_day.setdefault(row["date"][:10], []).append(row)
    state: dict[str, _State] = {}  # by offer key (two spellings of one series are one series)
    offers: dict[Series, OfferKey | Reject] = {}
    for day in sorted(by_day):
        rows = sorted(by_day[day], key=lambda r: (r["provider"], r["gpu_model"], r["gpu_count"], r["region"],
                                                  r["rental_type"]))
        day_end = max(_fetched(r) for r in rows)
        out: list[PriceObserved | CapacityObserved] = []
        seen: set[str] = set()
        for row in rows:
            ident: Series = (row["provider"], row["gpu_model"], row["gpu_count"], row["region"], row["rental_type"])
            provider = provider_name(row["provider"])
            if provider not in KNOWN_PROVIDERS:
                gate.reject("unknown_provider", row["provider"])
                continue
            edge = edges.get(provider) or edges.setdefault(provider, CountingEdge(f"replay-{NAME}", provider, counts))
            offer = offers.get(ident)
            if offer is None:
                market = MARKETS.get(row["rental_type"].strip().lower())
                try:
                    n_gpus: int | None = int(row["gpu_count"])
                except ValueError:
                    n_gpus = None
                if market is None:
                    offer = Reject("unknown_rental_type", repr(row["rental_type"]))
                else:
                    offer = edge.offer(region=(row["region"].strip().lower() or "global"),
                                       instance_type=f"{row['gpu_model']}-{row['gpu_count']}x",
                                       gpu_model=tracker2026_gpu(row["gpu_model"]), gpus=n_gpus, market=market,
                                       raw_gpu=row["gpu_model"])
                offers[ident] = offer
            if isinstance(offer, Reject):
                edge.reject(offer.reason, offer.detail)
                continue
            st = state.get(offer.key) or state.setdefault(offer.key, _State(offer))
            t = _fetched(row)
            edge.at = t
            try:
                n = int(float(row["n_offers"] or 0))
            except ValueError:
                n = 0
            if n <= 0:  # no listing: treated as absent (no capacity event now unless it was present)
                continue
            seen.add(offer.key)
            if not st.present:
                cap = edge.capacity(offer, True, t, SOURCE_CAP, available_instances=n)
                if isinstance(cap, Reject):
                    edge.reject(cap.reason, cap.detail)
                else:
                    out.append(cap)
                    st.present = True
            try:
                price = float(row["price_median_usd"])
            except ValueError:
                price = float("nan")
            if st.price == price:
                continue
            ev = edge.price(offer, row["price_median_usd"], t, SOURCE_PRICE)
            if isinstance(ev, Reject):
                edge.reject(ev.reason, ev.detail)
                continue
            st.price = price
            out.append(ev)
        for k in sorted(state):
            st = state[k]
            if st.present and k not in seen:
                edge = edges[st.offer.provider]
                edge.at = day_end
                cap = edge.capacity(st.offer, False, day_end, SOURCE_CAP, available_instances=0)
                if isinstance(cap, Reject):
                    edge.reject(cap.reason, cap.detail)
                    continue
                out.append(cap)
                st.present = False
        out.sort(key=lambda e: (e.quoted_at, e.event_id))
        yield from out
