"""GPU quotas from a file to Kafka and back: `cloudarb quotas set --file F` and `cloudarb quotas show`.

A quota file is YAML or JSON: `{"quotas": [{provider, region, gpu, gpus}, ...]}` (a bare list too), validated
as the API validates `POST /v1/quotas` (`outputs.api_quotas.QuotasIn`: known provider, a canonical GPU model
or family, one quota per (provider, region, gpu)). The set is published as one `QuotasSet` on
`cloudarb.quotas.v1` (compacted, key "quotas"): it replaces the previous set; the worker applies the latest
(`set_at`) to every plan. `show` reads the topic back, not ClickHouse (no sink needed; on embedded chdb the
database belongs to `cloudarb serve`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from schemas.events import QuotasSet, decode_event
from schemas.kafka import client_config
from schemas.placement import GpuQuota
from schemas.topics import QUOTAS

QUOTAS_KEY = b"quotas"   # the topic's one key: compaction keeps the latest set


class QuotaFileError(ValueError):
    """A quota file that cannot be read or does not validate; the message names the field."""


def load_quotas(path: Path) -> list[GpuQuota]:
    from outputs.api_quotas import QuotasIn

    try:
        doc: Any = yaml.safe_load(path.read_text())   # JSON is YAML too
    except (OSError, yaml.YAMLError) as exc:
        raise QuotaFileError(f"{path}: {exc}") from None
    if isinstance(doc, list):
        doc = {"quotas": doc}
    if not isinstance(doc, dict):
        raise QuotaFileError(f"{path}: expected a mapping with a 'quotas' list")
    try:
        parsed = QuotasIn.model_validate(doc)
    except ValidationError as exc:
        errs = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'quotas'}: {e['msg']}"
                         for e in exc.errors(include_url=False)[:5])
        raise QuotaFileError(f"{path}: {errs}") from None
    return [GpuQuota.model_validate(q.model_dump()) for q in parsed.quotas]


def quotas_event(quotas: list[GpuQuota]) -> QuotasSet:
    """The QuotasSet for `quotas`, set now (id deterministic on the set and the time, as the API's)."""
    from outputs.api_quotas import QuotasIn

    return QuotasIn.model_validate({"quotas": [q.model_dump() for q in quotas]}).to_event()


def publish_quotas(bootstrap: str, event: QuotasSet, timeout_s: float = 15.0) -> None:
    """Publish the set (key "quotas") and wait for the broker's ack."""
    from connectors.publish import KafkaPublisher

    pub = KafkaPublisher(bootstrap)
    pub.publish_raw(QUOTAS.name, QUOTAS_KEY, event.model_dump_json().encode())
    if pub.flush(timeout_s) or pub.failed:
        raise RuntimeError(f"Kafka did not acknowledge the quota set on {QUOTAS.name}")


def read_quotas(bootstrap: str, timeout_s: float = 10.0) -> QuotasSet | None:
    """The set in force: the valid QuotasSet with the latest `set_at` on the topic (None if there is none)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({**client_config(bootstrap), "group.id": "cloudarb-quotas-show", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "log_level": 3})
    try:
        low, high = c.get_watermark_offsets(TopicPartition(QUOTAS.name, 0), timeout=timeout_s)
        if high <= low:
            return None
        c.assign([TopicPartition(QUOTAS.name, 0, low)])
        best: QuotasSet | None = None
        deadline = time.monotonic() + timeout_s
        pos = low
        while pos < high and time.monotonic() < deadline:
            for m in c.consume(1000, timeout=0.5):
                off, raw = m.offset(), m.value()
                if m.error() is not None or off is None or raw is None:
                    continue
                pos = max(pos, off + 1)
                try:
                    e = decode_event(raw, (QuotasSet,))
                except ValueError:
                    continue   # the worker dead-letters it
                if isinstance(e, QuotasSet) and (best is None or e.set_at >= best.set_at):
                    best = e
        return best
    finally:
        c.close()


def quotas_yaml(event: QuotasSet | None) -> str:
    """A quota file (`set --file` reads it back), headed by when and as which event it was set."""
    if event is None:
        return "# no quotas set: placements are limited by offers' capacity only\nquotas: []\n"
    head = f"# set at {event.set_at.isoformat()} (event {event.event_id})\n"
    if not event.quotas:
        return head + "quotas: []\n"
    return head + "quotas:\n" + "".join(f"  - {json.dumps(q.model_dump(), separators=(', ', ': '))}\n"
                                        for q in event.quotas)
