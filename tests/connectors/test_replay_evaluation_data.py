"""Replay of the three evaluation-only datasets (aws-spot-daily, aws-spot-events-euwest1, gpu-price-tracker-2026).

Their data may not be copied into the repository: unit tests use a few synthetic rows written here; the
tests on the real folders read ../shared/data in place and skip when it is missing.
"""

from __future__ import annotations

import gzip
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.replay import DATASETS, aws_spot_daily, aws_spot_events, event_time, gpu_tracker_2026, replay_events
from schemas.events import CapacityObserved, PriceObserved
from schemas.offers import Market

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
EVAL = ("aws-spot-daily", "aws-spot-events-euwest1", "gpu-price-tracker-2026")


def write_csv(folder: Path, name: str, header: str, rows: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / name, "wt", newline="") as fh:
        fh.write("\n".join([header, *rows]) + "\n")
    return folder


# --- aws-spot-daily -----------------------------------------------------------------------------

DAILY_HEADER = "provider,region,instance_type,date,open,high,low,close,avg"


def daily(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "aws-spot-daily", "aws-spot-daily.csv.gz", DAILY_HEADER, [
        # out of time order on purpose (the file is sorted by series)
        "aws,us-east-1,p5.48xlarge,2024-01-02,61.5,63,59,60,61.2",   # a range: the open, known at 00:00
        "aws,us-east-1,p5.48xlarge,2024-01-01,70,70,70,70,70",
        "aws,us-east-1,p5.48xlarge,2024-01-03,61.5,61.5,61.5,61.5,61.5",  # unchanged open: no event
        "aws,us-east-1,inf2.xlarge,2024-01-01,0.2,0.2,0.2,0.2,0.2",  # not a catalogue GPU
        "aws,us-east-1,inf2.xlarge,2024-01-02,0.3,0.3,0.3,0.3,0.3",
        "aws,us-west-2,g5.12xlarge,2024-01-02,0,0,0,0,0",  # invalid price
        "gcp,us-central1,g2-standard-24,2024-01-02,0.5,0.5,0.5,0.5,0.5",
        "azure,eu-west,NC4as_T4_v3,2024-01-01,0.1,0.1,0.1,0.1,0.1",
        "koyeb,fra,gpu-nvidia-h100,2024-01-01,9,9,9,9,9",  # unknown provider (serverless: not a GPU cloud)
    ])


def test_daily_uses_the_open_at_day_start_change_only_and_maps_instances(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    rejected: Counter[tuple[str, str]] = Counter()
    with caplog.at_level(logging.WARNING):
        ev = list(aws_spot_daily.events(daily(tmp_path), rejected))
    assert all(isinstance(e, PriceObserved) for e in ev)
    got = [(e.offer.key, e.usd_per_hour, e.quoted_at) for e in ev if isinstance(e, PriceObserved)]
    d1, d2 = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)
    assert sorted(got) == sorted([
        ("aws|us-east-1||p5.48xlarge|H100-80GB|8|spot", 70.0, d1),
        ("aws|us-east-1||p5.48xlarge|H100-80GB|8|spot", 61.5, d2),
        ("gcp|us-central1||g2-standard-24|L4|2|spot", 0.5, d2),
        ("azure|eu-west||Standard_NC4as_T4_v3|T4|1|spot", 0.1, d1),
    ])
    assert [event_time(e) for e in ev] == sorted(event_time(e) for e in ev)
    assert rejected[("unknown_gpu", "'inf2.xlarge'")] == 2
    assert rejected[("unknown_provider", "koyeb")] == 1
    assert sum(n for (r, _), n in rejected.items() if r == "non_positive_price") == 1
    assert sum("unknown_gpu" in m and "inf2.xlarge" in m for m in caplog.messages) == 1  # logged once
    assert all(e.observed_at == e.quoted_at and e.source.startswith("replay:aws-spot-daily") for e in ev
               if isinstance(e, PriceObserved))


def test_daily_ids_are_deterministic(tmp_path: Path) -> None:
    folder = daily(tmp_path)
    a = [e.event_id for e in aws_spot_daily.events(folder)]
    b = [e.event_id for e in aws_spot_daily.events(folder)]
    assert a == b and len(set(a)) == len(a)


# --- aws-spot-events-euwest1 --------------------------------------------------------------------

EVENTS_HEADER = "timestamp_utc,availability_zone,instance_type,product_description,spot_price_usd"


def spot_records(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "aws-spot-events-euwest1", "aws-spot-events-euwest1.csv.gz", EVENTS_HEADER, [
        "2021-07-30T07:07:00Z,eu-west-1a,g4dn.xlarge,Linux/UNIX,0.1761",
        "2021-07-30T07:07:00Z,eu-west-1a,g4dn.xlarge,Windows,0.3600",
        "2021-07-30T07:07:00Z,eu-west-1a,g4dn.xlarge,SUSE Linux,0.3011",
        "2021-07-30T07:07:00Z,eu-west-1b,g4dn.xlarge,Linux/UNIX,0.1761",
        "2021-07-30T09:00:00Z,eu-west-1a,g4dn.xlarge,Linux/UNIX,0.1761",  # unchanged
        "2021-07-30T08:00:00Z,eu-west-1b,g4dn.xlarge,Linux/UNIX,0.1800",
        "2021-07-30T08:00:00Z,eu-west-1b,inf1.xlarge,Linux/UNIX,0.1000",  # not a catalogue GPU
        "2021-07-30T10:00:00Z,eu-west-1c,p3.8xlarge,Linux/UNIX,-1",  # invalid price
    ])


def test_spot_records_linux_only_per_az_change_only(tmp_path: Path) -> None:
    rejected: Counter[tuple[str, str]] = Counter()
    ev = [e for e in aws_spot_events.events(spot_records(tmp_path), rejected) if isinstance(e, PriceObserved)]
    assert sorted((e.offer.zone, e.offer.region, e.usd_per_hour, e.quoted_at.hour) for e in ev) == [
        ("eu-west-1a", "eu-west-1", 0.1761, 7), ("eu-west-1b", "eu-west-1", 0.1761, 7),
        ("eu-west-1b", "eu-west-1", 0.18, 8)]
    assert {e.offer.key for e in ev} == {"aws|eu-west-1|eu-west-1a|g4dn.xlarge|T4|1|spot",
                                        "aws|eu-west-1|eu-west-1b|g4dn.xlarge|T4|1|spot"}
    assert len(ev) == 3 and [event_time(e) for e in ev] == sorted(event_time(e) for e in ev)
    assert rejected[("not_linux_unix", "Windows")] == 1 and rejected[("not_linux_unix", "SUSE Linux")] == 1
    assert rejected[("unknown_gpu", "'inf1.xlarge'")] == 1
    assert sum(n for (r, _), n in rejected.items() if r == "non_positive_price") == 1
    again = [e.event_id for e in aws_spot_events.events(spot_records(tmp_path))]
    assert again == [e.event_id for e in ev]


# --- gpu-price-tracker-2026 ---------------------------------------------------------------------

TRACKER_HEADER = ("date,provider,gpu_model,gpu_count,region,rental_type,price_min_usd,price_median_usd,"
                  "price_max_usd,n_offers,source_url,fetched_at")


def tracker_row(date: str, provider: str, gpu: str, count: int, region: str, rental: str, median: float,
                n: int) -> str:
    return (f"{date},{provider},{gpu},{count},{region},{rental},{median / 2},{median},{median * 2},{n},"
            f"https://example.invalid,{date}T21:00:00+00:00")


def tracker(tmp_path: Path) -> Path:
    r = tracker_row
    return write_csv(tmp_path / "gpu-price-tracker-2026", "gpu-price-tracker-2026.csv.gz", TRACKER_HEADER, [
        r("2026-02-11", "vast.ai", "H100_SXM", 8, "US", "interruptible", 10.0, 3),
        r("2026-02-11", "runpod", "A100_PCIE_80GB", 1, "secure", "on_demand", 1.5, 2),
        r("2026-02-11", "runpod", "MI250X", 1, "secure", "on_demand", 0.9, 2),  # not in the catalogue
        r("2026-02-11", "koyeb", "H100_SXM", 1, "global", "on_demand", 2.5, 1),  # unknown provider (serverless)
        r("2026-02-11", "koyeb", "L40S", 1, "global", "on_demand", 1.0, 1),
        r("2026-02-12", "vast.ai", "H100_SXM", 8, "US", "interruptible", 10.0, 5),  # same median: no price
        r("2026-02-12", "runpod", "A100_PCIE_80GB", 1, "secure", "on_demand", 1.4, 0),  # no offers
        r("2026-02-13", "runpod", "A100_PCIE_80GB", 1, "secure", "on_demand", 1.4, 1),  # back
        # 2026-02-13: the vast.ai series is missing from the day -> capacity signal
        r("2026-02-14", "vast.ai", "H100_SXM", 8, "US", "spot", 11.0, 2),  # back, new price (other spelling)
        # 2026-02-14: the runpod series is missing -> unavailable again
    ])


def test_tracker_2026_median_change_only_capacity_and_markets(tmp_path: Path) -> None:
    rejected: Counter[tuple[str, str]] = Counter()
    ev = list(gpu_tracker_2026.events(tracker(tmp_path), rejected))
    vast = "vastai|us||H100_SXM-8x|H100-80GB|8|spot"
    rp = "runpod|secure||A100_PCIE_80GB-1x|A100-PCIE-80GB|1|on_demand"

    def seq(key: str) -> list[tuple[int, str]]:
        return sorted((e.quoted_at.day, f"price {e.usd_per_hour}" if isinstance(e, PriceObserved) else
                       f"cap {e.available} {e.available_instances}") for e in ev if e.offer.key == key)

    assert seq(vast) == [(11, "cap True 3"), (11, "price 10.0"), (13, "cap False 0"), (14, "cap True 2"),
                         (14, "price 11.0")]
    assert seq(rp) == [(11, "cap True 2"), (11, "price 1.5"), (12, "cap False 0"), (13, "cap True 1"),
                       (13, "price 1.4"), (14, "cap False 0")]
    assert {e.offer.key for e in ev} == {vast, rp}
    assert all(e.offer.market is Market.SPOT for e in ev if e.offer.provider == "vastai")
    assert rejected[("unknown_provider", "koyeb")] == 2
    assert rejected[("unknown_gpu", "'MI250X'")] == 1
    assert [event_time(e) for e in ev] == sorted(event_time(e) for e in ev)
    assert all(e.quoted_at.hour == 21 for e in ev)  # fetched_at, not the day's 00:00
    assert [e.event_id for e in gpu_tracker_2026.events(tracker(tmp_path))] == [e.event_id for e in ev]


def test_evaluation_datasets_are_registered() -> None:
    assert set(EVAL) <= set(DATASETS)


# --- the real folders (evaluation use only: read in place) --------------------------------------

REAL: dict[str, tuple[Callable[..., Iterator[object]], int, int]] = {
    # name: (module events, minimum events, minimum distinct offers) -- loose floors, not tuned numbers
    "aws-spot-daily": (aws_spot_daily.events, 20_000, 100),
    "aws-spot-events-euwest1": (aws_spot_events.events, 2_000, 30),
    "gpu-price-tracker-2026": (gpu_tracker_2026.events, 2_000, 200),
}


@pytest.mark.parametrize("name", EVAL)
def test_real_folder_counts_order_and_validation(name: str) -> None:
    if not (SHARED / name).is_dir():
        pytest.skip(f"{SHARED / name} is not present (evaluation-only data, never copied into the repo)")
    ev = list(replay_events(SHARED, [name]))
    _, min_events, min_offers = REAL[name]
    assert len(ev) >= min_events
    assert len({e.offer.key for e in ev}) >= min_offers
    times = [event_time(e) for e in ev]
    assert times == sorted(times)
    assert len({e.event_id for e in ev}) == len(ev)
    for e in ev:
        assert type(e).model_validate_json(e.model_dump_json()) == e
        assert e.source.startswith(f"replay:{name} ")
    assert [e.event_id for e in replay_events(SHARED, [name])][:500] == [e.event_id for e in ev][:500]
    if name == "aws-spot-events-euwest1":
        assert all(isinstance(e, PriceObserved) and e.offer.zone.startswith("eu-west-1") for e in ev)
    if name == "gpu-price-tracker-2026":
        caps = [e for e in ev if isinstance(e, CapacityObserved)]
        assert caps and any(not e.available for e in caps)
        assert any(e.offer.market is Market.SPOT for e in ev)
