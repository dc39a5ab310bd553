"""A worker forwards any move on an offer its plans hold, below the materiality threshold too: the held set
reaches the market stage through the plans table's changelog (streams.core.held)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloudarb.app import workload_events
from cloudarb.pipeline import publish_events
from schemas.topics import DECISIONS
from tests.conftest import unique
from tests.integration.helpers import read_all, start_worker, stop, wait_until
from tests.streams.helpers import offer, price, workload

pytestmark = pytest.mark.integration


def test_a_worker_forwards_a_sub_threshold_move_on_a_held_offer_only(kafka_bootstrap: str, tmp_path: Path) -> None:
    app_id = unique("held")
    tag = app_id.split("-")[-1]
    cheap, other = offer(region=f"held-{tag}-a"), offer(region=f"held-{tag}-b")
    log = tmp_path / "worker.log"
    worker = start_worker(kafka_bootstrap, app_id, log)

    def changes() -> list[tuple[str, str]]:
        return [(c["offer_key"], c["reason"]) for m in read_all(kafka_bootstrap, [f"{app_id}-market-changes"])
                for c in json.loads(m.value()).get("changes", [])]

    try:
        publish_events(kafka_bootstrap, [price(cheap, 0.01), price(other, 0.02)])   # the cheapest L4s there are
        wid = f"w-{tag}"
        publish_events(kafka_bootstrap, workload_events([workload(wid)]))
        wait_until(lambda: any(wid in json.loads(m.value())["workload_ids"] and
                               json.loads(m.value())["assignments"][0]["offer"]["region"] == cheap.region
                               for m in read_all(kafka_bootstrap, [DECISIONS.name])), 120, "the placement", log=log)
        # 0.5 % moves, below the 2 % threshold: material only on the held offer
        publish_events(kafka_bootstrap, [price(cheap, 0.01005, minutes=10), price(other, 0.0201, minutes=10)])
        wait_until(lambda: (cheap.key, "price rose 0.5% on a held offer") in changes(), 60,
                   "the held offer's move forwarded", log=log)
        assert [c for c in changes() if c[0] == other.key] == [(other.key, "new offer")]
    finally:
        stop(worker)
