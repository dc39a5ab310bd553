"""`cloudarb connectors run [--provider NAME ...] [--once]`: live market connectors -> Kafka.

Credentials come from the environment; a provider without them is skipped with one line. `--once` polls
every source once, publishes, prints events per source and exits (0 when every started source succeeded and
Kafka acknowledged everything, 1 otherwise).

Environment: KAFKA_BOOTSTRAP_SERVERS; AWS: the standard credential chain (AWS_ACCESS_KEY_ID / AWS_PROFILE /
role), CLOUDARB_AWS_REGIONS (default us-east-1,us-east-2,us-west-2), AWS_SPOT_INTERRUPTION_QUEUE_URL
(EventBridge -> SQS warnings); GCP: GCP_API_KEY (Billing Catalog), GCP_PREEMPTION_SUBSCRIPTION plus Google
credentials (Pub/Sub); Azure: none for prices, AZURE_EVENTHUB_CONNECTION_STRING + AZURE_EVENTHUB_NAME
[+ AZURE_EVENTHUB_CONSUMER_GROUP] for evictions; LAMBDA_API_KEY; RUNPOD_API_KEY; Vast.ai: none
(VAST_API_KEY optional). The AWS Spot Advisor, Azure Retail Prices and Vast.ai search are public.
CLOUDARB_METRICS_PORT / CLOUDARB_METRICS_ADDR: serve the per-source counters at /metrics (cloudarb.metrics).
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from typing import Any

from cloudarb.settings import Settings
from cloudarb.signals import sigterm_sets


def cmd_connectors_run(args: argparse.Namespace, s: Settings) -> int:
    from cloudarb.metrics import serving_metrics
    from connectors.publish import KafkaPublisher
    from connectors.registry import PROVIDERS, SOURCES
    from connectors.runner import Runner, RunnerCollector, select_sources
    from embedded.kafka import KafkaSetupError

    unknown = sorted(set(args.provider or []) - set(PROVIDERS))
    if unknown:
        print(f"cloudarb: unknown provider(s) {unknown}; known: {list(PROVIDERS)}")
        return 2
    if not s.kafka_bootstrap_servers:
        raise KafkaSetupError("KAFKA_BOOTSTRAP_SERVERS is not set: start a broker with `cloudarb kafka start`")
    sources = select_sources(SOURCES, dict(os.environ), args.provider)
    if not sources:
        print("no connector has credentials: nothing to run")
        return 1
    pub = KafkaPublisher(s.kafka_bootstrap_servers)
    runner = Runner(sources, pub.publish)
    if args.once:
        reports = runner.run_once(timeout_s=args.timeout_s)
        left = pub.flush(30)
        for r in reports.values():
            rej = sum(r.stats.rejected.values())
            print(f"{r.name:20s} {r.status:9s} published {r.published:6d}  rejected {rej:5d}  retries "
                  f"{r.stats.retries:3d}  {r.detail}")
        print(f"total published {sum(r.published for r in reports.values())}, undelivered {left}, failed {pub.failed}")
        ok = all(r.status == "ok" for r in reports.values()) and not left and not pub.failed
        return 0 if ok else 1
    stop = threading.Event()
    print(f"running {len(sources)} connectors: {', '.join(s.name for s in sources)}; Ctrl-C stops", flush=True)
    try:
        # SIGTERM: the sources finish their poll, then close. CLOUDARB_METRICS_PORT: per-source counters served
        with sigterm_sets(stop), serving_metrics({"connectors": RunnerCollector(runner)}):
            runner.run_forever(stop)
    except KeyboardInterrupt:
        stop.set()
    pub.flush(30)
    logging.getLogger(__name__).info("connectors stopped")
    return 0


def register(sub: Any) -> None:
    c = sub.add_parser("connectors", help="live market connectors (AWS, GCP, Azure, Lambda, RunPod, Vast.ai)")
    csub = c.add_subparsers(dest="connectors_action", required=True)
    r = csub.add_parser("run", help="poll providers and publish market events to Kafka")
    r.add_argument("--provider", action="append", help="aws, gcp, azure, lambda, runpod, vastai (repeatable)")
    r.add_argument("--once", action="store_true", help="poll every source once, print counts, exit")
    r.add_argument("--timeout-s", type=float, default=120.0, help="--once: give up on a source after this long")
    r.set_defaults(func=cmd_connectors_run)
