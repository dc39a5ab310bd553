"""Replay of every real dataset: AWS Spot Advisor and spot traces (new), order, determinism, speed factor."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.replay import (
    DATASETS,
    DEFAULT_DATASETS,
    aws_spot_advisor,
    event_time,
    paced,
    replay_events,
    spot_traces,
)
from schemas.events import CapacityObserved, InterruptionKind, InterruptionObserved, PriceObserved

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"
SHARED = ROOT.parent / "shared" / "data"


def write_trace(root: Path, kind: str, folder: str, name: str, data: list[int], gap: int = 60) -> Path:
    d = root / "spot-traces" / kind / "1-node" / folder
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_text(json.dumps({"metadata": {"gap_seconds": gap}, "data": data}))
    return root / "spot-traces"


def test_every_dataset_is_registered() -> None:
    assert set(DATASETS) == {"gcp-pricing-history", "gpu-price-tracker", "aws-spot-advisor", "spot-traces",
                             "aws-spot-daily", "aws-spot-events-euwest1", "gpu-price-tracker-2026"}
    # the evaluation-only ones are replayed only when asked for by name
    assert set(DEFAULT_DATASETS) == {"gcp-pricing-history", "gpu-price-tracker", "aws-spot-advisor", "spot-traces"}


def test_trace_direction_is_explicit_and_t0_is_the_folder_date(tmp_path: Path) -> None:
    root = write_trace(tmp_path, "preemption", "aws-04-22-2023", "us-east-1c_v100_1.json", [0, 0, 1, 1, 0, 1])
    ev = list(spot_traces.events(root))
    caps = [e for e in ev if isinstance(e, CapacityObserved)]
    t0 = datetime(2023, 4, 22, tzinfo=UTC)
    assert [(e.quoted_at - t0, e.available) for e in caps] == [
        (timedelta(0), True), (timedelta(minutes=2), False), (timedelta(minutes=4), True),
        (timedelta(minutes=5), False)]
    pre = [e for e in ev if isinstance(e, InterruptionObserved)]
    assert [e.occurred_at - t0 for e in pre] == [timedelta(minutes=2), timedelta(minutes=5)]
    assert all(e.kind == InterruptionKind.PREEMPTED for e in pre)
    assert caps[0].offer.key == "aws|us-east-1|us-east-1c|p3.2xlarge|V100-16GB|1|spot"
    assert "1=unavailable" in caps[0].source and "t0=2023-04-22" in caps[0].source
    # the other reading (0 = unavailable) flips every availability and moves the preemptions
    flipped = list(spot_traces.events(root, unavailable_value=0))
    fc = [e for e in flipped if isinstance(e, CapacityObserved)]
    assert [e.available for e in fc] == [not e.available for e in caps]
    assert [e.occurred_at - t0 for e in flipped if isinstance(e, InterruptionObserved)] == [timedelta(minutes=4)]


def test_availability_traces_have_no_preemption_events_and_map_8_gpu_offers(tmp_path: Path) -> None:
    root = write_trace(tmp_path, "availability", "aws-10-26-2022", "us-west-2b_v100_8.json", [1, 0, 1])
    write_trace(tmp_path, "availability", "aws-10-26-2022", "us-west-2a_k80_1.json", [0])
    ev = list(spot_traces.events(root))
    assert all(isinstance(e, CapacityObserved) for e in ev)
    keys = {e.offer.key for e in ev}
    assert keys == {"aws|us-west-2|us-west-2b|p3.16xlarge|V100-16GB|8|spot",
                    "aws|us-west-2|us-west-2a|p2.xlarge|K80|1|spot"}
    assert [event_time(e) for e in ev] == sorted(event_time(e) for e in ev)


def test_cpu_only_traces_are_skipped_with_a_logged_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_trace(tmp_path, "preemption", "gcp-04-30-2023", "us-central1-a_c3-88.json", [0, 1, 0])
    write_trace(tmp_path, "preemption", "aws-04-19-2023", "us-east-1b_intel_64.json", [0, 1])
    with caplog.at_level("INFO"):
        assert list(spot_traces.events(root)) == []
    assert "CPU-only" in caplog.text and "c3-highcpu-88" in caplog.text and "r5.16xlarge" in caplog.text


def test_spot_advisor_replay(tmp_path: Path) -> None:
    d = tmp_path / "aws-spot-advisor"
    d.mkdir()
    data = {"spot_advisor": {"us-east-1": {"Linux": {"g5.xlarge": {"s": 60, "r": 1}, "p5.48xlarge": {"s": 40, "r": 4},
                                                     "c5.large": {"s": 50, "r": 0}}},
                             "eu-west-1": {"Linux": {"g5.xlarge": {"s": 55, "r": 0}}}}}
    with gzip.open(d / "spot-advisor-data.2025-06-28.json.gz", "wt") as fh:
        json.dump(data, fh)
    ev = list(aws_spot_advisor.events(d))
    t = datetime(2025, 6, 28, tzinfo=UTC)
    freq = {e.offer.key: e for e in ev if isinstance(e, InterruptionObserved)}
    assert len(freq) == 3 and all(e.occurred_at == t and e.kind == InterruptionKind.FREQUENCY for e in freq.values())
    assert freq["aws|us-east-1||p5.48xlarge|H100-80GB|8|spot"].frequency_band == 4
    prices = [e for e in ev if isinstance(e, PriceObserved)]
    # derived only where a reference on-demand price exists (us-east-1 g5.xlarge; not P5, not eu-west-1)
    assert [(p.offer.key, p.usd_per_hour) for p in prices] == [("aws|us-east-1||g5.xlarge|A10G|1|spot",
                                                                  round(1.006 * 0.4, 4))]
    assert "DERIVED" in prices[0].source


def test_sample_replay_is_ordered_deterministic_and_covers_all_datasets() -> None:
    a = list(replay_events(SAMPLE))
    b = list(replay_events(SAMPLE))
    assert [e.event_id for e in a] == [e.event_id for e in b]
    times = [event_time(e) for e in a]
    assert times == sorted(times)
    assert len({e.event_id for e in a}) == len(a)
    sources = {e.source.split()[0] for e in a}
    assert {"replay:gcp-pricing-history", "replay:gpu-price-tracker", "replay:aws-spot-advisor",
            "replay:spot-traces"} <= sources


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not present")
def test_shared_replay_counts() -> None:
    counts: dict[str, int] = {}
    for e in replay_events(SHARED, ["spot-traces", "aws-spot-advisor"]):
        counts[e.event_type] = counts.get(e.event_type, 0) + 1
    assert counts["CapacityObserved"] > 5000 and counts["InterruptionObserved"] > 500


def test_paced_replay_speed_factor() -> None:
    evs = [e for e, _ in zip(replay_events(SAMPLE, ["spot-traces"]), range(4), strict=False)]
    now = [0.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    out = list(paced(evs, 60.0, clock=lambda: now[0], sleep=sleep))
    assert out == evs
    span = (event_time(evs[-1]) - event_time(evs[0])).total_seconds()
    assert sum(sleeps) == pytest.approx(span / 60.0)
    assert list(paced(evs, 0, sleep=lambda s: pytest.fail("no sleeping"))) == evs
    capped: list[float] = []
    list(paced(evs, 1.0, clock=lambda: 0.0, sleep=capped.append, max_gap_s=0.5))
    assert all(s <= 0.5 for s in capped)


def test_unknown_dataset_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown datasets"):
        list(replay_events(SAMPLE, ["nope"]))
